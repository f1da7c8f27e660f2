"""Container probes, as the kubelet's prober runs them, against the instance's public endpoints.

A kubelet probes ``podIP:containerPort`` from the node. A virtual node's pod has no pod IP
the node can reach: the world reaches the container at the public ``ip:port`` the backend
mapped to each container port (``Running.endpoints``), so that is where vk-trio probes, from
outside, like any client of the app. Nothing here knows which backend it is.

What is run, with the probe's own ``initialDelaySeconds`` (from when the container was first
seen running), ``periodSeconds``, ``timeoutSeconds``, ``successThreshold`` and
``failureThreshold`` (``pkg/kubelet/prober/worker.go``):

* ``startupProbe`` first; until it succeeds the container is not ``started`` and the other
  two do not run; ``failureThreshold`` failures in a row kill the container;
* ``readinessProbe``: not ready until ``successThreshold`` successes in a row, not ready
  again after ``failureThreshold`` failures in a row;
* ``livenessProbe``: ``failureThreshold`` failures in a row kill the container.

Every failed attempt is a Warning Event ``Unhealthy`` with the kubelet's text ("Liveness probe
failed: HTTP probe failed with statuscode: 500"); the recorder aggregates repeats.

Handlers: ``httpGet`` (``http``/``https``; like the kubelet, https certificates are not
verified, and 2xx/3xx is success without following redirects), ``tcpSocket`` and ``grpc``
(the health-checking protocol over plaintext HTTP/2, ``grpc_health``). ``exec`` would need a
shell inside the instance: it is not run, and ``unsupported`` names it so the supervisor
says so on the pod (it counts as absent).

Many pods probing must not starve the node: every attempt goes through the node-wide
``Prober`` (a ``CapacityLimiter``), is bounded by its timeout, and does only trio socket I/O.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

import h2.exceptions
import h11
import trio

from vk_trio.kube.models import Container, GRPCAction, HTTPGetAction, Probe
from vk_trio.node import grpc_health

__all__ = [
    "DEFAULT_CONCURRENCY",
    "Kill",
    "ProbeReport",
    "Prober",
    "Result",
    "gates",
    "run_probes",
    "unsupported",
]

DEFAULT_CONCURRENCY = 64
"""Probe attempts in flight node-wide. Each is one short TCP (and maybe TLS) exchange; 64 at
once keeps 200 pods probed every 10 s with room to spare, and caps sockets and CPU when
many apps are slow to answer."""

USER_AGENT = "kube-probe/vk-trio"
"""The kubelet sends ``kube-probe/<major>.<minor>``; apps that special-case it still match."""

_READ_SIZE = 16384

Kind = Literal["Startup", "Readiness", "Liveness"]


@dataclass(frozen=True)
class Result:
    ok: bool
    output: str
    """Why it failed, in the kubelet's words (empty on success)."""


@dataclass(frozen=True)
class Kill:
    """A startup or liveness probe failed ``failureThreshold`` times in a row."""

    kind: Kind
    output: str

    @property
    def message(self) -> str:
        """The terminated state's message: ``liveness probe failed: …``."""
        return f"{self.kind.lower()} probe failed: {self.output}"


class ProbeReport(Protocol):
    """What the probes of one container tell their pod's supervisor."""

    async def probed(self, *, started: bool, ready: bool) -> None:
        """The container's ``started`` and ``ready`` changed."""
        ...

    async def unhealthy(self, message: str) -> None:
        """One failed attempt (the Event ``Unhealthy``)."""
        ...


def _probes(container: Container) -> dict[Kind, Probe]:
    found: dict[Kind, Probe | None] = {
        "Startup": container.startup_probe,
        "Readiness": container.readiness_probe,
        "Liveness": container.liveness_probe,
    }
    return {kind: probe for kind, probe in found.items() if probe is not None}


def _runnable(probe: Probe) -> bool:
    return any(h is not None for h in (probe.http_get, probe.tcp_socket, probe.grpc))


def probed(container: Container) -> bool:
    """Whether ``container`` has a probe vk-trio runs (else no probing task is started)."""
    return any(_runnable(probe) for probe in _probes(container).values())


def unsupported(container: Container) -> list[str]:
    """The container's probes that cannot run from outside the instance, e.g.
    ``livenessProbe (exec)``; they are treated as absent."""
    return [
        f"{kind[0].lower()}{kind[1:]}Probe ({'exec' if probe.exec else 'no handler'})"
        for kind, probe in _probes(container).items()
        if not _runnable(probe)
    ]


def gates(container: Container) -> tuple[bool, bool]:
    """``(started, ready)`` when the container starts running, before any probe answered."""
    probes = {k: p for k, p in _probes(container).items() if _runnable(p)}
    started = "Startup" not in probes
    return started, started and "Readiness" not in probes


class Prober:
    """The node's probing capacity: one per node, shared by every pod's probes."""

    def __init__(self, *, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self._limiter = trio.CapacityLimiter(concurrency)

    async def check(
        self, probe: Probe, container: Container, endpoints: Mapping[str, str]
    ) -> Result:
        """One attempt of ``probe`` against the container's public endpoint."""
        action = probe.http_get or probe.tcp_socket or probe.grpc
        if action is None:
            return Result(False, "the probe has no httpGet, tcpSocket or grpc handler")
        target = _endpoint(action.port, container, endpoints)
        if isinstance(target, str):
            return Result(False, target)
        host, number = target
        timeout = max(probe.timeout_seconds, 1)
        async with self._limiter:
            with trio.move_on_after(timeout):
                if probe.http_get is not None:
                    return await _http_get(probe.http_get, host, number)
                if probe.grpc is not None:
                    return await _grpc(probe.grpc, host, number)
                return await _tcp(host, number)
        if probe.grpc is not None:
            return Result(False, f"timeout: health rpc did not complete within {timeout}s")
        if probe.http_get is not None:
            url = _url(probe.http_get, host, number)
            return Result(
                False,
                f'Get "{url}": context deadline exceeded '
                "(Client.Timeout exceeded while awaiting headers)",
            )
        return Result(False, f"dial tcp {host}:{number}: i/o timeout")


async def run_probes(
    container: Container,
    endpoints: Mapping[str, str],
    prober: Prober,
    report: ProbeReport,
    *,
    since: float,
) -> Kill:
    """Probe ``container`` at ``endpoints`` until a startup or liveness probe kills it.

    ``since`` is the trio time the container was first seen running (initial delays count
    from there). Reports every change of ``started`` and ``ready`` through ``report``;
    returns the ``Kill`` the supervisor acts on. Never raises: a probe that cannot connect is
    a failed attempt.

    All the container's probes run in the calling task, each on its own schedule (the
    kubelet runs a goroutine per probe; here a task per probe would add the state of a task
    and its sleeps for each, which the garbage collector walks for every probing pod).
    Attempts that fall due together run one after the other, each bounded by its timeout.
    """
    probes = {k: p for k, p in _probes(container).items() if _runnable(p)}
    startup = probes.pop("Startup", None)
    workers = (
        [_Worker("Startup", startup, since)]
        if startup is not None
        else [_Worker(kind, probe, since) for kind, probe in probes.items()]
    )
    while workers:
        worker = min(workers, key=_due)
        await trio.sleep_until(worker.next_at)
        worker.next_at = max(worker.next_at + worker.period, trio.current_time())
        attempt = await prober.check(worker.probe, container, endpoints)
        if not attempt.ok:
            await report.unhealthy(f"{worker.kind} probe failed: {attempt.output}")
        turned = worker.record(attempt.ok)
        if turned is None:
            continue
        if worker.kind == "Readiness":
            await report.probed(started=True, ready=turned)
        elif not turned:
            return Kill(worker.kind, attempt.output)
        else:  # the startup probe passed: the other two begin
            workers = [_Worker(kind, probe, since) for kind, probe in probes.items()]
            await report.probed(started=True, ready="Readiness" not in probes)
    await trio.sleep_forever()


class _Worker:
    """One probe's schedule and counters: the kubelet's ``worker.doProbe`` bookkeeping."""

    def __init__(self, kind: Kind, probe: Probe, since: float) -> None:
        self.kind = kind
        self.probe = probe
        # The initial result, as the kubelet's: readiness Failure, liveness Success,
        # startup unknown (not started).
        self.result = kind == "Liveness"
        self.successes = self.failures = 0
        self.next_at = since + max(probe.initial_delay_seconds, 0)
        self.period = max(probe.period_seconds, 1)

    def record(self, ok: bool) -> bool | None:
        """Count one attempt; the probe's new result when this attempt turned it, else None.

        Success needs ``successThreshold`` in a row, failure ``failureThreshold``. A startup
        or liveness probe turning to failure kills the container; a readiness probe that
        never succeeded has nothing to turn."""
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.result or self.successes < max(self.probe.success_threshold, 1):
                return None
            self.result = True
            return True
        self.successes, self.failures = 0, self.failures + 1
        if self.failures < max(self.probe.failure_threshold, 1):
            return None
        if self.kind == "Readiness" and not self.result:
            return None
        self.result = False
        return False


def _due(worker: _Worker) -> float:
    return worker.next_at


def _endpoint(
    port: int | str, container: Container, endpoints: Mapping[str, str]
) -> tuple[str, int] | str:
    """The public ``(host, port)`` for a probe's port (number or container-port name), or why
    there is none."""
    if isinstance(port, str):
        named = next((p for p in container.ports if p.name == port), None)
        if named is None:
            return f"port {port!r} is not a named port of container {container.name!r}"
        port = named.container_port
    public = endpoints.get(f"{port}/tcp")
    if public is None:
        return f"container port {port}/tcp is not published by the instance"
    host, _, number = public.rpartition(":")
    return host, int(number)


def _tls_context() -> ssl.SSLContext:
    """No verification, as the kubelet's probes (``InsecureSkipVerify``); built without
    loading CA files, so no disk I/O on the loop."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_TLS = _tls_context()


async def _connect(host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host:port``. An IP address (what backends report) is connected
    directly: ``open_tcp_stream``'s name lookup and happy-eyeballs nursery cost CPU and
    cyclic garbage on every attempt, which many pods probing every second turn into
    garbage-collector pauses on the loop."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return await trio.open_tcp_stream(host, port)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    try:
        await sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _tcp(host: str, port: int) -> Result:
    try:
        stream = await _connect(host, port)
    except OSError as exc:
        return Result(False, f"dial tcp {host}:{port}: {_reason(exc)}")
    await stream.aclose()
    return Result(True, "")


def _path(action: HTTPGetAction) -> str:
    return action.path if action.path.startswith("/") else f"/{action.path}"


def _url(action: HTTPGetAction, host: str, port: int) -> str:
    return f"{action.scheme.lower()}://{host}:{port}{_path(action)}"


async def _http_get(action: HTTPGetAction, host: str, port: int) -> Result:
    try:
        status = await _exchange(action, host, port)
    except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
        return Result(False, f'Get "{_url(action, host, port)}": {_reason(exc)}')
    if 200 <= status < 400:
        return Result(True, "")
    return Result(False, f"HTTP probe failed with statuscode: {status}")


async def _exchange(action: HTTPGetAction, host: str, port: int) -> int:
    """Send one GET and return the response status; one connection per attempt, as the
    kubelet's probes (keep-alive off)."""
    stream: trio.abc.Stream = await _connect(host, port)
    try:
        if action.scheme.lower() == "https":
            stream = trio.SSLStream(stream, _TLS, server_hostname=host)
        connection = h11.Connection(h11.CLIENT)
        user = [(h.name, h.value) for h in action.http_headers]
        given = {name.lower() for name, _ in user}
        headers = [
            (name, value)
            for name, value in (
                ("Host", f"{host}:{port}"),
                ("User-Agent", USER_AGENT),
                ("Accept", "*/*"),
            )
            if name.lower() not in given
        ]
        headers += [*user, ("Connection", "close")]
        request = h11.Request(method="GET", target=_path(action), headers=headers)
        await stream.send_all(connection.send(request) + connection.send(h11.EndOfMessage()))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            elif isinstance(event, h11.Response):
                return int(event.status_code)
            elif isinstance(event, h11.ConnectionClosed):
                raise trio.BrokenResourceError("EOF")
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def _grpc(action: GRPCAction, host: str, port: int) -> Result:
    """One ``grpc.health.v1.Health/Check``, with the kubelet's messages."""
    address = f"{host}:{port}"
    try:
        stream = await _connect(host, port)
    except OSError as exc:
        return Result(False, f'error: failed to connect service at "{address}": {_reason(exc)}')
    try:
        status = await grpc_health.check(
            stream, authority=address, service=action.service or "", user_agent=USER_AGENT
        )
    except grpc_health.RpcError as exc:
        if exc.code == grpc_health.UNIMPLEMENTED:
            return Result(
                False,
                "error: this server does not implement the grpc health protocol "
                f"(grpc.health.v1.Health): {exc.message}",
            )
        return Result(False, f"error: health rpc probe failed: {exc}")
    except (OSError, trio.BrokenResourceError, h2.exceptions.ProtocolError) as exc:
        return Result(False, f"error: health rpc probe failed: {_reason(exc)}")
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)
    if status != grpc_health.SERVING:
        return Result(False, f'service unhealthy (responded with "{status}")')
    return Result(True, "")


def _reason(exc: BaseException) -> str:
    """``connect: connection refused``-style text for a failed connection (trio wraps the
    OS error of each attempt in "all attempts to connect ... failed")."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
            cause = cause.exceptions[0]
            continue
        if isinstance(cause, OSError) and cause.errno:
            return f"connect: {os.strerror(cause.errno).lower()}"
        cause = cause.__cause__
    return str(exc) or type(exc).__name__
