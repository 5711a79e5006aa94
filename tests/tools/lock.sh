#!/usr/bin/env bash
# lock.sh (`make lock`): regenerate requirements.lock (pyproject's dependencies and the postgres extra the
# image ships) and requirements-build.lock (requirements-build.in) with pip-tools, every file's sha256 kept.
# tests/unit/test_requirements_lock.py checks the lock still matches pyproject.toml.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PIP_TOOLS_VERSION=7.6.2
venv="${SIGAUDIT_TOOLS_DIR:-$HOME/.cache/sigaudit-tools}/pip-tools-$PIP_TOOLS_VERSION"
if [[ ! -x "$venv/bin/pip-compile" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION"
fi
cd "$REPO"
# No local wheel folders (PIP_FIND_LINKS): only the index's files, whose hashes hold everywhere.
compile=(env -u PIP_FIND_LINKS CUSTOM_COMPILE_COMMAND="make lock" "$venv/bin/pip-compile" -q --generate-hashes
    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links)
"${compile[@]}" --extra postgres --output-file requirements.lock pyproject.toml
"${compile[@]}" --output-file requirements-build.lock requirements-build.in
# The Dockerfile names the lock it installs from (ARG REQUIREMENTS_SHA256, both stages).
sha="$(sha256sum requirements.lock | cut -c1-64)"
sed -i "s/^ARG REQUIREMENTS_SHA256=.*/ARG REQUIREMENTS_SHA256=$sha/" Dockerfile
