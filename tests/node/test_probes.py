"""Probes on fake time, over real loopback sockets: the supervisor runs each container's
startup, readiness and liveness probes against the endpoints its ``Running`` observation
names (here a scripted app on 127.0.0.1), and the pod's status, Events and restarts follow.

The app answers with whatever status the test sets; times are virtual (the harness's
``MockClock`` jumps only when nothing happened for 50 ms of real time, so socket exchanges
are never mistaken for idleness).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from trio.testing import MockClock

from tests.node.conftest import Harness, Obj, container, phase, restarts
from tests.node.fakes import FakeProvider, running
from vk_trio.http_server import Request, Response, serve_http
from vk_trio.node.provider import Booting
from vk_trio.node.status import PROBES_IGNORED

SLACK = 2.0
"""Virtual seconds of tolerance for a step that costs a few round trips."""


@dataclass
class App:
    """A loopback HTTP app whose answer the test sets."""

    status: int = 200
    port: int = 0
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: Request) -> Response:
        self.paths.append(request.path)
        self.headers.append(request.headers)
        return Response.text("app", self.status)

    @property
    def endpoints(self) -> dict[str, str]:
        return {"8000/tcp": f"127.0.0.1:{self.port}"}


@pytest.fixture
async def app(nursery: trio.Nursery) -> App:
    app = App()
    url = await nursery.start(functools.partial(serve_http, app.handle))
    app.port = int(url.rsplit(":", 1)[1])
    return app


@dataclass
class GrpcApp:
    """A loopback gRPC server answering ``grpc.health.v1.Health/Check`` with ``status``
    (1 SERVING, 2 NOT_SERVING), or Unimplemented when ``implemented`` is false; written
    with ``h2`` as a server, so the probe's client side is checked against an independent
    HTTP/2 peer."""

    status: int = 1
    implemented: bool = True
    port: int = 0
    services: list[str] = field(default_factory=list)

    async def serve(self, stream: trio.SocketStream) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        connection = h2.connection.H2Connection(config)
        connection.initiate_connection()
        bodies: dict[int, bytes] = {}
        try:
            await stream.send_all(connection.data_to_send())
            while data := await stream.receive_some(65536):
                for event in connection.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                        connection.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        self.answer(connection, event.stream_id, bodies.pop(event.stream_id, b""))
                await stream.send_all(connection.data_to_send())
        except trio.BrokenResourceError:
            pass

    def answer(self, connection: h2.connection.H2Connection, stream_id: int, body: bytes) -> None:
        self.services.append(body[7:].decode())  # 5 bytes of framing, field 1's key and length
        grpc = [(":status", "200"), ("content-type", "application/grpc")]
        if not self.implemented:
            unknown = [("grpc-status", "12"), ("grpc-message", "unknown service")]
            connection.send_headers(stream_id, grpc + unknown, end_stream=True)
            return
        connection.send_headers(stream_id, grpc)
        connection.send_data(stream_id, b"\x00\x00\x00\x00\x02\x08" + bytes([self.status]))
        connection.send_headers(stream_id, [("grpc-status", "0")], end_stream=True)

    @property
    def endpoints(self) -> dict[str, str]:
        return {"9000/tcp": f"127.0.0.1:{self.port}"}


@pytest.fixture
async def grpc_app(nursery: trio.Nursery) -> GrpcApp:
    app = GrpcApp()
    listeners = await nursery.start(
        functools.partial(trio.serve_tcp, app.serve, 0, host="127.0.0.1")
    )
    app.port = listeners[0].socket.getsockname()[1]
    return app


def probe(kind: str = "httpGet", **timing: Any) -> Obj:
    handlers: dict[str, Obj] = {
        "httpGet": {"path": "/healthz", "port": 8000},
        "tcpSocket": {"port": 8000},
        "exec": {"command": ["cat", "/tmp/ok"]},
    }
    return {kind: handlers[kind], "periodSeconds": 10, **timing}


def main(**probes: Obj) -> list[Obj]:
    return [
        {
            "name": "main",
            "image": "busybox",
            "ports": [{"containerPort": 8000, "name": "http"}],
            **probes,
        }
    ]


def condition(pod: Obj, kind: str) -> Obj:
    conditions = pod["status"].get("conditions") or []
    found: Obj = next((c for c in conditions if c["type"] == kind), {})
    return found


def ready(pod: Obj) -> bool:
    return condition(pod, "Ready").get("status") == "True"


def messages(harness: Harness, name: str, reason: str) -> list[str]:
    return [e["message"] for e in harness.events(name) if e["reason"] == reason]


async def test_readiness_waits_for_the_app(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    app.status = 503
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]]
    harness.create("p", containers=main(readinessProbe=probe(initialDelaySeconds=5)))
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert not ready(pod) and not container(pod)["ready"]
    assert condition(pod, "ContainersReady")["status"] == "False"
    await trio.sleep(60)
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert not ready(pod)  # still 503
    failed = messages(harness, "p", "Unhealthy")
    assert failed == ["Readiness probe failed: HTTP probe failed with statuscode: 503"]
    assert app.paths[0] == "/healthz"
    assert app.headers[0]["user-agent"].startswith("kube-probe/")
    app.status = 200
    turned = trio.current_time()
    pod = await harness.until("p", ready, within=30)
    assert trio.current_time() - turned <= 10 + SLACK  # the next period
    assert container(pod)["ready"] is True
    assert condition(pod, "Ready")["lastTransitionTime"]
    app.status = 500  # three failures in a row: not ready again
    pod = await harness.until("p", lambda p: not ready(p), within=40)
    assert phase(pod) == "Running" and restarts(pod) == 0  # readiness never restarts


async def test_probes_resume_when_the_instance_runs_again(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    """Vast reboots an instance (or a stale page of its list says "loading" again) and then
    reports it running at the same endpoints: the pod is not ready meanwhile, and ready
    again once the probes, restarted, pass."""
    same = running(endpoints=app.endpoints)
    provider.runs["p"] = [[(0.0, same), (30.0, Booting("instance 1 rebooting")), (5.0, same)]]
    harness.create("p", containers=main(readinessProbe=probe()))
    await harness.until("p", ready)
    pod = await harness.until("p", lambda p: not ready(p), within=40)
    assert pod["status"]["message"] == "instance 1 rebooting"
    pod = await harness.until("p", ready, within=20)
    assert "message" not in pod["status"] and restarts(pod) == 0
    assert provider.count == 1


async def test_liveness_failure_buys_a_new_instance(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]] * 2
    harness.create("p", containers=main(livenessProbe=probe(failureThreshold=3)))
    pod = await harness.until("p", ready)
    await trio.sleep(100)
    assert provider.count == 1 and messages(harness, "p", "Unhealthy") == []
    app.status = 500
    broke = trio.current_time()
    pod = await harness.until("p", lambda p: restarts(p) == 1)
    assert trio.current_time() - broke <= 30 + SLACK  # three periods
    terminated = container(pod)["lastState"]["terminated"]
    assert terminated["reason"] == "Error"
    assert terminated["message"] == (
        "liveness probe failed: HTTP probe failed with statuscode: 500"
    )
    assert messages(harness, "p", "Unhealthy") == [
        "Liveness probe failed: HTTP probe failed with statuscode: 500"
    ]
    assert messages(harness, "p", "Killing") == [
        "Container main failed liveness probe, will be restarted"
    ]
    app.status = 200
    await harness.until("p", ready)
    assert provider.count == 2
    assert provider.billing() == 1  # the dead instance was released


async def test_liveness_failure_with_restart_policy_never_fails_the_pod(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    app.status = 500
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]]
    harness.create(
        "p", restartPolicy="Never", containers=main(livenessProbe=probe(failureThreshold=1))
    )
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    assert container(pod)["state"]["terminated"]["message"].startswith("liveness probe failed")
    assert provider.count == 1 and provider.billing() == 0


async def test_startup_probe_gates_the_others(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    app.status = 503
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]]
    startup = {
        "httpGet": {"path": "/started", "port": "http"},  # by name
        "periodSeconds": 10,
        "failureThreshold": 30,
    }
    harness.create(
        "p",
        containers=main(
            startupProbe=startup, readinessProbe=probe(), livenessProbe=probe(failureThreshold=1)
        ),
    )
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    await trio.sleep(100)
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert container(pod)["started"] is False and not ready(pod)
    assert set(app.paths) == {"/started"}  # liveness (threshold 1) never ran: no restart
    assert restarts(pod) == 0
    app.status = 200
    pod = await harness.until("p", ready, within=30)
    assert container(pod)["started"] is True
    assert "/healthz" in app.paths


async def test_startup_probe_that_never_passes_kills_the_container(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    # Nothing listens: a tcpSocket probe's connection is refused.
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider.runs["p"] = [[(0.0, running(endpoints={"8000/tcp": f"127.0.0.1:{port}"}))]]
    harness.create(
        "p",
        restartPolicy="Never",
        containers=main(startupProbe=probe("tcpSocket", failureThreshold=2)),
    )
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    message = container(pod)["state"]["terminated"]["message"]
    assert (
        message == f"startup probe failed: dial tcp 127.0.0.1:{port}: connect: connection refused"
    )


async def test_grpc_probes_ask_the_health_service(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, grpc_app: GrpcApp
) -> None:
    grpc_app.status = 2  # NOT_SERVING
    provider.runs["p"] = [[(0.0, running(endpoints=grpc_app.endpoints))]]
    readiness = {"grpc": {"port": 9000, "service": "tts"}, "periodSeconds": 10}
    harness.create("p", containers=main(readinessProbe=readiness))
    await harness.until("p", lambda p: bool(messages(harness, "p", "Unhealthy")))
    pod = await harness.until("p", lambda p: phase(p) == "Running")
    assert not ready(pod)
    assert messages(harness, "p", "Unhealthy") == [
        'Readiness probe failed: service unhealthy (responded with "NOT_SERVING")'
    ]
    assert grpc_app.services[0] == "tts"
    grpc_app.status = 1  # SERVING
    await harness.until("p", ready, within=30)


async def test_a_grpc_probe_on_a_server_without_the_health_service_says_so(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, grpc_app: GrpcApp
) -> None:
    grpc_app.implemented = False
    provider.runs["p"] = [[(0.0, running(endpoints=grpc_app.endpoints))]]
    liveness = {"grpc": {"port": 9000}, "periodSeconds": 10, "failureThreshold": 1}
    harness.create("p", restartPolicy="Never", containers=main(livenessProbe=liveness))
    pod = await harness.until("p", lambda p: phase(p) == "Failed")
    assert container(pod)["state"]["terminated"]["message"] == (
        "liveness probe failed: error: this server does not implement the grpc health "
        "protocol (grpc.health.v1.Health): unknown service"
    )
    assert PROBES_IGNORED not in {c["type"] for c in pod["status"]["conditions"]}


async def test_a_probe_on_an_unpublished_port_fails_and_says_why(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]]
    wrong = {"tcpSocket": {"port": 9000}, "periodSeconds": 10}
    harness.create("p", containers=main(readinessProbe=wrong))
    await harness.until("p", lambda p: bool(messages(harness, "p", "Unhealthy")))
    assert messages(harness, "p", "Unhealthy") == [
        "Readiness probe failed: container port 9000/tcp is not published by the instance"
    ]


async def test_exec_probes_are_reported_and_ignored(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider
) -> None:
    provider.runs["p"] = [[(0.0, running())]]
    harness.create("p", containers=main(readinessProbe=probe("exec"), livenessProbe=probe("exec")))
    pod = await harness.until("p", ready)  # as if it had no probes
    ignored = condition(pod, PROBES_IGNORED)
    assert ignored["status"] == "True" and ignored["reason"] == "ProbeNotSupported"
    assert "readinessProbe (exec), livenessProbe (exec)" in ignored["message"]
    [event] = messages(harness, "p", "ProbeNotSupported")
    assert "use httpGet, tcpSocket or grpc" in event


async def test_probes_stop_with_the_pod(
    jumpy_clock: MockClock, harness: Harness, provider: FakeProvider, app: App
) -> None:
    provider.runs["p"] = [[(0.0, running(endpoints=app.endpoints))]]
    harness.create("p", containers=main(readinessProbe=probe()))
    await harness.until("p", ready)
    harness.delete("p")
    await harness.gone("p")
    seen = len(app.paths)
    await trio.sleep(600)
    assert len(app.paths) == seen  # no probe task outlived its pod
