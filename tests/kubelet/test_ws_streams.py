"""exec, attach and port-forward over WebSocket, straight to the kubelet API with a real
wsproto client (what a 1.36 API server passes through from kubectl): v5 and v4 base64
channels, stdin with v5's close, a terminal's resize, v4 port channels for two ports, the
tunneled SPDY port-forward, and the same authorization as SPDY. Then the real kubectl
(v1.32: WebSocket v5 for exec, tunneled SPDY for port-forward) through the stand-in acting
as a 1.36 API server for a node that declares ``ExtendWebSocketsToKubelet``."""

from __future__ import annotations

import contextlib
import json
import ssl
import struct

import httpx
import trio
from wsproto.events import CloseConnection

from tests.kubelet.conftest import Kubelet, free_port
from tests.kubelet.fakes import NODE
from tests.kubelet.spdy_client import SpdyClient
from tests.kubelet.test_streams import _http_server
from tests.kubelet.ws_client import AcceptConnection, RejectConnection, WsStream, ws_client
from vk_trio.kubelet.streaming.declared_features import declared_features

TOKEN = "token-admin"
EXEC = "/exec/default/p/main?"


def _setup(kubelet: Kubelet) -> ssl.SSLContext:
    kubelet.pod("p")
    kubelet.sim.node_api.add_token(TOKEN, "admin", ("system:masters",))
    return ssl.create_default_context(cadata=kubelet.sim.node_api.ca.cert_pem.decode())


async def test_v5_exec_relays_both_outputs_and_the_exit_status(kubelet: Kubelet) -> None:
    context = _setup(kubelet)
    target = EXEC + "output=1&error=1&command=sh&command=-c&command=echo+out;echo+err>%262;exit+3"
    async with ws_client(kubelet.url, context) as client:
        accepted = await client.connect(target, ["v4.channel.k8s.io", "v5.channel.k8s.io"], TOKEN)
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "v5.channel.k8s.io"
        await client.read_channels()
    assert bytes(client.channels[1]) == b"out\n"
    assert bytes(client.channels[2]) == b"err\n"
    status = json.loads(client.channels[3])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert client.close_code == 1000


async def test_v5_stdin_until_its_close_signal(kubelet: Kubelet) -> None:
    context = _setup(kubelet)
    async with ws_client(kubelet.url, context) as client:
        await client.connect(EXEC + "input=1&output=1&command=cat", ["v5.channel.k8s.io"], TOKEN)
        await client.send(b"\x00hi\n")
        await client.send(b"\x00there\n")
        await client.send(b"\xff\x00")  # v5: stdin ends, cat sees EOF
        await client.read_channels()
    assert bytes(client.channels[1]) == b"hi\nthere\n"
    assert json.loads(client.channels[3]) == {"metadata": {}, "status": "Success"}


async def test_a_terminal_is_resized_from_channel_4(kubelet: Kubelet) -> None:
    context = _setup(kubelet)
    target = EXEC + "tty=1&input=1&output=1&command=cat"
    async with ws_client(kubelet.url, context) as client:
        await client.connect(target, ["v5.channel.k8s.io"], TOKEN)
        await client.send(b'\x04{"Width":120,"Height":40}')
        with trio.fail_after(5):
            while not kubelet.node.provider.resizes:  # noqa: ASYNC110 (the fake's list)
                await trio.sleep(0.02)
        await client.send(b"\xff\x00")
        await client.read_channels()
    assert kubelet.node.provider.resizes == [(120, 40)]


async def test_v4_base64_sends_text_messages(kubelet: Kubelet) -> None:
    context = _setup(kubelet)
    async with ws_client(kubelet.url, context) as client:
        accepted = await client.connect(
            EXEC + "output=1&command=echo&command=hi", ["v4.base64.channel.k8s.io"], TOKEN
        )
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "v4.base64.channel.k8s.io"
        await client.read_channels(base64_text=True)
    assert bytes(client.channels[1]) == b"hi\n"
    assert json.loads(client.channels[3])["status"] == "Success"


async def test_v4_port_forward_of_two_ports(kubelet: Kubelet, nursery: trio.Nursery) -> None:
    context = _setup(kubelet)
    first, second = await nursery.start(_http_server), await nursery.start(_http_server)
    target = f"/portForward/default/p?port={first}&port={second}"
    async with ws_client(kubelet.url, context) as client:
        accepted = await client.connect(target, ["v4.channel.k8s.io"], TOKEN)
        assert isinstance(accepted, AcceptConnection)
        await client.send(b"\x00GET / HTTP/1.0\r\n\r\n")
        await client.send(b"\x02GET / HTTP/1.0\r\n\r\n")
        await client.read_channels()
    for data, error, port in ((0, 1, first), (2, 3, second)):
        prefix = struct.pack("<H", port)
        assert bytes(client.channels[error]) == prefix
        assert bytes(client.channels[data]).startswith(prefix + b"HTTP/1.0 200 OK")
        assert bytes(client.channels[data]).endswith(b"hello from the pod\n")


async def test_tunneled_spdy_port_forward(kubelet: Kubelet, nursery: trio.Nursery) -> None:
    context = _setup(kubelet)
    served = await nursery.start(_http_server)
    async with ws_client(kubelet.url, context) as client:
        accepted = await client.connect(
            "/portForward/default/p", ["SPDY/3.1+portforward.k8s.io"], TOKEN
        )
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "SPDY/3.1+portforward.k8s.io"
        spdy = SpdyClient(WsStream(client))
        error = await spdy.open("error", port=str(served), requestID="0")
        data = await spdy.open("data", port=str(served), requestID="0")
        await spdy.send(data, b"GET / HTTP/1.0\r\n\r\n", fin=True)
        await spdy.read_until(lambda: data in spdy.ended and error in spdy.ended)
    assert bytes(spdy.data[data]).endswith(b"hello from the pod\n")
    assert bytes(spdy.data[error]) == b""


async def test_websocket_is_authorized_like_spdy(kubelet: Kubelet) -> None:
    context = _setup(kubelet)
    kubelet.sim.node_api.add_token("token-viewer", "viewer")
    async with ws_client(kubelet.url, context) as client:
        refused = await client.connect(
            EXEC + "output=1&command=true", ["v5.channel.k8s.io"], "token-viewer"
        )
    assert isinstance(refused, RejectConnection)
    assert refused.status_code == 403
    assert client.rejected_body.startswith(b"Forbidden (user=viewer, verb=get")
    async with ws_client(kubelet.url, context) as client:
        unknown = await client.connect(EXEC + "output=1&command=true", ["v3.channel.k8s.io"], TOKEN)
    assert isinstance(unknown, RejectConnection)
    assert unknown.status_code == 403  # no known subprotocol, as x/net/websocket answers


def _declare_websocket(kubelet: Kubelet) -> None:
    """The Node as a kubelet serving WebSocket registers it (``declared_features``)."""
    kubelet.sim.patch(
        "nodes",
        None,
        NODE,
        {"status": {"declaredFeatures": declared_features(websocket_streaming=True)}},
        subresource="status",
    )


async def test_kubectl_exec_over_websocket_through_a_1_36_api_server(kubelet: Kubelet) -> None:
    _declare_websocket(kubelet)
    kubelet.pod("p")
    code, out, err = await kubelet.kubectl(
        "exec", "p", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert (code, out) == (3, "out\n")
    assert "err\n" in err
    assert "command terminated with exit code 3" in err
    code, out, err = await kubelet.kubectl_input(b"hi\n", "exec", "-i", "p", "--", "cat")
    assert (code, out, err) == (0, "hi\n", "")
    assert kubelet.sim.node_api.upgrades == ["websocket", "websocket"]


async def test_kubectl_port_forward_over_websocket_through_a_1_36_api_server(
    kubelet: Kubelet, nursery: trio.Nursery
) -> None:
    _declare_websocket(kubelet)
    kubelet.pod("p")
    served = await nursery.start(_http_server)
    local = free_port()
    ready = trio.Event()
    nursery.start_soon(kubelet.port_forward, "p", f"{local}:{served}", ready)
    with trio.fail_after(20):
        await ready.wait()
    async with httpx.AsyncClient() as client:
        for _ in range(2):
            response = await client.get(f"http://127.0.0.1:{local}/")
            assert response.text == "hello from the pod\n"
    assert kubelet.sim.node_api.upgrades == ["websocket"]


async def test_a_node_that_declares_nothing_gets_spdy(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    code, out, _ = await kubelet.kubectl("exec", "p", "--", "echo", "hi", check=False)
    assert (code, out) == (0, "hi\n")
    assert kubelet.sim.node_api.upgrades == ["SPDY/3.1"]


async def test_a_client_that_closes_ends_the_session_and_its_process(kubelet: Kubelet) -> None:
    """Its close frame cancels the relay (the provider's process goes with it), as a dead
    SPDY connection does: the kubelet hangs up long before the command would end."""
    context = _setup(kubelet)
    async with ws_client(kubelet.url, context) as client:
        await client.connect(
            EXEC + "output=1&command=sleep&command=30", ["v5.channel.k8s.io"], TOKEN
        )
        assert await client.message() == b"\x01"  # the session is up
        await client.stream.send_all(client.ws.send(CloseConnection(1000)))
        with trio.fail_after(5), contextlib.suppress(trio.BrokenResourceError):
            while await client.stream.receive_some(65536):  # the close's answer, then EOF
                pass
