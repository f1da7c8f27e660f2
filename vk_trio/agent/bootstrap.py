"""The instance's entrypoint: a POSIX ``sh`` script that fetches the agent and ``exec``s it.

Vast runs the pod's image with this as the entrypoint override (``onstart: "sh"``, ``args:
["-c", SCRIPT]``). It needs only ``/bin/sh`` and one way to download: curl, wget (busybox's
too) or python3. It checks the download's SHA-256 against the one the node passes (with
sha256sum, busybox, python3 or openssl), then ``exec``s ``vk-trio agent``, which runs the
pod's processes. What it cannot do, it says on stderr (the instance's log) and exits with a
code of its own (:data:`EXIT_REASONS`), so the node can say why on the pod.

Where the agent comes from, in the node's order of preference:

- ``VK_TRIO_AGENT_URL`` (the node's ``--agent-url``): the binary itself, checked against
  ``VK_TRIO_AGENT_SHA256``;
- else ``VK_TRIO_AGENT_LAYER``: the URL of the registry blob of the node's own image that
  holds ``/vk-trio`` (a gzip'd tar), checked against ``VK_TRIO_AGENT_LAYER_SHA256`` (the
  layer's digest, of the compressed bytes), then unpacked with ``tar -xzf`` (GNU or busybox)
  or python3's ``tarfile``. When ``VK_TRIO_AGENT_TOKEN_URL`` is set, an anonymous pull token
  is asked there first, at each try, and sent as ``Authorization: Bearer``: the bootstrap
  asks itself, since a token the node got would expire (minutes) before a slow instance
  boots (up to an hour). The JSON answer is read with ``sed`` (``token``, else
  ``access_token``): nothing else is needed to parse it.

curl sends the token only to the registry (it drops ``Authorization`` on a redirect to
another host, the blob storage); python3 is told the same (``add_unredirected_header``).
"""

from __future__ import annotations

__all__ = [
    "AGENT_LAYER_ENV",
    "AGENT_LAYER_SHA256_ENV",
    "AGENT_SHA256_ENV",
    "AGENT_TOKEN_URL_ENV",
    "AGENT_URL_ENV",
    "EXIT_REASONS",
    "SCRIPT",
]

AGENT_URL_ENV = "VK_TRIO_AGENT_URL"
AGENT_SHA256_ENV = "VK_TRIO_AGENT_SHA256"
AGENT_LAYER_ENV = "VK_TRIO_AGENT_LAYER"
AGENT_LAYER_SHA256_ENV = "VK_TRIO_AGENT_LAYER_SHA256"
AGENT_TOKEN_URL_ENV = "VK_TRIO_AGENT_TOKEN_URL"

NO_DIRECTORY = 90
NO_FETCHER = 91
FETCH_FAILED = 92
NO_HASHER = 93
WRONG_CHECKSUM = 94
NOT_UNPACKED = 95

EXIT_REASONS = {
    NO_DIRECTORY: "the agent's bootstrap could not create a directory to download into",
    NO_FETCHER: "the image has no curl, wget or python3 to download the vk-trio agent with",
    FETCH_FAILED: "the vk-trio agent could not be downloaded (see the instance's log)",
    NO_HASHER: "the image has no sha256sum, busybox, python3 or openssl to check the agent with",
    WRONG_CHECKSUM: "the downloaded vk-trio agent does not have the expected SHA-256",
    NOT_UNPACKED: "the vk-trio agent could not be unpacked from the node image's layer (no tar "
    "with gzip or python3 in the image, or no vk-trio in the layer)",
}
"""The bootstrap's own exit codes (90-95, unlike any shell's) → what the pod shows."""

SCRIPT = f"""\
set -u
say() {{ echo "vk-trio-bootstrap: $*" >&2; }}
dir="${{VK_TRIO_AGENT_DIR:-/.vk-trio}}"
mkdir -p "$dir" 2>/dev/null || {{ dir=/tmp/.vk-trio; mkdir -p "$dir"; }} || exit {NO_DIRECTORY}
bin="$dir/vk-trio"
url="${{{AGENT_URL_ENV}:-}}"
want="${{{AGENT_SHA256_ENV}:-}}"
token_url=""
out="$bin.part"
if [ -z "$url" ] && [ -n "${{{AGENT_LAYER_ENV}:-}}" ]; then
  url="${{{AGENT_LAYER_ENV}}}"
  want="${{{AGENT_LAYER_SHA256_ENV}:-}}"
  token_url="${{{AGENT_TOKEN_URL_ENV}:-}}"
  out="$dir/layer.tar.gz"
fi
if [ -z "$url" ]; then say "no {AGENT_URL_ENV} or {AGENT_LAYER_ENV}"; exit {FETCH_FAILED}; fi
get() {{
  if command -v curl >/dev/null 2>&1; then
    if [ -n "$3" ]; then curl -fsSL -H "$3" -o "$2" "$1"; else curl -fsSL -o "$2" "$1"; fi
  elif command -v wget >/dev/null 2>&1; then
    if [ -n "$3" ]; then wget -q --header "$3" -O "$2" "$1"; else wget -q -O "$2" "$1"; fi
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1])
if sys.argv[3]: r.add_unredirected_header(*sys.argv[3].split(": ", 1))
open(sys.argv[2], "wb").write(u.urlopen(r, timeout=600).read())' "$1" "$2" "$3"
  else say "the image has no curl, wget or python3 to download the agent"; exit {NO_FETCHER}
  fi
}}
field() {{
  sed -n "s/.*\\"$1\\"[[:space:]]*:[[:space:]]*\\"\\([^\\"]*\\)\\".*/\\1/p" "$dir/token.json" \\
    | head -n 1
}}
fetch() {{
  auth=""
  if [ -n "$token_url" ]; then
    get "$token_url" "$dir/token.json" "" || return 1
    tok="$(field token)"
    [ -n "$tok" ] || tok="$(field access_token)"
    if [ -z "$tok" ]; then say "no token in the answer of the registry's token server"; return 1; fi
    auth="Authorization: Bearer $tok"
  fi
  get "$url" "$out" "$auth"
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
unpack() {{
  rm -rf "$dir/layer" && mkdir -p "$dir/layer" || exit {NO_DIRECTORY}
  for member in vk-trio ./vk-trio; do
    if command -v tar >/dev/null 2>&1 && tar -xzf "$out" -C "$dir/layer" "$member" 2>/dev/null \\
      && [ -f "$dir/layer/vk-trio" ]; then
      mv -f "$dir/layer/vk-trio" "$bin.part" && return 0
    fi
  done
  command -v python3 >/dev/null 2>&1 && python3 -c 'import sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    m = next(m for m in t.getmembers() if m.isfile() and m.name.lstrip("./") == "vk-trio")
    open(sys.argv[2], "wb").write(t.extractfile(m).read())' "$out" "$bin.part" 2>/dev/null
}}
tries=0
until fetch; do
  tries=$((tries + 1))
  if [ "$tries" -ge 5 ]; then say "could not download the agent from $url"; exit {FETCH_FAILED}; fi
  sleep "$tries"
done
got="$(digest "$out")" || exit {NO_HASHER}
got="${{got%% *}}"
if [ "$got" != "$want" ]; then
  say "the agent downloaded from $url has SHA-256 $got, not $want"
  exit {WRONG_CHECKSUM}
fi
if [ "$out" != "$bin.part" ]; then
  unpack || {{ say "no vk-trio could be unpacked from the layer $url"; exit {NOT_UNPACKED}; }}
  rm -rf "$out" "$dir/layer" "$dir/token.json"
fi
chmod 0755 "$bin.part" && mv -f "$bin.part" "$bin" || exit {NO_DIRECTORY}
say "starting the vk-trio agent"
exec "$bin" agent
"""
