# Sourced (bash) or read by tests/harness/podman.py: point podman at the settings kept in this folder.
# An environment that already sets CONTAINERS_CONF / CONTAINERS_STORAGE_CONF keeps its own.
_sigaudit_podman_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$_sigaudit_podman_dir/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$_sigaudit_podman_dir/storage.conf}"
unset _sigaudit_podman_dir
