"""SPDY/3.1, server side, without I/O: what ``kubectl exec``, ``attach`` and ``port-forward``
speak to a kubelet through the API server (which dials the kubelet with spdystream, up to
Kubernetes 1.35, and on 1.36+ unless the node advertises WebSocket). There is no kept Python
SPDY library, so this is one in the manner of h11 and h2: a state machine that is fed bytes
and told what to send, and leaves sockets, tasks and timeouts to its caller.

``_frames`` parses and writes the frames, ``_headers`` the zlib-compressed header blocks with
the spec's dictionary, ``_connection`` keeps streams, flow-control windows and errors.

How a caller drives it (one task reading, any task sending, one lock or a single owner
around the connection object)::

    conn = SpdyConnection(peer_flow_control=False)   # spdystream peers: see SpdyConnection
    # after the HTTP 101 "Upgrade: SPDY/3.1" response, on the same socket:
    while data := await sock.receive_some(65536):
        for event in conn.receive_data(data):
            match event:
                case StreamOpened(stream_id=sid):          # event.header("streamtype")
                    conn.reply(sid, [])
                case DataReceived(stream_id=sid, data=d):
                    deliver(sid, d)  # and conn.acknowledge(sid, len(d)) once consumed
                case WindowUpdated():
                    wake_blocked_senders()
                case StreamReset() | ConnectionTerminated(): ...
        await sock.send_all(conn.data_to_send())       # after EVERY call, not just reads
    conn.receive_data(b"")                             # end of input

Writers call ``send_data`` and then write ``data_to_send()``; a return below ``len(data)``
means the peer's window is shut, so they wait for ``WindowUpdated`` and send the rest (this
module buffers nothing of theirs). PING echoes and RST_STREAM/GOAWAY answers to the peer's
mistakes are queued by ``receive_data`` itself, which is why its output must be flushed too.
"""

from vk_trio.kubelet.spdy._connection import (
    DEFAULT_WINDOW,
    ConnectionClosedError,
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAway,
    HeadersReceived,
    PingAcknowledged,
    PingReceived,
    SettingsReceived,
    SpdyConnection,
    SpdyError,
    StreamClosedError,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from vk_trio.kubelet.spdy._frames import (
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    Data,
    Frame,
    FrameError,
    FrameReader,
    FrameType,
    GoAwayFrame,
    GoAwayStatus,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    SettingId,
    Settings,
    SynReply,
    SynStream,
    UnknownControl,
    WindowUpdate,
    parse_frame,
    serialize,
)
from vk_trio.kubelet.spdy._headers import (
    SPDY3_DICTIONARY,
    HeaderBlockError,
    HeaderCompressor,
    HeaderDecompressor,
    Headers,
    decode_header_block,
    encode_header_block,
)

__all__ = [
    "DEFAULT_WINDOW",
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "SPDY3_DICTIONARY",
    "ConnectionClosedError",
    "ConnectionTerminated",
    "Data",
    "DataReceived",
    "Event",
    "Frame",
    "FrameError",
    "FrameReader",
    "FrameType",
    "GoAway",
    "GoAwayFrame",
    "GoAwayStatus",
    "HeaderBlockError",
    "HeaderCompressor",
    "HeaderDecompressor",
    "Headers",
    "HeadersFrame",
    "HeadersReceived",
    "Ping",
    "PingAcknowledged",
    "PingReceived",
    "RstStatus",
    "RstStream",
    "Setting",
    "SettingId",
    "Settings",
    "SettingsReceived",
    "SpdyConnection",
    "SpdyError",
    "StreamClosedError",
    "StreamOpened",
    "StreamReset",
    "SynReply",
    "SynStream",
    "UnknownControl",
    "WindowUpdate",
    "WindowUpdated",
    "decode_header_block",
    "encode_header_block",
    "parse_frame",
    "serialize",
]
