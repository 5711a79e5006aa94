# syntax=docker/dockerfile:1
# sigaudit container image. The builder stage builds the wheel and installs it, with its dependencies from the
# hashed lock file, into a virtualenv (/opt/sigaudit); the final stage copies only that virtualenv and the SBOM
# into the same Python base: no compiler, no pip, no build frontend, no source tree.
#   docker build -t sigaudit:dev .          (the official Python base, pinned below)
#   make image                              (podman, with a base made locally from Debian's packages)
#
# PYTHON_IMAGE: the Python base, pinned by digest. Default: the official python:3.11-slim-bookworm (Docker
# Hub); refresh the digest with `crane digest python:3.11-slim-bookworm` (or `docker buildx imagetools
# inspect`). `make image` passes localhost/sigaudit-base:<key>@sha256:<digest> (tests/tools/podman/make-base.sh:
# Debian bookworm's python3, the same Python 3.11 the official image has). Any base with python3 (>= 3.11,
# venv module) and groupadd/useradd works: the virtualenv keeps pip off the system Python (PEP 668).
ARG PYTHON_IMAGE=docker.io/library/python:3.11-slim-bookworm@sha256:2e32f7d302adc1c37428355c1e646897c0c53f4fd60b6a551245fb90ee129f91

FROM ${PYTHON_IMAGE} AS builder
ARG PYTHON_IMAGE
# RUN steps are plain POSIX sh: podman's OCI image format ignores SHELL.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# REQUIREMENTS_SHA256: the sha256 of requirements.lock, kept here by `make lock` (a unit test checks it): the
# build refuses any other lock, and the image's label records which one it was installed from.
ARG REQUIREMENTS_SHA256=5c18d8f530a9408c088e49fd4f98de22d9bad9ec1a2e731a750f90dd142e5283
WORKDIR /src
# Build tools (pip, build, setuptools, wheel, cyclonedx-bom) from their own hashed lock, binary wheels only.
COPY requirements-build.lock requirements.lock ./
# A base named by tag alone could change under the same build: refused.
RUN case "${PYTHON_IMAGE}" in *@sha256:????????????????????????????????????????????????????????????????) ;; \
        *) echo "PYTHON_IMAGE=${PYTHON_IMAGE} is not pinned by digest (name@sha256:<64 hex>)" >&2; exit 1;; esac \
    && printf '%s  requirements.lock\n' "${REQUIREMENTS_SHA256}" >/tmp/lock.sha256 \
    && sha256sum --strict -c /tmp/lock.sha256 \
    && python3 -m venv /opt/build \
    && /opt/build/bin/python -m pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements-build.lock
# Only what the wheel is made of (see .dockerignore for the rest of the context). scanner/reports and
# scanner/migrations are links to reports/ and migrations/: the wheel ships them as scanner.reports and
# scanner.migrations, nothing else beside scanner/ in site-packages.
COPY pyproject.toml README.md ./
COPY scanner/ scanner/
COPY reports/ reports/
COPY migrations/ migrations/
# The runtime virtualenv has no pip of its own: the build venv's pip installs into it (--python). Dependencies
# come only from requirements.lock (--require-hashes: every one pinned and hashed, none added); the wheel
# itself with --no-deps; `pip check` proves the set is complete. The SBOM is made from what was installed.
RUN /opt/build/bin/python -m build --wheel --no-isolation --outdir /dist \
    && python3 -m venv --without-pip /opt/sigaudit \
    && /opt/build/bin/python -m pip --python /opt/sigaudit/bin/python install --no-cache-dir --require-hashes \
       --only-binary=:all: -r requirements.lock \
    && /opt/build/bin/python -m pip --python /opt/sigaudit/bin/python install --no-cache-dir --no-deps --no-index \
       /dist/sigaudit-*.whl \
    && /opt/build/bin/python -m pip --python /opt/sigaudit/bin/python check \
    && mkdir -p /sbom \
    && /opt/build/bin/cyclonedx-py environment --output-reproducible --of JSON --pyproject pyproject.toml \
       --output-file /sbom/sigaudit.cdx.json /opt/sigaudit/bin/python

FROM ${PYTHON_IMAGE}
ARG PYTHON_IMAGE
ARG REQUIREMENTS_SHA256=5c18d8f530a9408c088e49fd4f98de22d9bad9ec1a2e731a750f90dd142e5283
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="sigaudit" \
      org.opencontainers.image.description="Continuous audit of the container image signatures running in a Kubernetes cluster" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/sigaudit/sigaudit" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}" \
      io.sigaudit.requirements.lock.sha256="${REQUIREMENTS_SHA256}" \
      io.sigaudit.sbom="/usr/share/sigaudit/sigaudit.cdx.json"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/sigaudit/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SIGAUDIT_DATA_DIR=/var/lib/sigaudit
COPY --from=builder /opt/sigaudit /opt/sigaudit
COPY --from=builder /sbom/sigaudit.cdx.json /usr/share/sigaudit/sigaudit.cdx.json
RUN groupadd --gid 65532 nonroot \
    && useradd --uid 65532 --gid 65532 --no-log-init --create-home --home-dir /home/nonroot \
       --shell /usr/sbin/nologin nonroot \
    && install -d -o 65532 -g 65532 -m 0750 /var/lib/sigaudit
USER 65532:65532
WORKDIR /home/nonroot
VOLUME ["/var/lib/sigaudit"]
EXPOSE 8080
# No HEALTHCHECK: in Kubernetes the chart's probes (/healthz, /readyz) do that job.
ENTRYPOINT ["sigaudit"]
CMD ["--help"]
