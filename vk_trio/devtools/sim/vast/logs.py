"""Instance logs, in two steps as on the real API: ``request_logs`` answers a URL, which 404s
until the host has "uploaded" the log (``/_sim/logs/<token>.log``, no auth, as S3 URLs are)."""

from __future__ import annotations

import math

import trio

from vk_trio.devtools.sim.vast.config import LOG_POLLS_WHEN_SLOW
from vk_trio.devtools.sim.vast.routes import error_response, json_object_body, path_id
from vk_trio.devtools.sim.vast.state import LogUpload, SimInstance, SimState, digest
from vk_trio.http_server import Request, Response


class LogRoutes(SimState):
    """``PUT /api/v0/instances/request_logs/{id}/`` and ``GET /_sim/logs/{token}.log``."""

    async def _request_logs(self, request: Request, params: dict[str, str]) -> Response:
        instance = self._live(path_id(params))
        if instance is None:
            return error_response(404, "invalid_id", "Invalid instance id.")
        body = json_object_body(request) or {}
        lines = self._log_lines(instance, daemon=str(body.get("daemon_logs")).lower() == "true")
        if body.get("filter"):
            lines = [line for line in lines if str(body["filter"]) in line]
        tail = body.get("tail")
        if tail is not None and str(tail).isdigit():
            lines = lines[-int(tail) :] if int(tail) else []
        token = f"{self._rng.getrandbits(128):032x}"
        upload = LogUpload("".join(line + "\n" for line in lines))
        if self._draw(self.config.faults.logs_missing):
            upload.polls_needed = math.inf
        elif self._draw(self.config.faults.logs_slow):
            upload.polls_needed = LOG_POLLS_WHEN_SLOW
        self._logs[token] = upload
        return Response.json(
            {
                "success": True,
                "result_url": f"{self.url}/_sim/logs/{token}.log",
                "msg": "Logs will be uploaded to the result_url shortly.",
            }
        )

    def _log_lines(self, instance: SimInstance, *, daemon: bool) -> list[str]:
        """Plausible logs for the instance's current phase: the image pull, then the command;
        with ``run_containers``, what its process wrote (as the real log is the container's)."""
        status, message = instance.phase(trio.current_time(), self.config.boot_seconds)
        if daemon:
            return [
                f"vast daemon: contract {instance.id} image {instance.image}",
                f"vast daemon: status {status}: {message}",
            ]
        layers = [digest(instance.id, "layer", i)[:12] for i in range(3)]
        lines = [f"Pulling image {instance.image}"]
        lines += [f"{layer}: Pull complete" for layer in layers]
        lines += [
            f"Digest: sha256:{digest(instance.image)}",
            f"Status: Downloaded newer image for {instance.image}",
        ]
        if status == "created" and instance.oci_failure:
            return [*lines, f"docker: {message}"]
        if instance.output is not None:  # run_containers: the log is the process's output
            return instance.output.lines()
        if status not in ("running", "exited", "offline", "stopped"):
            return lines
        command = " ".join(
            [str(instance.body.get("onstart") or ""), *map(str, instance.body.get("args") or [])]
        ).strip()
        lines += [
            f"Starting container ({instance.runtype})",
            f"+ {command or 'ssh'}",
            f"[{instance.label or instance.id}] service started",
        ]
        lines += self._progress_lines(instance)
        if status == "exited":
            lines.append(f"process exited with code {instance.exit_code}")
        return lines

    def _progress_lines(self, instance: SimInstance) -> list[str]:
        """A line per ``log_interval`` seconds of run time: logs grow while it runs, and the
        same instance at the same moment always has the same lines."""
        running_since = instance.boot_from + self.config.boot_seconds
        ends = [t for t in (instance.exit_at, instance.offline_at) if t is not None]
        until = min([trio.current_time(), *ends])
        count = int(max(0.0, until - running_since) // self.config.log_interval)
        name = instance.label or instance.id
        return [
            f"[{name}] {instance.image}: step {n} done, {n * 12} samples/s"
            for n in range(1, count + 1)
        ]

    async def _fetch_logs(self, request: Request, params: dict[str, str]) -> Response:
        upload = self._logs.get(params["token"])
        if upload is None or upload.polls < upload.polls_needed:
            if upload is not None:
                upload.polls += 1
            return Response.text("<Error><Code>NoSuchKey</Code></Error>", 404)
        return Response.text(upload.text)
