#!/usr/bin/env bash
# Lay out the whole root filesystem of the FROM-scratch image in one directory:
#
#   build/rootfs.sh ROOTFS_DIR BINARY
#
# Used by the Dockerfile's builder stage and by `build/image.sh --prebuilt`, so that
# both images hold exactly the same files.  The image is only this directory plus
# ENV/USER/ENTRYPOINT (identical in Dockerfile and build/Containerfile.prebuilt).
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 ROOTFS_DIR BINARY" >&2
    exit 2
fi
ROOTFS="$1"
BINARY="$2"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# The runtime user: distroless's "nonroot" uid/gid, which the Deployment pins too.
RUNTIME_UID=65532

rm -rf "$ROOTFS"
mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp"

# The binary: root-owned and not writable by the runtime user.
install -m 0755 "$BINARY" "$ROOTFS/vk-trio"

# staticx and then PyInstaller unpack the program under $TMPDIR (default /tmp) at every
# start.  Sticky and world-writable like any /tmp, so the image works under whatever uid
# a cluster policy assigns; in the Deployment an emptyDir is mounted over it anyway.
chmod 1777 "$ROOTFS/tmp"

# TLS verification for the Vast API (httpx and OpenSSL read SSL_CERT_FILE; the image
# sets it).  The cluster CA comes from the service-account mount, not from here.
install -m 0644 "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"

# A passwd entry for the runtime uid, so that getpass/expanduser ("~/.kube/config") and
# tools that resolve the user do not fail in an image with no /etc at all.
cat > "$ROOTFS/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:${RUNTIME_UID}:${RUNTIME_UID}:nonroot:/tmp:/sbin/nologin
PASSWD
cat > "$ROOTFS/etc/group" <<GROUP
root:x:0:
nonroot:x:${RUNTIME_UID}:
GROUP
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group"
