#!/usr/bin/env bash
# build-image.sh [TAG]: `make image`. Builds the repository's Dockerfile with podman on a Python base made
# locally (make-base.sh) and tags it TAG (default localhost/sigaudit:dev) in root's podman storage, with the
# settings in this folder (podman-env.sh). Cached by content: the image carries the sha256 of its inputs (the
# build context, the Dockerfile, the base image id) in the label io.sigaudit.inputs.sha256, and an image
# already tagged with the same inputs is not built again. Prints "TAG" when done.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../../.." && pwd)"
TAG="${1:-localhost/sigaudit:dev}"
# shellcheck source=podman-env.sh
source "$HERE/podman-env.sh"

read -r base_tag base_id < <(bash "$HERE/make-base.sh")
# Pin the base by digest, as the Dockerfile's default does: podman gave the imported image a manifest digest.
base_digest="$(podman image inspect --format '{{.Digest}}' "$base_tag")"
base_ref="$base_tag@$base_digest"

cd "$REPO"
# The inputs: every file .dockerignore lets into the context, the Dockerfile, and the base.
inputs="$(
    {
        echo "base $base_id"
        sha256sum Dockerfile .dockerignore pyproject.toml README.md requirements.lock requirements-build.lock
        find scanner reports migrations -type f ! -name '*.pyc' ! -name '*.db' ! -path '*/__pycache__/*' -print0 \
            | LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -c1-64
)"
if [[ "$(podman image inspect --format '{{index .Labels "io.sigaudit.inputs.sha256"}}' "$TAG" 2>/dev/null)" == "$inputs" ]]; then
    echo "build-image: $TAG is up to date (inputs $inputs)" >&2
    echo "$TAG"
    exit 0
fi

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(git log -1 --format=%cI 2>/dev/null || echo unknown)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)"
build_args=(
    --build-arg "PYTHON_IMAGE=$base_ref"
    --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision"
    --build-arg "CREATED=$created"
    --label "io.sigaudit.inputs.sha256=$inputs"
)
# This machine reaches PyPI through a TLS proxy whose CA is in the host's bundle (and pip.conf names it):
# lend both to the build's RUN steps, read-only; nothing of them lands in a layer.
volumes=()
for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [[ -r "$f" ]] && volumes+=(--volume "$f:$f:ro")
done
previous="$(podman image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
echo "build-image: podman build $TAG on $base_ref" >&2
t0=$SECONDS
podman build --network host --pull=never --layers=false --format oci \
    "${build_args[@]}" "${volumes[@]}" --tag "$TAG" --file Dockerfile . >&2
echo "build-image: built $TAG in $((SECONDS - t0))s" >&2
# vfs keeps full copies: drop the image this build replaced (unless something still uses it).
if [[ -n "$previous" && "$previous" != "$(podman image inspect --format '{{.Id}}' "$TAG")" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
fi
echo "$TAG"
