"""The process runner: both simulators and ``vk-trio run``, each its own OS process.

Separate processes, because a SIGKILL must kill the node and nothing else: the simulators
keep every piece of state (Vast's instances, Kubernetes' pods) across the node's deaths, as
the real services do. Every child writes its logs to a file in the run directory (a pipe
that nobody reads could fill up and stall it); the node gets one log file per incarnation,
so the lines around each kill can be read later.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import trio

STARTUP_SECONDS = 60.0
"""How long a simulator may take to print its URL (imports are slow on a busy machine)."""


Popen = subprocess.Popen[bytes]


class ChildFailed(Exception):
    """A child process exited on its own, or never became ready; the message names its log."""


def _spawn(args: list[str], *, log: Path, out: Path | None, env: dict[str, str] | None) -> Popen:
    with log.open("ab") as log_file:
        if out is None:
            return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        with out.open("wb") as out_file:
            return subprocess.Popen(args, stdout=out_file, stderr=log_file, env=env)


async def start_simulator(run_dir: Path, kind: str, *args: str) -> tuple[Popen, str]:
    """Start ``vk-trio sim KIND ARGS`` and return it with the URL it prints first."""
    out = run_dir / f"sim-{kind}.out"
    log = run_dir / f"sim-{kind}.log"
    command = [sys.executable, "-m", "vk_trio", "sim", kind, "--listen", "127.0.0.1:0", *args]
    process = _spawn(command, log=log, out=out, env=None)
    with trio.move_on_after(STARTUP_SECONDS):
        while process.poll() is None:
            first = out.read_text().partition("\n")
            if first[1]:
                return process, first[0].strip()
            await trio.sleep(0.05)
    process.kill()
    raise ChildFailed(f"the {kind} simulator did not start; see {log}")


class NodeProcess:
    """``vk-trio run`` under the harness's control: started, SIGKILLed, started again."""

    def __init__(
        self, run_dir: Path, *, env: dict[str, str], flags: list[str], name: str = "node"
    ) -> None:
        self._run_dir = run_dir
        self.name = name
        """Its logs' prefix: ``node`` alone, ``node-a``/``node-b`` for replicas."""
        port = _free_port()
        self.health_url = f"http://127.0.0.1:{port}"
        """The same port for every incarnation, so readiness can be asked at any time."""
        # The kubelet API too, on loopback: never 0.0.0.0:10250 on a developer's machine.
        kubelet = {"KUBELET_HOST": "127.0.0.1", "KUBELET_PORT": str(_free_port())}
        self._env = {**os.environ, **env, **kubelet, "HEALTH_PORT": str(port)}
        self._flags = flags
        self._process: Popen | None = None
        self.incarnations = 0
        """How many times the node was started."""
        self.kills = 0

    @property
    def log(self) -> Path:
        """The current incarnation's log (JSON lines, stdout and stderr together)."""
        return self._run_dir / f"{self.name}-{self.incarnations - 1}.log"

    def start(self, env: dict[str, str] | None = None) -> None:
        """Start an incarnation; ``env`` changes its environment from now on."""
        self._env.update(env or {})
        self.incarnations += 1
        command = [sys.executable, "-m", "vk_trio", "run", *self._flags]
        self._process = _spawn(command, log=self.log, out=None, env=self._env)

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye; returns once the process is gone."""
        process = self._require()
        self.check()
        self._process = None  # from here on, its exit is expected
        process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(process.wait)
        self.kills += 1

    async def wait_ready(self) -> None:
        """Return once ``/readyz`` answers 200: the node is registered, its pod watch has
        listed every pod and Vast answers. Until then, pod statuses are the last incarnation's
        and prove nothing about this one."""
        async with httpx.AsyncClient(base_url=self.health_url, timeout=2.0) as probe:
            while True:
                self.check()
                try:
                    if (await probe.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await trio.sleep(0.2)

    def check(self) -> None:
        """Raise ``ChildFailed`` if the node exited without being killed (a crash, bad flags)."""
        if self._process is not None and self._process.poll() is not None:
            raise ChildFailed(
                f"vk-trio run exited with status {self._process.returncode}; see {self.log}"
            )

    def stop(self) -> None:
        """SIGTERM at the end of the soak, as Kubernetes would (SIGKILL if it hangs)."""
        if self._process is None:
            return
        stop(self._process)
        self._process = None

    def _require(self) -> Popen:
        if self._process is None:
            raise RuntimeError("the node is not running")
        return self._process


class Replicas:
    """Several ``vk-trio run --leader-elect`` of one node (``--replicas``); the interface of
    ``NodeProcess``, where a kill is a SIGKILL of the replica that leads.

    The leader is the replica whose ``/readyz`` is not a standby's (``standby: leader is X``);
    mid-takeover, when none leads yet, a random replica is killed. A killed replica is
    started again by the soak, either in place (the same pod name, as when its container is
    restarted: it may take its own Lease back at once) or as a new pod (a new name, as when
    the pod is replaced: the standby takes over once the Lease expires), by a seeded draw.
    """

    def __init__(
        self, run_dir: Path, *, env: dict[str, str], flags: list[str], count: int, seed: int
    ) -> None:
        self.members = [
            NodeProcess(
                run_dir,
                env={
                    **env,
                    "LEADER_ELECT": "true",
                    "POD_NAMESPACE": "kube-system",
                    "POD_NAME": f"replica-{chr(ord('a') + i)}",
                },
                flags=flags,
                name=f"node-{chr(ord('a') + i)}",
            )
            for i in range(count)
        ]
        self._rng = random.Random(f"{seed}:replicas")
        self._killed: NodeProcess | None = None
        self.kills = 0

    @property
    def incarnations(self) -> int:
        return sum(member.incarnations for member in self.members)

    def start(self) -> None:
        """All replicas at first; after a kill, the one killed."""
        if self._killed is not None:
            replaced = self._rng.random() < 0.5
            name = f"{self._killed.name.replace('node', 'replica')}-{self._killed.incarnations}"
            self._killed.start({"POD_NAME": name} if replaced else None)
            self._killed = None
            return
        for member in self.members:
            member.start()

    async def kill(self) -> None:
        roles = [await _readyz(member) for member in self.members]
        leading = [m for m, body in zip(self.members, roles, strict=True) if body == "ok"]
        victim = leading[0] if leading else self._rng.choice(self.members)
        await victim.kill()
        self._killed = victim
        self.kills += 1

    async def wait_ready(self) -> None:
        """Return once a replica leads and is ready (``/readyz`` 200 ``ok``)."""
        while True:
            self.check()
            for member in self.members:
                if await _readyz(member) == "ok":
                    return
            await trio.sleep(0.2)

    def check(self) -> None:
        for member in self.members:
            member.check()

    def stop(self) -> None:
        for member in self.members:
            member.stop()


async def _readyz(node: NodeProcess) -> str | None:
    """The body of a 200 from ``/readyz`` (``ok`` or ``standby: leader is X``), else None."""
    async with httpx.AsyncClient(base_url=node.health_url, timeout=2.0) as probe:
        try:
            answer = await probe.get("/readyz")
        except httpx.TransportError:
            return None
    return answer.text.strip() if answer.status_code == 200 else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop(process: Popen) -> None:
    """Terminate a child and reap it, killing it after 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
