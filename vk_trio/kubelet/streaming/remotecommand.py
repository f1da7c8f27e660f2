"""``kubectl exec`` and ``attach``: the session between the client's streams and the
provider's process (``ProcessIO``), transport-neutral.

A transport hands the session ``Channels``: ``error`` always, and ``stdin``, ``stdout``,
``stderr`` and ``resize`` as the client asked. Over SPDY (``spdy_channels``) each is a stream
the client opens with a ``streamType`` header; the session waits for ``1 + requested``
(``+ resize`` with a terminal on v3+) of them within ``STREAM_CREATION_TIMEOUT``, as the
kubelet's ``waitForStreams`` does. A WebSocket transport builds the same ``Channels`` from
its numbered channels.

``relay`` then copies, each direction in its own task and each waiting on the other side
(nothing buffered beyond one piece): stdin → ``process.write`` (its end → ``close_input``),
the resize stream's concatenated ``{"Width":W,"Height":H}`` objects → ``process.resize``,
and the process's output → stdout/stderr, until the process exits. Then stdout and stderr
are ended and the error channel gets the outcome, and is ended too:

- v4 and v5: one JSON ``metav1.Status``, as ``json.Marshal`` writes it: success
  ``{"metadata":{},"status":"Success"}``; an exec's non-zero exit ``NonZeroExitCode`` with
  the message CRI runtimes give ("command terminated with non-zero exit code: error
  executing command [sh -c ...], exit code 3") and the code as the ``ExitCode`` cause,
  which kubectl turns into its own exit code; a process that broke off (the provider's
  ``ContainerError``) an ``InternalError``;
- v1 to v3: the message as plain text, nothing on success.

An attach ends with success whatever the process's exit code, as the kubelet's does (the
runtime's attach reports no code). A command that could not run (exit 126/127 with a
reason) shows the reason on stderr first, where a shell would print it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec
import trio

from vk_trio.kubelet.streaming.handshake import StreamOptions
from vk_trio.kubelet.streaming.spdy_transport import SpdyStream, SpdyTransport
from vk_trio.node.provider import ContainerError, ProcessExit, ProcessIO

__all__ = [
    "STREAM_CREATION_TIMEOUT",
    "Channels",
    "Sink",
    "Source",
    "StreamsMissing",
    "exit_status",
    "internal_error",
    "relay",
    "spdy_channels",
]

STREAM_CREATION_TIMEOUT = 30.0
"""Seconds the client has to open every stream it asked for (the kubelet's default)."""
MAX_RESIZE_OBJECT = 4096
"""Bytes of resize stream without a whole JSON object before the stream is ignored."""


class Source(Protocol):
    """Bytes from the client; ``b""`` once it ended that stream."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...


class Sink(Protocol):
    """Bytes to the client, and the end of them."""

    async def send_all(self, data: bytes) -> None: ...

    async def send_eof(self) -> None: ...


@dataclass
class Channels:
    """The client's side of one exec or attach, whatever the transport."""

    error: Sink
    stdin: Source | None = None
    stdout: Sink | None = None
    stderr: Sink | None = None
    resize: Source | None = None
    status_json: bool = True
    """v4/v5: the outcome is a JSON Status; before: plain text, nothing on success."""


class StreamsMissing(Exception):
    """The client did not open the streams it asked for in time."""


def _is_v4_plus(protocol: str) -> bool:
    return protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")


async def spdy_channels(
    transport: SpdyTransport,
    protocol: str,
    options: StreamOptions,
    *,
    within: float = STREAM_CREATION_TIMEOUT,
) -> Channels:
    """Wait for the streams ``options`` call for; later or unexpected ones are reset."""
    wanted = {"error"}
    wanted |= {name for name, on in vars(options).items() if on and name != "tty"}
    if options.tty and protocol not in ("v2.channel.k8s.io", "channel.k8s.io"):
        wanted.add("resize")
    streams: dict[str, SpdyStream] = {}
    with trio.move_on_after(within):
        while len(streams) < len(wanted):
            try:
                stream = await transport.accept()
            except trio.EndOfChannel:
                break
            kind = stream.header("streamtype") or ""
            if kind not in wanted or kind in streams:
                await stream.aclose()
                continue
            streams[kind] = stream
    transport.stop_accepting()
    missing = sorted(wanted - streams.keys())
    if missing:
        raise StreamsMissing(f"timed out waiting for streams ({', '.join(missing)})")
    for kind in ("error", "stdout", "stderr"):
        if kind in streams:
            streams[kind].discard_input()
    return Channels(
        error=streams["error"],
        stdin=streams.get("stdin"),
        stdout=streams.get("stdout"),
        stderr=streams.get("stderr"),
        resize=streams.get("resize"),
        status_json=_is_v4_plus(protocol),
    )


def exit_status(exit: ProcessExit, command: Sequence[str] | None) -> dict[str, Any]:
    """The Status of an exec (``command``) or attach (None) that ended with ``exit``."""
    if exit.code == 0 or command is None:
        return {"metadata": {}, "status": "Success"}
    failed = f"error executing command [{' '.join(command)}], exit code {exit.code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {failed}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(exit.code)}]},
    }


def internal_error(message: str) -> dict[str, Any]:
    """``apierrors.NewInternalError`` of the kubelet's "error executing command in container"."""
    cause = f"error executing command in container: {message}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {cause}",
        "reason": "InternalError",
        "details": {"causes": [{"message": cause}]},
        "code": 500,
    }


async def relay(channels: Channels, process: ProcessIO, command: Sequence[str] | None) -> None:
    """Copy between the client and ``process`` until it exits; then the outcome (see the
    module docstring). A client that hangs up raises ``trio.BrokenResourceError``."""
    status: dict[str, Any] | None = None
    hung_up: trio.BrokenResourceError | None = None
    # Errors are caught inside the nursery: it would wrap them in a group.
    async with trio.open_nursery() as nursery:
        if channels.stdin is not None:
            nursery.start_soon(_copy_input, channels.stdin, process)
        if channels.resize is not None:
            nursery.start_soon(_copy_resizes, channels.resize, process)
        try:
            status = exit_status(await _copy_output(process, channels), command)
        except ContainerError as exc:
            status = internal_error(str(exc))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            hung_up = trio.BrokenResourceError(str(exc))
        nursery.cancel_scope.cancel()
    if hung_up is not None or status is None:
        raise hung_up or trio.BrokenResourceError("no outcome")
    for sink in (channels.stdout, channels.stderr):
        if sink is not None:
            await sink.send_eof()
    await _send_status(channels, status)


async def _send_status(channels: Channels, status: dict[str, Any]) -> None:
    if channels.status_json:
        await channels.error.send_all(msgspec.json.encode(status))
    elif status["status"] != "Success":
        await channels.error.send_all(str(status["message"]).encode())
    await channels.error.send_eof()


async def _copy_output(process: ProcessIO, channels: Channels) -> ProcessExit:
    while True:
        piece = await process.receive()
        if isinstance(piece, ProcessExit):
            if piece.code in (126, 127) and piece.message:
                sink = channels.stderr or channels.stdout
                if sink is not None:
                    await sink.send_all(piece.message.rstrip("\n").encode() + b"\n")
            return piece
        sink = channels.stderr if piece.stream == "stderr" else channels.stdout
        if sink is not None and piece.data:
            await sink.send_all(piece.data)


async def _copy_input(stdin: Source, process: ProcessIO) -> None:
    try:
        while data := await stdin.receive_some():
            await process.write(data)
        await process.close_input()
    except ContainerError:
        return  # the process is gone; its exit (or the error) comes through receive()


async def _copy_resizes(resize: Source, process: ProcessIO) -> None:
    """Each ``{"Width":W,"Height":H}`` as it arrives; malformed input ends resizing (as the
    kubelet's decoder loop does), not the session."""
    decoder = json.JSONDecoder()
    buffered = ""
    try:
        while data := await resize.receive_some():
            buffered += data.decode("utf-8", errors="replace")
            while buffered.strip():
                try:
                    size, end = decoder.raw_decode(buffered.lstrip())
                except json.JSONDecodeError:
                    if len(buffered) > MAX_RESIZE_OBJECT:
                        return
                    break
                buffered = buffered.lstrip()[end:]
                if isinstance(size, dict):
                    await process.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
    except (ContainerError, ValueError, TypeError):
        return
