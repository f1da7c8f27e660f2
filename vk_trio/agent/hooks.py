"""A container's lifecycle hooks (``postStart``, ``preStop``), run as the kubelet runs them.

- **exec** runs the command inside the container's world (its env, directory and user: the
  run's :class:`Launch`), with no timeout of its own, as the kubelet passes none; a command
  that exits non-zero (or cannot run) fails the hook, its output in the message.
- **httpGet** asks ``scheme://host:port/path`` with the hook's headers, ``host`` defaulting
  to the container's own address, which inside the instance is 127.0.0.1. As the kubelet,
  only a request that gets no response fails: any status code is an answer, and HTTPS
  certificates are not checked.
- **sleep** waits.

A failure is the kubelet's message (``Exec lifecycle hook ([sh -c exit 1]) for Container
"app" in Pod "web_default(uid)" failed - error: ..., message: "..."``), which becomes the
``FailedPostStartHook`` or ``FailedPreStopHook`` Event.
"""

from __future__ import annotations

import math
import signal
import subprocess

import httpx
import trio

from vk_trio.agent.children import Children
from vk_trio.agent.launch import Launch, LaunchError, find_executable
from vk_trio.agent.process import kill_group, spawn
from vk_trio.agent.protocol import Hook, HttpHook

__all__ = ["go_list", "go_quote_bytes", "run_hook"]

_OUTPUT_LIMIT = 10 * 1024
_USER_AGENT = "kube-lifecycle/1.34"
"""The kubelet's ``User-Agent`` for lifecycle hooks (``kube-lifecycle/<major>.<minor>``)."""


def go_list(items: list[str]) -> str:
    """A string slice as Go's ``%v`` prints it: ``[sh -c exit 1]``."""
    return "[" + " ".join(items) + "]"


def go_quote_bytes(text: str) -> str:
    """Go's ``%q`` of the output, close enough for a message: quotes and escapes."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r") + '"'


async def _exec(command: list[str], launch: Launch, children: Children) -> str | None:
    """Run the command; None when it exited 0, else the error as the CRI reports it."""
    try:
        executable = await trio.to_thread.run_sync(
            find_executable, command[0], launch.env["PATH"], launch.cwd
        )
        process = await spawn(command, executable, launch, children, stderr=subprocess.STDOUT)
    except LaunchError as error:
        return f"{error}, message: {go_quote_bytes('')}"
    except OSError as error:
        return f'exec: "{command[0]}": {error.strerror}, message: {go_quote_bytes("")}'
    output = b""
    try:
        if process.stdout is not None:
            async with process.stdout:
                while data := await process.stdout.receive_some(65536):
                    output = (output + data)[-_OUTPUT_LIMIT:]
        code = await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            kill_group(process.pid, signal.SIGKILL)
            await process.wait()
            children.discard(process.pid)
    if code == 0:
        return None
    text = output.decode(errors="replace")
    return (
        f"command '{' '.join(command)}' exited with {code}: {text}, message: {go_quote_bytes(text)}"
    )


async def _http(hook: HttpHook) -> str | None:
    """GET the hook's URL; None when anything answered, else why nothing did."""
    host = hook.host or "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    path = hook.path if hook.path.startswith("/") else "/" + hook.path
    url = f"{hook.scheme.lower()}://{host}:{hook.port}{path}"
    headers = {"User-Agent": _USER_AGENT, "Accept": "*/*"}
    headers.update(dict(hook.headers))
    try:
        async with httpx.AsyncClient(verify=False, follow_redirects=True, timeout=None) as http:
            await http.get(url, headers=headers)
    except httpx.HTTPError as error:
        return f'Get "{url}": {error or type(error).__name__}'
    return None


async def run_hook(
    hook: Hook, launch: Launch, children: Children, *, container: str, pod: str
) -> str | None:
    """Run one hook to its end; None on success, else the kubelet's failure message.

    ``pod`` is the pod as the kubelet's messages name it (``name_namespace(uid)``). The
    caller bounds the time (a ``preStop`` by the grace period)."""
    if hook.exec is not None:
        error = await _exec(hook.exec, launch, children) if hook.exec else "no command"
        if error is None:
            return None
        return (
            f'Exec lifecycle hook ({go_list(hook.exec)}) for Container "{container}" in Pod '
            f'"{pod}" failed - error: {error}'
        )
    if hook.http is not None:
        error = await _http(hook.http)
        if error is None:
            return None
        return (
            f'HTTP lifecycle hook ({hook.http.path}) for Container "{container}" in Pod '
            f'"{pod}" failed - error: {error}'
        )
    if hook.sleep is not None and hook.sleep > 0 and math.isfinite(hook.sleep):
        await trio.sleep(hook.sleep)
    return None
