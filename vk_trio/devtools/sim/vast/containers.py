"""``run_containers``: each instance runs its process for real, in a rootless sandbox
(``sandbox.py``), so that a bootstrap script, a download from the simulator, an agent and
the pod's files and process are real in tests, not simulated.

What runs is what Vast runs for ``runtype: "args"`` (vast-api.md §4.1): argv
``[onstart, *args]`` (``onstart`` replaces the image's ENTRYPOINT, as ``docker run
--entrypoint`` does, and with it CMD); without ``onstart``, Docker's rule on the image's
config: ENTRYPOINT + (``args`` or CMD); nothing at all is Docker's "OCI runtime create
failed". The environment is the image's ENV under the create body's ``env`` less the Docker
option keys (``-p``, ``-e``, ``-v``, ``-h``), plus ``PATH``, ``HOME`` and ``HOSTNAME`` as
Docker sets them; the working directory is the image's WORKDIR. The image is the host's
userland, or the ``--image-root`` directory its name matches (``images.py``).

The instance's status follows the process: it is started when the simulated boot completes
and the instance shows ``running`` once it has; it shows ``exited`` with the process's code
once it ends. Stop, outbid, an offline host, an injected exit and destroy kill the sandbox;
a start boots anew and runs the process again. The process's output is the instance's log
(the last MiB). Each ``-p N`` port is a random port on 127.0.0.1 forwarded to 127.0.0.1:N in
the sandbox while the process runs; inside, only the simulator's own port is reachable, and
the host's loopback ports listed in ``reachable`` (``--reach``: a registry simulator).
"""

from __future__ import annotations

import functools
import re
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio
from loguru import logger

from vk_trio.devtools.sim.vast.apps import AppPorts, InstanceApps
from vk_trio.devtools.sim.vast.images import OciConfig, image_configs, resolve_image
from vk_trio.devtools.sim.vast.sandbox import (
    Sandbox,
    SandboxError,
    SandboxSpec,
    copy_stream,
    open_sandbox,
    probe,
)
from vk_trio.devtools.sim.vast.state import OutputLog, SimInstance
from vk_trio.http_server import Request, Response, serve_connection

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""Docker's ``PATH`` for an image that sets none."""

NO_CONFIG = OciConfig()
"""An image that sets nothing (the host's userland, an image given no config)."""

_DOCKER_OPTION = re.compile(r"-[pevh]\s")


def container_argv(body: Mapping[str, Any], image: OciConfig = NO_CONFIG) -> list[str]:
    """``[onstart, *args]``, or without ``onstart`` ENTRYPOINT + (``args`` or CMD)."""
    onstart = body.get("onstart")
    args = [str(arg) for arg in body.get("args") or []]
    if onstart:
        return [str(onstart), *args]
    return [*(image.entrypoint or []), *(args or image.cmd or [])]


def container_env(
    body: Mapping[str, Any], hostname: str, image: OciConfig = NO_CONFIG
) -> dict[str, str]:
    """The process's environment: the image's ENV, then ``env`` without Docker options, as
    Docker completes it (``PATH`` and ``HOME`` when neither sets them, ``HOSTNAME``)."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root"}
    for item in image.env or []:
        key, _, value = item.partition("=")
        env[key] = value
    for key, value in (body.get("env") or {}).items():
        if not _DOCKER_OPTION.match(str(key).strip() + " "):
            env[str(key)] = str(value)
    env["HOSTNAME"] = hostname
    return env


GPU_ENV = {
    "VK_SIM_GPU_NAME": "gpu_name",
    "VK_SIM_NUM_GPUS": "num_gpus",
    "VK_SIM_GPU_RAM_MB": "gpu_ram",
    "VK_SIM_DRIVER_VERSION": "driver_version",
    "VK_SIM_CUDA_VERSION": "cuda_max_good",
}
"""The simulator's own variables → the offer fields they carry, in every process it runs."""


def gpu_env(offer: Mapping[str, Any]) -> dict[str, str]:
    """What the instance's machine has, for a stand-in ``nvidia-smi`` (``devtools/standins``)
    to print: a sandbox has no GPU and no driver to ask, where on Vast the NVIDIA runtime
    mounts the host's ``nvidia-smi`` into the container. Under the image's and the create's
    variables, which win; named ``VK_SIM_*`` so that no one takes them for Vast's."""
    return {name: str(offer[field]) for name, field in GPU_ENV.items() if field in offer}


async def _forward(sandbox: Sandbox, spec: str, stream: trio.SocketStream) -> None:
    """Splice a host connection to 127.0.0.1:<container port> inside (closed if refused)."""
    async with stream:
        try:
            inner = await sandbox.connect(int(spec.split("/")[0]))
        except OSError:
            return
        async with inner, trio.open_nursery() as nursery:
            nursery.start_soon(copy_stream, stream, inner, nursery.cancel_scope)
            nursery.start_soon(copy_stream, inner, stream, nursery.cancel_scope)


class InstanceContainers(InstanceApps):
    """Runs each instance's process in a sandbox (``run_containers``), and serves files."""

    _sandbox_problem: str | None = "not probed"
    """Why sandboxes cannot be made here (None: they can); set by ``_prepare_containers``."""

    async def handle(self, request: Request) -> Response:
        """The simulator's HTTP handler (``VastSim.handle``): what the sandbox reaches."""
        raise NotImplementedError

    @property
    def runs_containers(self) -> bool:
        """Whether instances run their process (``run_containers``, and it works here)."""
        return self.config.run_containers and self._sandbox_problem is None

    async def _prepare_containers(self) -> None:
        """Probe once, at start, whether sandboxes can be made; say so once if not."""
        if not self.config.run_containers:
            return
        self._sandbox_problem = await probe()
        if self._sandbox_problem:
            logger.warning(
                "vast sim: --run-containers: instances cannot run their process here: {}; "
                "falling back to --serve-ports",
                self._sandbox_problem,
            )

    def image_configs(self) -> dict[str, Any]:
        """Image name → config document for every image given a config (``--image-config``
        or a root's own file): for ``RegistrySim.add_image_configs``, so that the node's
        registry client reads the config the instance runs."""
        return image_configs(self.config.image_roots, self.config.image_configs)

    def _image(self, instance: SimInstance) -> tuple[str | None, OciConfig]:
        """The instance's root (None: the host's) and config; a config file that cannot
        be read is logged and taken as empty (the image then runs only ``onstart``)."""
        image = str(instance.body.get("image") or "")
        try:
            return resolve_image(image, self.config.image_roots, self.config.image_configs)
        except (OSError, ValueError) as exc:  # msgspec's errors are ValueErrors
            logger.warning("vast sim: unreadable image config", image=image, error=str(exc))
            return None, NO_CONFIG

    def serve_file(self, url_path: str, file: str | Path) -> None:
        """Answer ``GET url_path`` with the bytes of ``file`` (read at each request)."""
        self.served_files["/" + url_path.lstrip("/")] = str(file)

    async def _served_file(self, path: str) -> Response:
        try:
            data = await trio.to_thread.run_sync(Path(self.served_files[path]).read_bytes)
        except OSError as exc:
            return Response.text(f"cannot read the served file: {exc}", 500)
        return Response(body=data, headers=[("Content-Type", "application/octet-stream")])

    def _start_container(self, instance: SimInstance, ports: AppPorts) -> None:
        """Run the instance's process in a sandbox each time it boots, until destroyed."""
        if self._nursery is None:
            ports.close()
            raise RuntimeError("run_containers needs the simulator served (nursery.start)")
        instance.output = OutputLog()
        instance.container_up = False
        if not container_argv(instance.body, self._image(instance)[1]):
            instance.oci_failure = True  # no entrypoint, no command: nothing to exec
        self._nursery.start_soon(self._run_container, instance, ports, name=f"{instance.id}")

    def _due(self, instance: SimInstance) -> bool:
        """The boot is complete and the process of this boot has not started yet."""
        now, boot = trio.current_time(), self.config.boot_seconds
        status, _ = instance.phase(now, boot)
        booted = now >= instance.boot_from + boot and not instance.stuck_loading
        return status == "loading" and instance.container_up is False and booted

    def _up(self, instance: SimInstance) -> bool:
        status, _ = instance.phase(trio.current_time(), self.config.boot_seconds)
        return instance.destroyed_at is None and status == "running"

    async def _run_container(self, instance: SimInstance, ports: AppPorts) -> None:
        """Owns the instance's sandbox and ports: one run per boot, all gone once destroyed."""
        try:
            while True:
                await self.wait_until(
                    lambda _: instance.destroyed_at is not None or self._due(instance)
                )
                if instance.destroyed_at is not None:
                    return
                await self._run_once(instance, ports)
        finally:
            ports.close()

    async def _run_once(self, instance: SimInstance, ports: AppPorts) -> None:
        assert self.url is not None and instance.output is not None
        hostname = f"C.{instance.id}"
        root, image = self._image(instance)
        spec = SandboxSpec(
            argv=container_argv(instance.body, image),
            env={**gpu_env(instance.offer), **container_env(instance.body, hostname, image)},
            hostname=hostname,
            sim_port=urllib.parse.urlsplit(self.url).port or 80,
            reach=tuple(self.config.reachable),
            image_root=root,
            workdir=image.working_dir or "/",
        )
        serve_sim = functools.partial(serve_connection, handler=self.handle)
        try:
            async with open_sandbox(
                spec, on_output=instance.output.append, serve_sim=serve_sim
            ) as sandbox:
                instance.container_up = True
                instance.process_started = time.time()
                self._notify()
                logger.info("vast sim: process started", instance_id=instance.id)
                code = await self._while_running(instance, ports, sandbox)
                if code is not None:  # now, not once the sandbox is cleaned up
                    instance.exit_at, instance.exit_code = trio.current_time(), code
                    self._notify()
                    logger.info("vast sim: process exited", instance_id=instance.id, code=code)
        except SandboxError as exc:
            self._failed_to_start(instance, spec, exc)
        finally:
            instance.container_up = False
            ports.rebind()  # refused until it runs again
        self._notify()

    async def _while_running(
        self, instance: SimInstance, ports: AppPorts, sandbox: Sandbox
    ) -> int | None:
        """Forward the ports until the process exits (its code) or the instance stops
        running (None: stopped, destroyed, offline... the sandbox is then killed)."""
        codes: list[int] = []

        async def until_exit(scope: trio.CancelScope) -> None:
            codes.append(await sandbox.wait())
            scope.cancel()

        async def until_down(scope: trio.CancelScope) -> None:
            await self.wait_until(lambda _: not self._up(instance))
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ports.serve_streams, functools.partial(_forward, sandbox))
            nursery.start_soon(until_exit, nursery.cancel_scope)
            nursery.start_soon(until_down, nursery.cancel_scope)
        return codes[0] if codes else None

    def _failed_to_start(self, instance: SimInstance, spec: SandboxSpec, exc: SandboxError) -> None:
        """The command could not be exec'd (or the sandbox made): Docker's OCI failure."""
        instance.oci_failure = True
        instance.oci_command = spec.argv[0]
        logger.warning(
            "vast sim: the instance's process could not start",
            instance_id=instance.id,
            error=str(exc),
            exec_failed=exc.exec_failed,
        )
