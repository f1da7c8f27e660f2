"""One call of the gRPC health-checking protocol, for ``grpc`` probes.

The kubelet's ``grpc`` probe calls ``grpc.health.v1.Health/Check`` over plaintext HTTP/2
("credentials are currently not supported", ``pkg/probe/grpc/grpc.go``) and passes when the
answer says ``SERVING``. That call is small enough to make without a gRPC stack: ``h2``
keeps the HTTP/2 connection state, and the two messages are one protobuf field each
(``HealthCheckRequest{string service = 1}``, ``HealthCheckResponse{ServingStatus status =
1}``), written and read here. Over a stream the caller opened and closes.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import trio

__all__ = ["SERVING", "UNIMPLEMENTED", "RpcError", "check"]

PATH = "/grpc.health.v1.Health/Check"
SERVING = "SERVING"
STATUSES = {0: "UNKNOWN", 1: SERVING, 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
"""``HealthCheckResponse.ServingStatus`` by number."""
CODES = (
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
)
"""gRPC status codes by number, spelled as grpc-go prints them."""
UNIMPLEMENTED = CODES.index("Unimplemented")
UNKNOWN = CODES.index("Unknown")
_READ_SIZE = 16384


class RpcError(Exception):
    """The server answered the call with a gRPC error status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:  # grpc-go's status error, as the kubelet's messages quote it
        name = CODES[self.code] if 0 <= self.code < len(CODES) else f"Code({self.code})"
        return f"rpc error: code = {name} desc = {self.message}"


async def check(stream: trio.abc.Stream, *, authority: str, service: str, user_agent: str) -> str:
    """Call ``Health/Check`` for ``service`` ("" is the whole server) and return the serving
    status's name (``SERVING``, ``NOT_SERVING``, …).

    Raises ``RpcError`` for a gRPC error status, ``trio.BrokenResourceError`` when the
    connection ends before the answer, ``h2.exceptions.ProtocolError`` for a broken peer.
    """
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    connection = h2.connection.H2Connection(config)
    connection.initiate_connection()
    stream_id = connection.get_next_available_stream_id()
    connection.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", PATH),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", user_agent),
        ],
    )
    connection.send_data(stream_id, _framed(_request(service)), end_stream=True)
    await stream.send_all(connection.data_to_send())
    answer = _Answer(connection, stream_id)
    while True:
        data = await stream.receive_some(_READ_SIZE)
        if not data:
            raise trio.BrokenResourceError("the server closed the connection")
        for event in connection.receive_data(data):
            if answer.take(event):
                return _status(answer.headers, bytes(answer.body))
        pending = connection.data_to_send()
        if pending:
            await stream.send_all(pending)


class _Answer:
    """The call's response as h2 events arrive: headers and trailers, then the body."""

    def __init__(self, connection: h2.connection.H2Connection, stream_id: int) -> None:
        self._connection = connection
        self._stream_id = stream_id
        self.headers: dict[str, str] = {}
        self.body = bytearray()

    def take(self, event: h2.events.Event) -> bool:
        """Take one event; True once the call's stream has ended."""
        if isinstance(event, h2.events.ConnectionTerminated):
            raise trio.BrokenResourceError(f"the server ended the connection: {event}")
        if getattr(event, "stream_id", None) != self._stream_id:
            return False
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            self.headers.update((str(k), str(v)) for k, v in event.headers or ())
        elif isinstance(event, h2.events.DataReceived):
            self.body += event.data or b""
            self._connection.acknowledge_received_data(
                event.flow_controlled_length or 0, self._stream_id
            )
        elif isinstance(event, h2.events.StreamReset):
            raise RpcError(UNKNOWN, f"stream reset with error code {event.error_code}")
        return isinstance(event, h2.events.StreamEnded)


def _status(headers: dict[str, str], body: bytes) -> str:
    if headers.get(":status") != "200":
        raise RpcError(
            UNKNOWN, f"unexpected HTTP status code received from server: {headers.get(':status')}"
        )
    code = headers.get("grpc-status")
    if code is None:
        raise RpcError(UNKNOWN, "the server sent no grpc-status")
    if code != "0":
        raise RpcError(int(code) if code.isdigit() else UNKNOWN, headers.get("grpc-message", ""))
    if len(body) < 5 or body[0] != 0:
        raise RpcError(UNKNOWN, "the answer is not one uncompressed gRPC message")
    length = int.from_bytes(body[1:5], "big")
    return STATUSES.get(_status_field(body[5 : 5 + length]), "UNKNOWN")


def _request(service: str) -> bytes:
    """``HealthCheckRequest``: field 1 (``service``), length-delimited; empty when ""."""
    name = service.encode()
    return b"\x0a" + _varint(len(name)) + name if name else b""


def _framed(message: bytes) -> bytes:
    """A gRPC message: not compressed, its length in four bytes, then the message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data):
            raise RpcError(UNKNOWN, "a truncated HealthCheckResponse")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def _status_field(message: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, a varint); 0 (UNKNOWN) when absent. Other
    fields are skipped, as protobuf readers do."""
    status, at = 0, 0
    while at < len(message):
        key, at = _read_varint(message, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _read_varint(message, at)
            if field == 1:
                status = value
        elif wire == 2:
            length, at = _read_varint(message, at)
            at += length
        elif wire == 1:
            at += 8
        elif wire == 5:
            at += 4
        else:
            raise RpcError(UNKNOWN, f"a HealthCheckResponse with wire type {wire}")
    return status
