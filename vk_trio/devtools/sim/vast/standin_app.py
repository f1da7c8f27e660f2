"""A stand-in for an image's server (``vk-trio demo``): answers HTTP 200 on the given ports.

The demo's examples name real images (``vllm/vllm-openai``, ``ghcr.io/coqui-ai/tts``) that
cannot run here (no registry pull, no GPU, gigabytes). The demo gives those images a config
whose ENTRYPOINT is this script (``vk_trio/devtools/standins.py``), so that their instances
run a real process that answers on the ports the pods publish: the node's probes and the
Services' endpoints reach something, and the instance's log says what it stands in for.

Run by path with the simulator's interpreter (``python -I standin_app.py --name NAME --ports
8000,8001 -- ARGS...``), inside the sandbox: standard library only. ``ARGS`` are the pod's
own arguments (``--model ...``), printed, not used.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    """200 ``ok`` on any path; no access log (the instance's log stays the app's story)."""

    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="standin_app")
    parser.add_argument("--name", required=True, help="the image this stands in for")
    parser.add_argument("--ports", required=True, help="comma-separated TCP ports to answer on")
    parser.add_argument("args", nargs="*", help="the pod's own arguments (shown, not used)")
    options = parser.parse_args(argv)
    ports = [int(port) for port in options.ports.split(",") if port]
    servers = [http.server.ThreadingHTTPServer(("", port), _Handler) for port in ports]
    shown = " ".join(options.args) or "none"
    print(f"stand-in for {options.name}: answering HTTP on {options.ports} (args: {shown})")
    sys.stdout.flush()
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
