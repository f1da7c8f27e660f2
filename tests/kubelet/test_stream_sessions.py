"""The exec/attach and port-forward sessions over a real ``SpdyConnection`` (``serve_spdy``),
driven by the SPDY client in ``spdy_client``, against a scripted process and a local TCP
server: statuses byte for byte, stdin and its end, resizes, missing streams, a client that
vanishes, back-pressure, and port-forward's pairing and errors.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from tests.kubelet.spdy_client import SpdyClient
from tests.node.local_streams import local_port
from vk_trio.http_server import Request
from vk_trio.kubelet.streaming import remotecommand, spdy_transport
from vk_trio.kubelet.streaming.handshake import Refusal, StreamOptions, stream_options
from vk_trio.kubelet.streaming.portforward import serve_port_forward
from vk_trio.kubelet.streaming.remotecommand import relay, spdy_channels
from vk_trio.kubelet.streaming.spdy_transport import SpdyTransport, serve_spdy
from vk_trio.node.provider import NotReady, ProcessExit, ProcessOutput, ProviderUnavailable


@dataclass
class ScriptedProcess:
    """A ``ProcessIO`` the test plays: it pushes output and the exit, and reads what came in."""

    written: bytearray = field(default_factory=bytearray)
    input_closed: trio.Event = field(default_factory=trio.Event)
    resizes: list[tuple[int, int]] = field(default_factory=list)
    received: int = 0

    def __post_init__(self) -> None:
        self.push, self._out = trio.open_memory_channel[ProcessOutput | ProcessExit](0)

    async def write(self, data: bytes) -> None:
        self.written += data

    async def close_input(self) -> None:
        self.input_closed.set()

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    async def receive(self) -> ProcessOutput | ProcessExit:
        self.received += 1
        return await self._out.receive()


def _session(
    protocol: str,
    options: StreamOptions,
    process: ScriptedProcess,
    command: tuple[str, ...] | None = ("cmd",),
) -> Callable[[SpdyTransport], Awaitable[None]]:
    async def run(transport: SpdyTransport) -> None:
        channels = await spdy_channels(transport, protocol, options)
        await relay(channels, process, command)

    return run


OUT_ERR = StreamOptions(stdin=False, stdout=True, stderr=True, tty=False)


async def test_a_non_zero_exit_ends_with_the_kubelets_status(nursery: trio.Nursery) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    process = ScriptedProcess()
    command = ("sh", "-c", "echo out; exit 3")
    session = _session("v4.channel.k8s.io", OUT_ERR, process, command)
    nursery.start_soon(serve_spdy, server_end, b"", session)
    client = SpdyClient(client_end)
    error, stdout, stderr = [await client.open(t) for t in ("error", "stdout", "stderr")]
    await process.push.send(ProcessOutput("stdout", b"out\n"))
    await process.push.send(ProcessOutput("stderr", b"err\n"))
    await process.push.send(ProcessExit(3))
    await client.read_until(lambda: error in client.ended)
    assert {error, stdout, stderr} <= client.replied
    assert (bytes(client.data[stdout]), bytes(client.data[stderr])) == (b"out\n", b"err\n")
    assert {stdout, stderr} <= client.ended
    assert bytes(client.data[error]) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b'code: error executing command [sh -c echo out; exit 3], exit code 3","reason":'
        b'"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    await client.read_until(lambda: client.goaway)
    assert client.goaway


async def test_success_stdin_and_resizes_on_a_terminal(nursery: trio.Nursery) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    process = ScriptedProcess()
    tty = StreamOptions(stdin=True, stdout=True, stderr=False, tty=True)
    nursery.start_soon(serve_spdy, server_end, b"", _session("v5.channel.k8s.io", tty, process))
    client = SpdyClient(client_end)
    sids = {t: await client.open(t) for t in ("error", "stdin", "stdout", "resize")}
    await client.send(sids["resize"], b'{"Width":80,"Height":24}{"Width":1')
    await client.send(sids["resize"], b'00,"Height":40}\n')
    await client.send(sids["stdin"], b"typed")
    await client.end(sids["stdin"])
    with trio.fail_after(5):
        await process.input_closed.wait()
    assert bytes(process.written) == b"typed"
    assert process.resizes == [(80, 24), (100, 40)]
    await process.push.send(ProcessExit(0))
    await client.read_until(lambda: sids["error"] in client.ended)
    assert bytes(client.data[sids["error"]]) == b'{"metadata":{},"status":"Success"}'


async def test_protocols_before_v4_write_the_message_as_text_and_nothing_on_success(
    nursery: trio.Nursery,
) -> None:
    for code, expected in ((0, b""), (2, b"command terminated with non-zero exit code: ")):
        text = await _v2_error_stream(nursery, code)
        assert text.startswith(expected) and bool(text) == bool(code)


async def _v2_error_stream(nursery: trio.Nursery, code: int) -> bytes:
    client_end, server_end = trio.testing.memory_stream_pair()
    process = ScriptedProcess()
    options = StreamOptions(stdin=False, stdout=True, stderr=False, tty=False)
    session = _session("v2.channel.k8s.io", options, process)
    nursery.start_soon(serve_spdy, server_end, b"", session)
    client = SpdyClient(client_end)
    error = await client.open("error")
    await client.open("stdout")
    await process.push.send(ProcessExit(code))
    await client.read_until(lambda: error in client.ended)
    return bytes(client.data[error])


async def test_an_attach_ends_with_success_whatever_the_exit_code(nursery: trio.Nursery) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    process = ScriptedProcess()
    options = StreamOptions(stdin=False, stdout=True, stderr=False, tty=False)
    session = _session("v4.channel.k8s.io", options, process, command=None)
    nursery.start_soon(serve_spdy, server_end, b"", session)
    client = SpdyClient(client_end)
    error = await client.open("error")
    await client.open("stdout")
    await process.push.send(ProcessExit(1))
    await client.read_until(lambda: error in client.ended)
    assert json.loads(client.data[error]) == {"metadata": {}, "status": "Success"}


async def test_streams_that_never_come_end_the_session_and_the_process(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    monkeypatch.setattr(remotecommand, "STREAM_CREATION_TIMEOUT", 30.0)
    client_end, server_end = trio.testing.memory_stream_pair()
    closed = trio.Event()

    async def handler() -> None:
        async with _tracked(closed) as process:
            await serve_spdy(
                server_end, b"", _routes_session("v4.channel.k8s.io", OUT_ERR, process)
            )

    nursery.start_soon(handler)
    client = SpdyClient(client_end)
    await client.open("error")  # stdout and stderr never come
    with trio.fail_after(60):
        await closed.wait()


async def test_a_client_that_vanishes_ends_the_process(nursery: trio.Nursery) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    closed = trio.Event()

    async def handler() -> None:
        async with _tracked(closed) as process:
            await serve_spdy(server_end, b"", _session("v4.channel.k8s.io", OUT_ERR, process))

    nursery.start_soon(handler)
    client = SpdyClient(client_end)
    for kind in ("error", "stdout", "stderr"):
        await client.open(kind)
    await trio.sleep(0.1)
    await client_end.aclose()
    with trio.fail_after(5):
        await closed.wait()


async def test_unanswered_pings_end_the_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    closed = trio.Event()

    async def handler() -> None:
        async with _tracked(closed) as process:
            await serve_spdy(server_end, b"", _session("v4.channel.k8s.io", OUT_ERR, process))

    nursery.start_soon(handler)
    client = SpdyClient(client_end)
    for kind in ("error", "stdout", "stderr"):
        await client.open(kind)
    # The client reads nothing and answers no PING.
    with trio.fail_after(spdy_transport.PING_INTERVAL + spdy_transport.PING_TIMEOUT + 5):
        await closed.wait()


async def test_output_is_read_from_the_process_only_as_fast_as_the_client_reads(
    nursery: trio.Nursery,
) -> None:
    # A socket pair: bounded kernel buffers, as between kubectl and the node.
    a, b = trio.socket.socketpair()
    client_end, server_end = trio.SocketStream(a), trio.SocketStream(b)
    process = ScriptedProcess()
    options = StreamOptions(stdin=False, stdout=True, stderr=False, tty=False)
    nursery.start_soon(serve_spdy, server_end, b"", _session("v4.channel.k8s.io", options, process))
    client = SpdyClient(client_end)
    await client.open("error")
    stdout = await client.open("stdout")
    await client.read_until(lambda: len(client.replied) == 2)

    async def endless() -> None:
        while True:
            await process.push.send(ProcessOutput("stdout", b"x" * 32768))

    nursery.start_soon(endless)
    await trio.sleep(0.5)  # the client reads nothing meanwhile: only the socket's buffers fill
    stalled = process.received
    assert stalled < 64  # under 2 MiB taken from the process
    await trio.sleep(0.5)
    assert process.received == stalled
    await client.read_until(lambda: len(client.data[stdout]) >= 256 * 32768, within=30)
    assert process.received >= 256


@asynccontextmanager
async def _tracked(closed: trio.Event) -> AsyncIterator[ScriptedProcess]:
    """A process whose context's end (the process killed) sets ``closed``."""
    try:
        yield ScriptedProcess()
    finally:
        closed.set()


def _routes_session(
    protocol: str, options: StreamOptions, process: ScriptedProcess
) -> Callable[[SpdyTransport], Awaitable[None]]:
    from vk_trio.kubelet.streaming.routes import _remote_command_session

    async def run(transport: SpdyTransport) -> None:
        await _remote_command_session(
            transport, protocol=protocol, options=options, process=process, command=("x",)
        )

    return run


async def _echo_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data.upper())

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(echo, listeners)


async def test_port_forward_pairs_streams_by_request_id_and_copies_both_ways(
    nursery: trio.Nursery,
) -> None:
    port = await nursery.start(_echo_server)
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(
        serve_spdy,
        server_end,
        b"",
        lambda t: serve_port_forward(t, local_port, "default/p, uid u"),
    )
    client = SpdyClient(client_end)
    errors, datas = [], []
    for request_id in ("0", "1"):
        errors.append(await client.open("error", port=str(port), requestID=request_id))
        datas.append(await client.open("data", port=str(port), requestID=request_id))
    for n, sid in enumerate(datas):
        await client.send(sid, f"hello {n}".encode(), fin=True)
    await client.read_until(lambda: set(datas + errors) <= client.ended)
    assert [bytes(client.data[sid]) for sid in datas] == [b"HELLO 0", b"HELLO 1"]
    assert [bytes(client.data[sid]) for sid in errors] == [b"", b""]


async def test_port_forward_reports_a_refused_port_and_a_bad_one_on_the_error_stream(
    nursery: trio.Nursery,
) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()

    @asynccontextmanager
    async def refusing(port: int) -> AsyncIterator[trio.abc.HalfCloseableStream]:
        raise NotReady(f"nothing listens on port {port}")
        yield  # pragma: no cover

    nursery.start_soon(
        serve_spdy, server_end, b"", lambda t: serve_port_forward(t, refusing, "default/p, uid u")
    )
    client = SpdyClient(client_end)
    refused_error = await client.open("error", port="8000", requestID="0")
    await client.open("data", port="8000", requestID="0")
    bad_error = await client.open("error", port="http", requestID="1")
    await client.open("data", port="http", requestID="1")
    await client.read_until(lambda: {refused_error, bad_error} <= client.ended)
    assert bytes(client.data[refused_error]) == (
        b"error forwarding port 8000 to pod default/p, uid u: nothing listens on port 8000"
    )
    assert bytes(client.data[bad_error]).startswith(b"error parsing port 'http'")


async def test_a_process_that_breaks_off_ends_with_an_internal_error(
    nursery: trio.Nursery,
) -> None:
    client_end, server_end = trio.testing.memory_stream_pair()
    process = ScriptedProcess()

    async def broken() -> ProcessOutput | ProcessExit:
        raise ProviderUnavailable("the link to the agent broke: reset")

    process.receive = broken  # type: ignore[method-assign]
    nursery.start_soon(serve_spdy, server_end, b"", _session("v4.channel.k8s.io", OUT_ERR, process))
    client = SpdyClient(client_end)
    error = await client.open("error")
    await client.open("stdout")
    await client.open("stderr")
    await client.read_until(lambda: error in client.ended)
    assert json.loads(client.data[error]) == {
        "metadata": {},
        "status": "Failure",
        "message": "Internal error occurred: error executing command in container: "
        "the link to the agent broke: reset",
        "reason": "InternalError",
        "details": {
            "causes": [
                {
                    "message": "error executing command in container: "
                    "the link to the agent broke: reset"
                }
            ]
        },
        "code": 500,
    }


def test_the_query_is_read_like_the_kubelets() -> None:
    def options(query: str) -> StreamOptions:
        parsed = urllib.parse.parse_qs(query, keep_blank_values=True)
        return stream_options(Request("POST", "/exec/ns/p/c", parsed, {}))

    # The kubelet's names; a terminal drops stderr (NewOptions: "bypassing stderr").
    assert options("input=1&output=1&error=1&tty=1") == StreamOptions(
        stdin=True, stdout=True, stderr=False, tty=True
    )
    assert options("stdin=true&stderr=true") == StreamOptions(  # the API's names
        stdin=True, stdout=False, stderr=True, tty=False
    )
    with pytest.raises(Refusal):
        options("output=true")  # the kubelet's names take "1" only
    with pytest.raises(Refusal) as refused:
        options("tty=1")
    assert (refused.value.status, refused.value.message) == (
        400,
        "you must specify at least 1 of stdin, stdout, stderr",
    )
