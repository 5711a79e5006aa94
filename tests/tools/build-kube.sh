#!/usr/bin/env bash
# Build (once) and print the paths of the Kubernetes control-plane binaries the
# integration tests run: kube-apiserver built from the Go module proxy, and etcd.
#
# kube-apiserver: a throwaway Go module (outside the checkout) requires
# k8s.io/kubernetes at KUBE_VERSION and `replace`s each k8s.io/* staging module
# with its matching v0.x release; the replace list is derived from
# k8s.io/kubernetes's own go.mod (its `=> ./staging/...` lines), not by hand.
# etcd: Debian's etcd-server (3.4.x) serves API servers up to 1.34; installed
# with apt-get when missing and we are root.
#
# Idempotent: a cached binary is reused. Output: one absolute path per line on
# stdout (kube-apiserver, then etcd); build logs go to stderr.
set -euo pipefail

KUBE_VERSION="${SIGAUDIT_KUBE_VERSION:-v1.34.4}"     # pinned; staging modules are v0.<minor>.<patch>
CACHE_ROOT="${SIGAUDIT_TOOLS_DIR:-$HOME/.cache/sigaudit-tools}"

staging_version="v0.${KUBE_VERSION#v1.}"
out_dir="$CACHE_ROOT/kube-apiserver-$KUBE_VERSION/bin"
out="$out_dir/kube-apiserver"
src="$CACHE_ROOT/src/kube-apiserver-$KUBE_VERSION"

log() { printf 'build-kube: %s\n' "$*" >&2; }

find_etcd() {
    local e
    e="$(command -v etcd || true)"
    if [[ -z "$e" && -x /usr/bin/etcd ]]; then e=/usr/bin/etcd; fi
    if [[ -z "$e" && "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        log "etcd not found; installing Debian's etcd-server"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2 \
            || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-server >&2; }
        e="$(command -v etcd || true)"
    fi
    [[ -n "$e" ]] || { log "etcd not found (apt-get install etcd-server)"; return 1; }
    printf '%s\n' "$e"
}

build_apiserver() {
    command -v go >/dev/null || { log "go not found"; return 1; }
    mkdir -p "$src" "$out_dir"
    cd "$src"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
    rm -f go.mod go.sum
    go mod init sigaudit.local/kube-build >&2 2>&1
    log "downloading k8s.io/kubernetes $KUBE_VERSION"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -f "$gomod" ]] || { log "could not locate k8s.io/kubernetes go.mod"; return 1; }
    # Every `k8s.io/x => ./staging/src/k8s.io/x` line becomes a replace by the released module.
    local mods
    mods="$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\2#p' "$gomod" | sort -u)"
    [[ -n "$mods" ]] || { log "no staging replaces found in $gomod"; return 1; }
    log "replacing $(wc -l <<<"$mods") staging modules with $staging_version"
    local args=()
    for m in $mods; do args+=("-replace=$m=$m@$staging_version"); done
    go mod edit "${args[@]}" "-require=k8s.io/kubernetes@$KUBE_VERSION"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$KUBE_VERSION" >&2
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(cut -d. -f2 <<<"$KUBE_VERSION") -X $pkg.gitTreeState=clean"
    ldflags+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
    ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
    log "building kube-apiserver $KUBE_VERSION (this takes a while on a cold cache)"
    local start=$SECONDS
    nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$out.tmp" k8s.io/kubernetes/cmd/kube-apiserver >&2
    mv -f "$out.tmp" "$out"
    log "built $out in $((SECONDS - start))s"
}

main() {
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.build-kube.lock"
    flock 9
    if [[ ! -x "$out" ]]; then
        ( build_apiserver )
    fi
    "$out" --version >&2
    printf '%s\n' "$out"
    find_etcd
}

main "$@"
