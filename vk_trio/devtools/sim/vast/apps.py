"""The instances' apps (``serve_ports``): HTTP on each running instance's mapped ports, at
127.0.0.1, so that probes and Services reach something real."""

from __future__ import annotations

import functools
import socket as stdlib_socket
from collections.abc import Awaitable, Callable

import trio

from vk_trio.devtools.sim.vast.state import SimInstance, SimState
from vk_trio.http_server import Request, Response, serve_connection


class AppPorts:
    """An instance's mapped TCP ports on 127.0.0.1, for ``serve_ports``.

    Each socket is bound at creation to a port the OS picks (that port is the ``HostPort``
    the API reports), so two instances, or another process, can never collide on it.
    """

    def __init__(self, specs: list[str]) -> None:
        self._sockets: dict[str, stdlib_socket.socket] = {}
        for spec in specs:
            if spec.endswith("/tcp"):
                self._sockets[spec] = self._bind(0)
        self._ports = {spec: sock.getsockname()[1] for spec, sock in self._sockets.items()}

    @staticmethod
    def _bind(port: int) -> stdlib_socket.socket:
        # A numeric loopback bind never blocks: no name lookup, no network.
        sock = stdlib_socket.socket(stdlib_socket.AF_INET, stdlib_socket.SOCK_STREAM)
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def bindings(self) -> dict[str, list[dict[str, str]]]:
        return {
            spec: [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
            for spec, port in self._ports.items()
        }

    async def serve(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        """Answer HTTP on every port until cancelled, then close them (trio takes each
        socket over, so ``rebind`` makes new ones on the same ports)."""
        serve = functools.partial(serve_connection, handler=handler)
        await self.serve_streams(lambda _spec, stream: serve(stream))

    async def serve_streams(
        self, handler: Callable[[str, trio.SocketStream], Awaitable[None]]
    ) -> None:
        """``serve`` with a handler of raw connections, given the port spec they came in on
        (``run_containers`` forwards them into the sandbox)."""
        listeners = []
        for sock in self._sockets.values():
            sock.listen(128)
            listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        try:
            async with trio.open_nursery() as nursery:
                for spec, listener in zip(self._sockets, listeners, strict=True):
                    serve = functools.partial(handler, spec)
                    nursery.start_soon(trio.serve_listeners, serve, [listener])
        finally:
            for listener in listeners:
                listener.socket.close()

    def rebind(self) -> None:
        """Stop listening (connections are refused again), keeping each port."""
        for spec, port in self._ports.items():
            self._sockets[spec].close()
            self._sockets[spec] = self._bind(port)

    def close(self) -> None:
        for sock in self._sockets.values():
            sock.close()


class InstanceApps(SimState):
    """Serves, while the instance runs, the app that answers on its ports."""

    def _serve_app(self, instance: SimInstance, app: AppPorts) -> None:
        if self._nursery is None:
            app.close()
            raise RuntimeError("serve_ports needs the simulator served (await nursery.start)")
        self._nursery.start_soon(self._run_app, instance, app, name=f"app of {instance.id}")

    def _app_up(self, instance: SimInstance) -> bool:
        status, _ = instance.phase(trio.current_time(), self.config.boot_seconds)
        return instance.destroyed_at is None and status == "running"

    async def _run_app(self, instance: SimInstance, app: AppPorts) -> None:
        """Listen on the instance's ports while it runs; refuse connections otherwise.

        Owns the ports' sockets: bound (so nothing else takes the port) from creation,
        listening only while ``running``, closed for good once the instance is destroyed.
        """
        handler = functools.partial(self._app_answer, instance)
        try:
            while True:
                await self.wait_until(
                    lambda _: instance.destroyed_at is not None or self._app_up(instance)
                )
                if instance.destroyed_at is not None:
                    return
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(app.serve, handler)
                    await self.wait_until(lambda _: not self._app_up(instance))
                    nursery.cancel_scope.cancel()
                app.rebind()  # stopped or exited: refused until it runs again
        finally:
            app.close()

    async def _app_answer(self, instance: SimInstance, request: Request) -> Response:
        if instance.id in self.unhealthy_apps:
            return Response.text("simulated app failure", 500)
        running_since = instance.boot_from + self.config.boot_seconds
        if trio.current_time() - running_since < self.config.app_ready_after:
            return Response.text("loading", 503)
        return Response.text("ok")
