#!/usr/bin/env bash
# make ci-fresh: prove that a new machine's `make test` passes from a plain clone.
#
# Clones the committed HEAD of this repository into an empty temporary folder (so there is no
# ../shared beside it), points HOME at a new empty directory (so ~/.cache/sigaudit-tools, the Go
# module and build caches, pip's and npm's caches all start empty), runs `CI=true bash .ci/run`
# there and prints the wall time of each phase (apt, venv, each tool build, image, lint, typecheck,
# pytest). Debian packages are machine-wide: on a machine that already has them the apt phase only
# checks; so is root's podman storage: an image already built from the same inputs is not rebuilt (for a
# cold image phase, `podman rmi localhost/sigaudit:dev localhost/sigaudit-base:<key>` first). The folder is kept (its path is printed) unless CI_FRESH_CLEAN=1.
#
#   make ci-fresh                    # or: bash tests/tools/ci-fresh.sh
#   CI_FRESH_ROOT=/var/tmp/x make ci-fresh
set -uo pipefail

repo="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
root="${CI_FRESH_ROOT:-$(mktemp -d /tmp/sigaudit-ci-fresh.XXXXXX)}"
mkdir -p "$root/home"
[[ -z "$(ls -A "$root/home")" ]] || { echo "ci-fresh: $root/home is not empty" >&2; exit 2; }
git clone -q "$repo" "$root/sigaudit" || exit 2
commit="$(git -C "$root/sigaudit" rev-parse --short HEAD)"
[[ ! -e "$root/shared" ]] || { echo "ci-fresh: $root/shared exists" >&2; exit 2; }

# Configuration (not caches) the machine's users have in HOME: registry settings for npm and Go,
# git's identity. The interpreters stay where the machine has them.
real_home="$HOME"
for f in .npmrc .gitconfig .config/go/env .config/pip/pip.conf; do
    if [[ -f "$real_home/$f" ]]; then mkdir -p "$(dirname "$root/home/$f")"; cp "$real_home/$f" "$root/home/$f"; fi
done
export PYENV_ROOT="${PYENV_ROOT:-$real_home/.pyenv}"
export HOME="$root/home"
unset SIGAUDIT_TOOLS_DIR GOPATH GOMODCACHE GOCACHE npm_config_cache PIP_CACHE_DIR
export SIGAUDIT_PHASE_LOG="$root/phases.log"
: >"$SIGAUDIT_PHASE_LOG"

echo "ci-fresh: clone of $commit in $root/sigaudit, HOME=$HOME" >&2
t0=$SECONDS
(cd "$root/sigaudit" && CI=true bash .ci/run) >"$root/ci.log" 2>&1
rc=$?
total=$((SECONDS - t0))

{
    echo "## make ci-fresh: $(date -u +%FT%TZ), commit $commit, $(nproc) cores, exit $rc"
    echo
    echo "| phase | wall s |"
    echo "|---|---|"
    awk '{printf "| %s | %s%s |\n", $1, $2, ($3 != 0 ? " (exit " $3 ")" : "")}' "$SIGAUDIT_PHASE_LOG"
    echo "| **total** (.ci/run) | $total |"
    echo
    echo "pytest: $(grep -E '^=*.*(passed|failed|error).* in [0-9.]+s' "$root/ci.log" | tail -n 1)"
    echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$root/summary.md"
echo "ci-fresh: log $root/ci.log, summary $root/summary.md" >&2
if [[ "${CI_FRESH_CLEAN:-0}" == 1 ]]; then chmod -R u+w "$root" && rm -rf "$root"; fi
exit "$rc"
