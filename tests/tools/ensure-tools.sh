#!/usr/bin/env bash
# Build the pinned Go peer tools used by sigaudit's integration tests.
#
#   tests/tools/ensure-tools.sh [TOOL...]     (no args: all default tools)
#
# Tools: cosign cosign3 notation helm kubeconform ocireg kube-apiserver notation-go sigstore-mock grafeas
#        slsa-verifier
# Each lands in ${SIGAUDIT_TOOLS_DIR:-~/.cache/sigaudit-tools}/<tool>-<version>/bin/<tool>,
# versions pinned in tests/tools/versions.env. Idempotent: a tool whose binary is
# already there is not rebuilt. Builds run one at a time (the machines have 2 cores).
# Prints one line per tool: "<tool> <path>". Exits non-zero if a build fails, after
# showing the tail of the build log.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"

CACHE="${SIGAUDIT_TOOLS_DIR:-$HOME/.cache/sigaudit-tools}"
mkdir -p "$CACHE"
LOG="${SIGAUDIT_TOOLS_LOG:-$CACHE/build.log}"
# The default set is every tool any test asks for (tests/unit/test_layout.py checks it); `make tools` builds it.
DEFAULT_TOOLS=(cosign cosign3 notation helm kubeconform ocireg kube-apiserver notation-go sigstore-mock grafeas
    slsa-verifier)

export GOFLAGS=-mod=mod

fail() {
    echo "ensure-tools: $1 failed; last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
}

# go_tool TOOL VERSION PKG: go install PKG@VERSION into the tool's bin dir.
go_tool() {
    local tool="$1" version="$2" pkg="$3"
    local bin="$CACHE/$tool-$version/bin"
    local want="$bin/$tool"
    if [[ -x "$want" ]]; then
        echo "$tool $want"
        return 0
    fi
    mkdir -p "$bin"
    local built="${pkg##*/}"
    local t0=$SECONDS
    echo "== $(date -u +%FT%TZ) go install $pkg@$version" >>"$LOG"
    if ! GOBIN="$bin" go install "$pkg@$version" >>"$LOG" 2>&1; then
        # `go install pkg@version` also reads the module's version list (for deprecation
        # notices); the module proxy answers 403 to that for some modules (notation) while
        # serving the pinned version itself. Then build the downloaded module in place: the
        # same sources and go.sum, only without the version stamp in the build info.
        grep -q "loading deprecation" <(tail -n 5 "$LOG") || fail "$tool $version"
        local module="${pkg%%/cmd/*}" dir
        echo "== fallback: go build ./cmd/${pkg#*/cmd/} inside $module@$version" >>"$LOG"
        dir="$(go mod download -json "$module@$version" 2>>"$LOG" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
        [[ -d "$dir" ]] || fail "$tool $version (go mod download)"
        (cd "$dir" && GOFLAGS=-mod=readonly go build -o "$bin/$built" "./cmd/${pkg#*/cmd/}") >>"$LOG" 2>&1 \
            || fail "$tool $version"
    fi
    if [[ "$built" != "$tool" ]]; then
        mv -f "$bin/$built" "$want"
    fi
    echo "== $tool $version built in $((SECONDS - t0))s" >>"$LOG"
    echo "$tool $want"
}

# checkout_tool NAME VERSION: our own small Go programs under tests/tools/NAME (ocireg: a registry
# with the referrers API; notation-go: a thin CLI over notation-go), built from the checkout. Bump
# VERSION in versions.env when the sources change, so cached binaries are rebuilt.
checkout_tool() {
    local tool="$1" version="$2"
    local bin="$CACHE/$tool-$version/bin"
    local want="$bin/$tool"
    if [[ -x "$want" ]]; then
        echo "$tool $want"
        return 0
    fi
    mkdir -p "$bin"
    local t0=$SECONDS
    echo "== $(date -u +%FT%TZ) go install ./tests/tools/$tool" >>"$LOG"
    if ! (cd "$HERE/$tool" && GOBIN="$bin" go install .) >>"$LOG" 2>&1; then
        fail "$tool $version"
    fi
    echo "== $tool built in $((SECONDS - t0))s" >>"$LOG"
    echo "$tool $want"
}

kube_tool() {
    local explicit="$1"
    if [[ -f "$HERE/build-kube.sh" ]]; then
        # build-kube.sh (owned by the kube tests) prints kube-apiserver's path, then etcd's.
        local out
        out="$(bash "$HERE/build-kube.sh" 2>>"$LOG")" || fail "kube-apiserver (tests/tools/build-kube.sh)"
        paste -d' ' <(printf 'kube-apiserver\netcd\n') <(printf '%s\n' "$out") | head -n 2
    elif [[ "$explicit" == 1 ]]; then
        echo "ensure-tools: tests/tools/build-kube.sh does not exist" >&2
        exit 1
    else
        echo "kube-apiserver skipped (tests/tools/build-kube.sh not present)"
    fi
}

# sigstore-mock: @sigstore/cli + @sigstore/mock from npm, pinned by tests/sigstore_mock/package.json
# and package-lock.json (npm ci), for the offline keyless signing harness (tests/sigstore_mock/).
npm_sigstore_mock() {
    local src="$HERE/../sigstore_mock"
    local version
    version="$(sed -n 's/.*"@sigstore\/mock": *"\([^"]*\)".*/\1/p' "$src/package.json")"
    local dir="$CACHE/sigstore-mock-$version"
    if [[ -x "$dir/node_modules/.bin/sigstore" && -f "$dir/node_modules/@sigstore/mock/package.json" ]] \
        && cmp -s "$src/package-lock.json" "$dir/package-lock.json"; then
        echo "sigstore-mock $dir"
        return 0
    fi
    command -v npm >/dev/null || { echo "ensure-tools: npm is not installed (apt-get install npm)" >&2; exit 1; }
    mkdir -p "$dir"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    local t0=$SECONDS
    echo "== $(date -u +%FT%TZ) npm ci (@sigstore/mock $version)" >>"$LOG"
    if ! (cd "$dir" && npm ci --no-audit --no-fund) >>"$LOG" 2>&1; then
        fail "sigstore-mock $version"
    fi
    echo "== sigstore-mock $version installed in $((SECONDS - t0))s" >>"$LOG"
    echo "sigstore-mock $dir"
}

# grafeas: the Grafeas v1beta1 server (go/v1beta1/main), built inside the downloaded module
# because the proxy refuses the module's version list.
grafeas_tool() {
    local bin="$CACHE/grafeas-$GRAFEAS_VERSION/bin"
    local want="$bin/grafeas"
    if [[ -x "$want" ]]; then
        echo "grafeas $want"
        return 0
    fi
    mkdir -p "$bin"
    local t0=$SECONDS dir
    echo "== $(date -u +%FT%TZ) go build ./go/v1beta1/main in $GRAFEAS_MODULE@$GRAFEAS_VERSION" >>"$LOG"
    dir="$(go mod download -json "$GRAFEAS_MODULE@$GRAFEAS_VERSION" 2>>"$LOG" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -d "$dir" ]] || fail "grafeas $GRAFEAS_VERSION (go mod download)"
    (cd "$dir" && GOFLAGS=-mod=readonly nice go build -o "$want" ./go/v1beta1/main) >>"$LOG" 2>&1 \
        || fail "grafeas $GRAFEAS_VERSION"
    echo "== grafeas $GRAFEAS_VERSION built in $((SECONDS - t0))s" >>"$LOG"
    echo "grafeas $want"
}

# slsa-verifier: the CLI package cli/slsa-verifier, built inside the downloaded module (the proxy
# refuses the module's version list, so `go install pkg@version` cannot run).
slsa_verifier_tool() {
    local bin="$CACHE/slsa-verifier-$SLSA_VERIFIER_VERSION/bin"
    local want="$bin/slsa-verifier"
    if [[ -x "$want" ]]; then
        echo "slsa-verifier $want"
        return 0
    fi
    mkdir -p "$bin"
    local t0=$SECONDS dir
    echo "== $(date -u +%FT%TZ) go build ./cli/slsa-verifier in $SLSA_VERIFIER_MODULE@$SLSA_VERIFIER_VERSION" >>"$LOG"
    dir="$(go mod download -json "$SLSA_VERIFIER_MODULE@$SLSA_VERIFIER_VERSION" 2>>"$LOG" \
        | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -d "$dir" ]] || fail "slsa-verifier $SLSA_VERIFIER_VERSION (go mod download)"
    (cd "$dir" && GOFLAGS=-mod=readonly nice go build -o "$want" ./cli/slsa-verifier) >>"$LOG" 2>&1 \
        || fail "slsa-verifier $SLSA_VERIFIER_VERSION"
    echo "== slsa-verifier $SLSA_VERIFIER_VERSION built in $((SECONDS - t0))s" >>"$LOG"
    echo "slsa-verifier $want"
}

build() {
    local tool="$1" explicit="$2"
    case "$tool" in
        cosign) go_tool cosign "$COSIGN_VERSION" "$COSIGN_PKG" ;;
        cosign3) go_tool cosign3 "$COSIGN3_VERSION" "$COSIGN3_PKG" ;;
        notation) go_tool notation "$NOTATION_VERSION" "$NOTATION_PKG" ;;
        helm) go_tool helm "$HELM_VERSION" "$HELM_PKG" ;;
        kubeconform) go_tool kubeconform "$KUBECONFORM_VERSION" "$KUBECONFORM_PKG" ;;
        ocireg) checkout_tool ocireg "$OCIREG_VERSION" ;;
        notation-go) checkout_tool notation-go "$NOTATION_GO_VERSION" ;;
        kube-apiserver) kube_tool "$explicit" ;;
        sigstore-mock) npm_sigstore_mock ;;
        grafeas) grafeas_tool ;;
        slsa-verifier) slsa_verifier_tool ;;
        *)
            echo "ensure-tools: unknown tool '$tool' (known: ${DEFAULT_TOOLS[*]})" >&2
            exit 2
            ;;
    esac
}

command -v go >/dev/null || { echo "ensure-tools: go is not installed" >&2; exit 1; }

# One build at a time across concurrent callers (two engineers, or a test run and CI setup).
exec 8>"$CACHE/.ensure-tools.lock"
flock 8

# timed TOOL EXPLICIT: build one tool; its wall time goes to $SIGAUDIT_PHASE_LOG (ci-fresh.sh) when set.
timed() {
    local t0=$SECONDS
    build "$1" "$2"
    if [[ -n "${SIGAUDIT_PHASE_LOG:-}" ]]; then echo "tool:$1 $((SECONDS - t0)) 0" >>"$SIGAUDIT_PHASE_LOG"; fi
}

if [[ $# -eq 0 ]]; then
    for t in "${DEFAULT_TOOLS[@]}"; do timed "$t" 0; done
else
    for t in "$@"; do timed "$t" 1; done
fi
