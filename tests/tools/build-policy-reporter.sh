#!/usr/bin/env bash
# Build (once) Kyverno's Policy Reporter, the UI/API most clusters read OpenReports through, and print
# the binary's path. Optional peer: tests/integration/test_kube_cluster_reports.py skips without it.
#
# The Go module proxy refuses github.com/kyverno/policy-reporter (`go install ...@latest`: 403 "This
# module version is not available"), so the source is a checkout at the pinned commit: POLICY_REPORTER_SRC
# (a directory), else a `git clone` of GitHub. Its dependencies come from the module proxy as usual.
# Idempotent: a cached binary is reused. Build log on stderr.
set -euo pipefail

COMMIT="${SIGAUDIT_POLICY_REPORTER_COMMIT:-4e5e05b8cd20fe30d52228f86adc1e5ce78d64a9}"
CACHE_ROOT="${SIGAUDIT_TOOLS_DIR:-$HOME/.cache/sigaudit-tools}"
out_dir="$CACHE_ROOT/policy-reporter-${COMMIT:0:12}/bin"
out="$out_dir/policy-reporter"

if [[ -x "$out" ]]; then printf '%s\n' "$out"; exit 0; fi
src="${POLICY_REPORTER_SRC:-}"
if [[ -z "$src" ]]; then
    src="$CACHE_ROOT/src/policy-reporter-${COMMIT:0:12}"
    if [[ ! -f "$src/go.mod" ]]; then
        rm -rf "$src"
        git clone -q https://github.com/kyverno/policy-reporter "$src" >&2
        git -C "$src" checkout -q "$COMMIT" >&2
    fi
fi
mkdir -p "$out_dir"
(cd "$src" && go build -trimpath -o "$out" .) >&2
printf '%s\n' "$out"
