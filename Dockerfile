# vk-trio: one static binary in an otherwise empty image.
#
#   build/image.sh                      # buildah bud / podman build / docker build
#   docker build -t ghcr.io/vk-trio/vk-trio:0.1.0 .
#
# Stage 1 freezes the app with PyInstaller and makes it static with staticx (see
# build/build.sh).  Stage 2 is FROM scratch: no shell, no libc, no package manager;
# only the binary, CA certificates, a passwd entry and an empty /tmp.

# Overridable so a mirror or a pinned digest can be used.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Optional: a CA bundle for pip behind a TLS-intercepting proxy, bind-mounted by
# `BUILD_CA_BUNDLE=... build/image.sh` (buildah/podman -v).  Never copied into an image.
ARG PIP_CERT
# binutils: strip/objcopy for PyInstaller --strip and staticx; patchelf: staticx, and
# removing RUNPATHs; ca-certificates: the bundle copied into the final image.
# Unpinned on purpose: Debian drops superseded versions from the stable archive at each
# point release, so a pin breaks the build within months; the base image tag pins the
# release, the tools never reach the final image, and the CA bundle should be current.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils patchelf ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from pyproject.toml alone (a stub package satisfies the build
# backend), so that editing the source does not re-download them.
COPY pyproject.toml README.md ./
RUN mkdir vk_trio && touch vk_trio/__init__.py \
    && python3 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir ${PIP_CERT:+--cert "$PIP_CERT"} \
        ".[build]" "staticx>=0.14" \
    && /opt/build/bin/pip uninstall -y vk-trio \
    && rm -rf vk_trio
COPY vk_trio ./vk_trio
# Bundled into the binary: `vk-trio demo` applies them by default.
COPY deployments/examples ./deployments/examples
COPY build/entry.py build/vk-trio.spec build/build.sh build/rootfs.sh ./build/
RUN PYTHON=/opt/build/bin/python OUT=/out build/build.sh \
    && build/rootfs.sh /rootfs /out/vk-trio

# Keep everything below identical to build/Containerfile.prebuilt.
FROM scratch
COPY --from=builder /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    TMPDIR=/tmp \
    HOME=/tmp
USER 65532:65532
EXPOSE 10250 10255
# The node itself; `docker run IMAGE --help` or `--node-name x` add flags to `run`.
ENTRYPOINT ["/vk-trio", "run"]
