#!/usr/bin/env bash
# make-base.sh: a Debian bookworm Python base image made locally from Debian's packages (no container
# registry needed), imported into podman as localhost/sigaudit-base:<key>. Prints "<tag> <image id>" on stdout.
#
# The key is the content hash of this script (package list, suite, mirrors): the root filesystem is cached
# in ${SIGAUDIT_TOOLS_DIR:-~/.cache/sigaudit-tools}/base-<key>/rootfs.tar, outside the checkout, and made
# again only when this script changes. mmdebstrap runs with SOURCE_DATE_EPOCH so the same package set gives
# the same tar. /etc/hosts and /etc/mtab exist (as in Debian's own container images): otherwise the runtime
# (podman's bind mount, runc's mtab symlink) adds them, and a read-only container's diff is not empty
# (tests/integration/test_image_podman.py checks `podman diff`). Older bases (other keys) are removed.
# Mirrors: SIGAUDIT_DEBIAN_MIRROR (default deb.debian.org, what this machine reaches).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${SIGAUDIT_TOOLS_DIR:-$HOME/.cache/sigaudit-tools}"
SUITE=bookworm
MIRROR="${SIGAUDIT_DEBIAN_MIRROR:-http://deb.debian.org}"
# What the Dockerfile needs from its Python base: python3 with venv (ensurepip), CA certificates for the
# registries, passwd for the nonroot user. The official python:*-slim image has the same.
PACKAGES=python3,python3-venv,ca-certificates,passwd
export SOURCE_DATE_EPOCH=1735689600 # 2025-01-01T00:00:00Z

key="$( { cat "${BASH_SOURCE[0]}"; echo "$MIRROR"; } | sha256sum | cut -c1-12)"
dir="$CACHE/base-$key"
tag="localhost/sigaudit-base:$key"
# shellcheck source=podman-env.sh
source "$HERE/podman-env.sh"

if ! podman image exists "$tag"; then
    if [[ ! -s "$dir/rootfs.tar" ]]; then
        mkdir -p "$dir"
        echo "make-base: mmdebstrap $SUITE ($PACKAGES) into $dir/rootfs.tar" >&2
        t0=$SECONDS
        mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
            --aptopt='Acquire::Retries "3"' \
            --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*' \
            --customize-hook='printf "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" >"$1"/etc/hosts' \
            --customize-hook='ln -sf ../proc/mounts "$1"/etc/mtab' \
            "$SUITE" "$dir/rootfs.part.tar" \
            "deb $MIRROR/debian $SUITE main" \
            "deb $MIRROR/debian $SUITE-updates main" \
            "deb $MIRROR/debian-security $SUITE-security main" >&2
        mv -f "$dir/rootfs.part.tar" "$dir/rootfs.tar"
        echo "make-base: rootfs made in $((SECONDS - t0))s" >&2
    fi
    podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        "$dir/rootfs.tar" "$tag" >/dev/null
    for old in "$CACHE"/base-*; do
        [[ "$old" == "$dir" ]] || rm -rf "$old"
    done
    podman images --format '{{.Repository}}:{{.Tag}}' localhost/sigaudit-base | while read -r other; do
        [[ "$other" == "$tag" ]] || podman rmi "$other" >/dev/null 2>&1 || true
    done
fi
echo "$tag $(podman image inspect --format "{{.Id}}" "$tag")"
