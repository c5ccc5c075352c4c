# syntax=docker/dockerfile:1
#
# The `imagestreams` image: one CLI, every component selected by its arguments.
#
#   docker build -t imagestreams:dev .
#   docker run --rm imagestreams:dev --help
#   (the chart runs `serve …`, `controller …` and `certs-sync …`)
#
# Without a Docker daemon, `make image` (hack/image.py) builds the same image from Debian's
# python3: same user, entry point, command, environment and labels (read from this file),
# same packages (from requirements.lock). tests/unit/test_image.py checks that they agree.
#
# The base is pinned by exact version tag AND by the digest of its multi-platform index
# (python:3.11.14-slim-bookworm, as published on Docker Hub and recorded in public
# Dockerfiles); bump both together, e.g. with Renovate or
# `crane digest python:3.11.14-slim-bookworm`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- builder: wheels for the project and every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# The dependencies first, exactly as requirements.lock pins them (the lock the dev venv and
# hack/image.py install too): every wheel is checked against the lock's hashes. Every pin
# ships binary wheels for linux amd64 and arm64, so no compiler is needed even here;
# --only-binary makes a missing wheel fail the build instead of compiling. This layer is
# reused until the lock changes.
COPY requirements.lock ./
RUN pip wheel --wheel-dir /wheels --only-binary=:all: --require-hashes -r requirements.lock
# Then the project's own wheel, from only what it is built from (see .dockerignore).
COPY pyproject.toml README.md LICENSE ./
COPY webhook ./webhook
RUN pip wheel --wheel-dir /wheels --no-deps . \
 && cp requirements.lock /wheels/ \
 && ls /wheels

# --- runtime -----------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="imagestreams" \
      org.opencontainers.image.description="OpenShift image streams on any Kubernetes cluster" \
      org.opencontainers.image.licenses="Apache-2.0"
# Which build this is, from build arguments (hack/image.py sets both: pyproject.toml's
# version and the git commit), e.g.
#   docker build --build-arg REVISION=$(git rev-parse HEAD) -t REGISTRY/imagestreams:0.1.0 .
# The revision is also what `imagestreams --version` and the build_info metric report.
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/imagestreams/imagestreams" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    IMAGESTREAMS_REVISION="${REVISION}"
# Install from the builder's wheels only (no index, nothing compiled, no cache): the locked
# dependencies, their hashes checked once more, then the project alone, so that nothing but
# the locked versions can be installed (`pip check`: and nothing is missing). Then remove
# pip itself: nothing installs packages at run time. The wheels are bind-mounted, so they
# never become a layer of this image. Byte code is compiled at install time, because the
# root filesystem is read-only at run time. Last, the programs' modules are imported, the
# webhook's gunicorn gevent worker included (hack/image.py's RUNTIME_MODULES): `--help`
# alone loads none of them, and a missing runtime dependency would pass the build and
# crash-loop the pods.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels --require-hashes -r /wheels/requirements.lock \
 && pip install --no-index --find-links=/wheels --no-deps imagestreams \
 && pip check \
 && pip uninstall --yes pip setuptools wheel \
 && imagestreams --help >/dev/null \
 && python -c "import webhook.serving.server, gunicorn.workers.ggevent, webhook.controller.reconciler"
# Numeric, so that `runAsNonRoot` can verify it without an /etc/passwd entry.
USER 65532:65532
WORKDIR /tmp
EXPOSE 8443 8080
ENTRYPOINT ["imagestreams"]
CMD ["serve", "--bind", "0.0.0.0:8443", "--certfile", "/var/run/imagestreams/tls/tls.crt", "--keyfile", "/var/run/imagestreams/tls/tls.key"]
