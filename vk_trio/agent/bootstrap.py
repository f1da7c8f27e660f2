"""The instance's entrypoint: a POSIX ``sh`` script that fetches the agent and ``exec``s it.

Vast runs the pod's image with this as the entrypoint override (``onstart: "sh"``, ``args:
["-c", SCRIPT]``). It needs only ``/bin/sh`` and one way to download: curl, wget (busybox's
too) or python3. It checks the download's SHA-256 against the one the node passes (with
sha256sum, busybox, python3 or openssl), then ``exec``s ``vk-trio agent``, which runs the
pod's processes. What it cannot do, it says on stderr (the instance's log) and exits with a
code of its own (:data:`EXIT_REASONS`), so the node can say why on the pod.
"""

from __future__ import annotations

__all__ = ["AGENT_SHA256_ENV", "AGENT_URL_ENV", "EXIT_REASONS", "SCRIPT"]

AGENT_URL_ENV = "VK_TRIO_AGENT_URL"
AGENT_SHA256_ENV = "VK_TRIO_AGENT_SHA256"

NO_DIRECTORY = 90
NO_FETCHER = 91
FETCH_FAILED = 92
NO_HASHER = 93
WRONG_CHECKSUM = 94

EXIT_REASONS = {
    NO_DIRECTORY: "the agent's bootstrap could not create a directory to download into",
    NO_FETCHER: "the image has no curl, wget or python3 to download the vk-trio agent with",
    FETCH_FAILED: "the vk-trio agent could not be downloaded (see the instance's log)",
    NO_HASHER: "the image has no sha256sum, busybox, python3 or openssl to check the agent with",
    WRONG_CHECKSUM: "the downloaded vk-trio agent does not have the expected SHA-256",
}
"""The bootstrap's own exit codes (90-94, unlike any shell's) → what the pod shows."""

SCRIPT = f"""\
set -u
say() {{ echo "vk-trio-bootstrap: $*" >&2; }}
dir="${{VK_TRIO_AGENT_DIR:-/.vk-trio}}"
mkdir -p "$dir" 2>/dev/null || {{ dir=/tmp/.vk-trio; mkdir -p "$dir"; }} || exit {NO_DIRECTORY}
bin="$dir/vk-trio"
url="${{{AGENT_URL_ENV}}}"
fetch() {{
  if command -v curl >/dev/null 2>&1; then curl -fsSL -o "$bin.part" "$url"
  elif command -v wget >/dev/null 2>&1; then wget -q -O "$bin.part" "$url"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \\
      "$url" "$bin.part"
  else say "the image has no curl, wget or python3 to download the agent"; exit {NO_FETCHER}
  fi
}}
digest() {{
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1"
  elif command -v busybox >/dev/null 2>&1; then busybox sha256sum "$1"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r "$1"
  else say "the image has no sha256sum, busybox, python3 or openssl"; exit {NO_HASHER}
  fi
}}
tries=0
until fetch; do
  tries=$((tries + 1))
  if [ "$tries" -ge 5 ]; then say "could not download the agent from $url"; exit {FETCH_FAILED}; fi
  sleep "$tries"
done
got="$(digest "$bin.part")" || exit {NO_HASHER}
got="${{got%% *}}"
if [ "$got" != "${{{AGENT_SHA256_ENV}}}" ]; then
  say "the agent downloaded from $url has SHA-256 $got, not ${{{AGENT_SHA256_ENV}}}"
  exit {WRONG_CHECKSUM}
fi
chmod 0755 "$bin.part" && mv -f "$bin.part" "$bin" || exit {NO_DIRECTORY}
say "starting the vk-trio agent"
exec "$bin" agent
"""
