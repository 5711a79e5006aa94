# syntax=docker/dockerfile:1
# sigaudit container image: the builder stage builds the wheel; the final stage installs only that wheel
# (and its dependencies) into a slim Python, with no compiler, no build frontend and no source tree.
#   docker build -t sigaudit:dev .
#   docker run --rm sigaudit:dev --version
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2.post1"
# Only what the wheel is made of (see .dockerignore for the rest of the context).
COPY pyproject.toml README.md ./
COPY scanner/ scanner/
COPY reports/ reports/
COPY migrations/ migrations/
RUN python -m build --wheel --outdir /dist

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
# Optional dependencies installed with the wheel: postgres is needed for database.type=external; add aws,
# gcp, azure or vault for KMS-held cosign keys.
ARG EXTRAS=postgres
LABEL org.opencontainers.image.title="sigaudit" \
      org.opencontainers.image.description="Continuous audit of the container image signatures running in a Kubernetes cluster" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/sigaudit/sigaudit" \
      org.opencontainers.image.base.name="docker.io/library/${PYTHON_IMAGE}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SIGAUDIT_DATA_DIR=/var/lib/sigaudit
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3013 (pin pip versions) does not apply: the one requirement named is the wheel built above, by path; its
# dependencies are bounded by the wheel's own metadata.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    wheel="$(ls /dist/sigaudit-*.whl)" \
    && pip install --no-cache-dir "${wheel}[${EXTRAS}]" \
    && groupadd --gid 65532 nonroot \
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
