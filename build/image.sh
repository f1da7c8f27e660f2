#!/usr/bin/env bash
# Build the vk-trio container image without needing a Docker engine.
#
#   build/image.sh                 # the multi-stage Dockerfile (pulls python:3.11-slim-bookworm)
#   build/image.sh --prebuilt      # FROM scratch + the binary from build/build.sh (offline)
#   TAG=registry.example/vk-trio:dev build/image.sh
#
# Uses buildah if installed, else podman, else docker.  With buildah/podman the storage
# driver defaults to vfs: slower and bigger on disk than overlay, but it works inside
# containers and VMs without fuse-overlayfs or an overlay-capable kernel.  RUN steps use
# runc (buildah's BUILDAH_ISOLATION / podman's defaults still apply if you set them).
#
# Environment knobs:
#   TAG              image name (default ghcr.io/vk-trio/vk-trio:0.1.0, the manifest's)
#   STORAGE_DRIVER   containers/storage driver for buildah/podman (default vfs)
#   PYTHON_IMAGE     builder base image for the Dockerfile build
#   BUILD_CA_BUNDLE  CA bundle for pip in the builder stage (TLS-intercepting proxies);
#                    bind-mounted for the build only (buildah/podman), never in the image
#   CA_BUNDLE        with --prebuilt: the bundle put in the image (default: this host's
#                    /etc/ssl/certs/ca-certificates.crt, which includes any local CA)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$ROOT/build/out}"
TAG="${TAG:-ghcr.io/vk-trio/vk-trio:0.1.0}"
PREBUILT=0
REBUILD=0

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prebuilt) PREBUILT=1 ;;
        --rebuild) REBUILD=1 ;;  # with --prebuilt: run build/build.sh even if a binary exists
        --tag) TAG="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "image.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

build_args=()
if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    build_args+=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE")
fi
if [[ -n "${BUILD_CA_BUNDLE:-}" ]]; then
    build_args+=(-v "$BUILD_CA_BUNDLE:/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
fi

if command -v buildah >/dev/null; then
    export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
    builder=(buildah bud --storage-driver "$STORAGE_DRIVER" --runtime runc --layers)
elif command -v podman >/dev/null; then
    export STORAGE_DRIVER="${STORAGE_DRIVER:-vfs}"
    builder=(podman --storage-driver "$STORAGE_DRIVER" --runtime runc build --layers)
elif command -v docker >/dev/null; then
    builder=(docker build)
    if [[ -n "${BUILD_CA_BUNDLE:-}" ]]; then
        echo "image.sh: BUILD_CA_BUNDLE needs buildah or podman (docker build has no -v)" >&2
        exit 1
    fi
else
    echo "image.sh: none of buildah, podman, docker is installed" >&2
    echo "          (Debian: apt-get install -y buildah podman runc)" >&2
    exit 1
fi

if [[ "$PREBUILT" == 1 ]]; then
    if [[ "$REBUILD" == 1 || ! -x "$OUT/vk-trio" ]]; then
        "$ROOT/build/build.sh"
    fi
    # A context holding only the root filesystem: nothing else is sent or copied.
    context="$OUT/image"
    "$ROOT/build/rootfs.sh" "$context/rootfs" "$OUT/vk-trio"
    containerfile="$ROOT/build/Containerfile.prebuilt"
else
    context="$ROOT"
    containerfile="$ROOT/Dockerfile"
fi

echo "image.sh: ${builder[*]} -t $TAG -f $containerfile $context" >&2
"${builder[@]}" "${build_args[@]}" -t "$TAG" -f "$containerfile" "$context"
echo "image.sh: built $TAG" >&2
