# syntax=docker/dockerfile:1
#
# Routeway's one image: `routeway operator` (the chart's default) and `routeway proxy` (the
# pods the operator creates for each ModelGateway) run from it.
#
#   docker build -t routeway:dev .
#   docker run --rm routeway:dev proxy --help
#   kind load docker-image routeway:dev     # then: helm install ... --set image.tag=dev
#
# Without Docker (development machines, CI): scripts/build-image builds it with buildah, and
# tests/process/test_image.py runs the result as the chart runs it (scripts/test-image).
#
# Two stages: the builder turns the source into a wheel and installs it with its dependencies
# into /opt/venv; the final stage copies only that venv, so no compiler, pip, source tree,
# test or build tool reaches the image. The bases are pinned by tag; pin them by digest as well
# (python:3.11-slim-bookworm@sha256:...) in a release pipeline for bit-for-bit rebuilds.
# RUNTIME_IMAGE may be a smaller image with the same Python at the same path (scripts/build-image
# makes one from Debian's packages); it defaults to the builder's base.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Every runtime dependency (aiohttp, orjson, pydantic-core, uvloop, ...) ships manylinux wheels
# for amd64 and arm64, so no compiler is installed; --only-binary makes a missing wheel fail the
# build loudly instead of silently needing one.
# Only what the wheel is built from (see .dockerignore): the packages routeway/,
# operator/routeway_operator/ and proxy/routeway_proxy/, and README.md named as the readme.
COPY pyproject.toml README.md ./
COPY routeway/ routeway/
COPY operator/ operator/
COPY proxy/ proxy/
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: /wheels/*.whl \
 && /opt/venv/bin/pip uninstall --yes pip setuptools \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="routeway" \
      org.opencontainers.image.description="Kubernetes-native AI model gateway: operator and proxy" \
      org.opencontainers.image.licenses="Apache-2.0"
# The runtime needs only the interpreter: a base that brings its own pip (python:*-slim does)
# loses it here, so nothing in the image can install code at run time.
RUN (python3 -m pip uninstall --yes --quiet pip setuptools wheel >/dev/null 2>&1 || true) \
 && groupadd --gid 10001 routeway \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin routeway
COPY --from=builder /opt/venv /opt/venv
# The chart mounts a read-only root filesystem with an emptyDir at /tmp; bytecode was compiled
# at install time, so nothing needs to be written next to the code.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A fixed numeric UID/GID: the chart's securityContext (runAsUser 10001, runAsNonRoot) and
# Pod Security "restricted" can verify a numeric USER without reading /etc/passwd.
USER 10001:10001
# 8080: operator liveness (/healthz) and proxy traffic; 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["routeway"]
CMD ["operator"]
