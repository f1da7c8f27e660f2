"""``kubectl exec``, ``attach`` and ``port-forward`` through the stand-in to the kubelet API,
over the fake provider, whose exec runs local processes and whose port-forward connects to
127.0.0.1: the real kubectl, the real SPDY path (stand-in upgrade proxy, kubelet handshake,
transport, sessions), without the agent. The routes' refusals (401, 403, 400 without an
upgrade, WebSocket, protocol negotiation) are checked with plain HTTP.
"""

from __future__ import annotations

import ssl

import httpx
import trio

from tests.kubelet.conftest import Kubelet, free_port
from tests.kubelet.fakes import NODE

SPDY_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "SPDY/3.1",
    "X-Stream-Protocol-Version": "v4.channel.k8s.io",
}


def _verifying(kubelet: Kubelet) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=kubelet.sim.node_api.ca.cert_pem.decode())


async def test_exec_prints_stdout_and_stderr_and_exits_with_the_commands_code(
    kubelet: Kubelet,
) -> None:
    kubelet.pod("p")
    code, out, err = await kubelet.kubectl(
        "exec", "p", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
    )
    assert (code, out) == (3, "out\n")
    assert "err\n" in err
    assert "command terminated with exit code 3" in err


async def test_exec_relays_stdin_until_it_ends(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    code, out, err = await kubelet.kubectl_input(b"hi\nthere\n", "exec", "-i", "p", "--", "cat")
    assert (code, out, err) == (0, "hi\nthere\n", "")


async def test_attach_joins_the_containers_process(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    kubelet.node.provider.attach_command = ["sh", "-c", "read line; echo got $line"]
    code, out, _ = await kubelet.kubectl_input(b"x\n", "attach", "-i", "p")
    assert (code, out) == (0, "got x\n")


async def test_port_forward_reaches_a_local_server(kubelet: Kubelet, nursery: trio.Nursery) -> None:
    kubelet.pod("p")
    served = await nursery.start(_http_server)
    local = free_port()
    ready = trio.Event()
    nursery.start_soon(kubelet.port_forward, "p", f"{local}:{served}", ready)
    with trio.fail_after(20):
        await ready.wait()
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{local}/")
    assert response.status_code == 200
    assert response.text == "hello from the pod\n"


async def _http_server(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(4096)
                if not data:
                    return
                request += data
            body = b"hello from the pod\n"
            await stream.send_all(
                b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


async def test_a_request_without_credentials_is_401_and_without_nodes_proxy_403(
    kubelet: Kubelet,
) -> None:
    kubelet.pod("p")
    api = kubelet.sim.node_api
    api.add_token("token-viewer", "viewer")
    url = kubelet.url + "/exec/default/p/main?command=true&output=1"
    async with httpx.AsyncClient(verify=_verifying(kubelet)) as client:
        assert (await client.post(url, headers=SPDY_HEADERS)).status_code == 401
        denied = await client.post(
            url, headers={**SPDY_HEADERS, "Authorization": "Bearer token-viewer"}
        )
    assert denied.status_code == 403
    assert denied.text == "Forbidden (user=viewer, verb=create, resource=nodes, subresource=proxy)"


async def test_refusals_before_the_upgrade_say_what_is_wrong(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    api = kubelet.sim.node_api
    api.add_token("token-exec", "execer")
    api.grant("execer", "create", "nodes/proxy")
    api.grant("execer", "get", "nodes/proxy")
    auth = {"Authorization": "Bearer token-exec"}
    base = kubelet.url
    async with httpx.AsyncClient(verify=_verifying(kubelet)) as client:

        async def post(path: str, headers: dict[str, str]) -> httpx.Response:
            return await client.post(base + path, headers={**auth, **headers})

        plain = await post("/exec/default/p/main?command=true&output=1", {})
        assert plain.status_code == 400
        assert plain.text.startswith("unable to upgrade: X-Stream-Protocol-Version is required")
        no_upgrade = await post(
            "/exec/default/p/main?command=true&output=1",
            {"X-Stream-Protocol-Version": "v4.channel.k8s.io"},
        )
        assert no_upgrade.status_code == 400
        assert no_upgrade.text.startswith("unable to upgrade: missing upgrade headers in request")
        no_streams = await post("/exec/default/p/main?command=true", SPDY_HEADERS)
        assert (no_streams.status_code, no_streams.text) == (
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        )
        websocket = await post(
            "/exec/default/p/main?command=true&output=1",
            {"Connection": "Upgrade", "Upgrade": "websocket"},
        )
        assert (websocket.status_code, websocket.text) == (405, "bad method")  # x/net/websocket
        unknown = await post(
            "/portForward/default/p",
            {**SPDY_HEADERS, "X-Stream-Protocol-Version": "v9.example"},
        )
        assert unknown.status_code == 403
        assert unknown.headers["X-Accepted-Stream-Protocol-Versions"] == "portforward.k8s.io"
        other_uid = await client.get(
            base + "/exec/default/p/not-its-uid/main?command=true&output=1",
            headers={**auth, **SPDY_HEADERS},
        )
        assert other_uid.status_code == 404
        missing = await post("/attach/default/nope/main?output=1", SPDY_HEADERS)
        assert missing.status_code == 404
    verbs = {r["resourceAttributes"]["verb"] for r in api.reviews if r["user"] == "execer"}
    assert verbs == {"create", "get"}


async def test_a_pod_the_provider_cannot_stream_to_is_refused_at_once(kubelet: Kubelet) -> None:
    kubelet.pod("p")
    handle = next(iter(kubelet.node.handles.values()))
    assert handle.placement is not None
    handle.placement = type(handle.placement)(
        "main", {}, streams_refused="kubectl exec needs the vk-trio agent"
    )
    code, _, err = await kubelet.kubectl("exec", "p", "--", "true", check=False)
    assert code != 0
    assert "kubectl exec needs the vk-trio agent" in err
    code, _, err = await kubelet.kubectl("port-forward", "p", f"{free_port()}:80", check=False)
    assert code != 0
    assert "kubectl exec needs the vk-trio agent" in err
    assert f"nodes/{NODE}" not in err
