# syntax=docker/dockerfile:1
#
# The ModelRollout operator's image: `docker build -t modelrollout-operator .`
#
# Two stages: the builder turns the source into a wheel and fetches the wheels
# of every dependency; the final stage installs them from that folder with no
# network, no compiler and no source tree, and runs as a non-root user.
#
# The base images are pinned by version tag here. CI should pin them by digest
# too (python:3.11.13-slim-bookworm@sha256:...), so that a rebuilt tag cannot
# change the image under the same Dockerfile; Renovate/Dependabot can keep the
# digest fresh.

# ---------------------------------------------------------------------- builder
FROM python:3.11.13-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# .dockerignore keeps the context to pyproject.toml, operator/ and the docs
# pyproject.toml names; the wheel needs nothing else. The local environment
# (devenv/, the modelrollout-devenv distribution) is never in the context, and
# the `report` extra (matplotlib) is not installed: the operator never draws.
COPY . .

# The operator's own wheel (no dependencies: those are the next step) ...
RUN pip wheel --no-deps --wheel-dir /wheels .
# ... and the wheels of everything it depends on, resolved from the one above.
RUN pip wheel --wheel-dir /wheels /wheels/modelrollout-*.whl

# ------------------------------------------------------------------------ final
FROM python:3.11.13-slim-bookworm

ARG VERSION=dev
LABEL org.opencontainers.image.title="modelrollout-operator" \
      org.opencontainers.image.description="Progressive delivery of ML models on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# The root filesystem is read-only in the pod (the chart mounts an emptyDir on
# /tmp): HOME goes there; no .pyc is written at run time (pip compiled them at
# install).
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/modelrollout/bin:$PATH \
    HOME=/tmp

# A named user with a fixed uid/gid, so that tools that look the user up
# (getpass, kopf's peer identity outside a pod) find one.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin nonroot

# Install from the builder's wheels only: no index, so nothing unpinned sneaks in.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/modelrollout \
 && /opt/modelrollout/bin/pip install --no-index --find-links=/wheels modelrollout \
 && /opt/modelrollout/bin/pip uninstall --yes pip \
 && modelrollout --help >/dev/null

USER 65532:65532
WORKDIR /tmp
# /healthz (kopf's liveness endpoint) and /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["modelrollout", "run"]
