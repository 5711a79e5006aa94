"""Locate the peer tools the integration tests drive, and small process helpers.

Go-built tools (cosign, notation, helm, ...) are pinned in ``tests/tools/versions.env`` and built by
``tests/tools/ensure-tools.sh`` into ``~/.cache/sigaudit-tools/<tool>-<version>/bin/<tool>``.
Debian-packaged programs (docker-registry, prometheus, ...) are looked up on PATH.

A missing tool makes a test fail when ``CI`` is set (CI must have every tool), and skip otherwise.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pytest

TOOLS_DIR = Path(__file__).resolve().parent.parent / "tools"
VERSIONS_ENV = TOOLS_DIR / "versions.env"
ENSURE_TOOLS = "tests/tools/ensure-tools.sh"

# Debian package that ships each binary (for the skip/fail message).
DEBIAN_PACKAGES = {
    "docker-registry": "docker-registry",
    "prometheus": "prometheus",
    "prometheus-pushgateway": "prometheus-pushgateway",
    "promtool": "prometheus",
    "chromium": "chromium",
    "etcd": "etcd-server",
    "htpasswd": "apache2-utils",
}


def cache_root() -> Path:
    """Where ensure-tools.sh puts the tools (``$SIGAUDIT_TOOLS_DIR`` overrides)."""
    env = os.environ.get("SIGAUDIT_TOOLS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "sigaudit-tools"


@functools.cache
def pinned_versions() -> dict[str, str]:
    """Tool name -> pinned version, from ``versions.env`` (``COSIGN3_VERSION=v3.1.3`` -> cosign3)."""
    versions: dict[str, str] = {}
    for raw in VERSIONS_ENV.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if key.endswith("_VERSION"):
            name = key[: -len("_VERSION")].lower().replace("_", "-")
            versions[name] = value.strip()
    return versions


def tool_path(name: str) -> Path | None:
    """Path of the pinned build of Go tool ``name``, or None when it has not been built.

    ``kube-apiserver`` is pinned by ``tests/tools/build-kube.sh`` (not in versions.env); for it the
    newest ``kube-apiserver-*`` build found in the cache is used unless ``SIGAUDIT_KUBE_VERSION`` is set.
    """
    root = cache_root()
    version = pinned_versions().get(name)
    if version is None and name == "kube-apiserver":
        version = os.environ.get("SIGAUDIT_KUBE_VERSION")
        if version is None:
            found = sorted(root.glob("kube-apiserver-*/bin/kube-apiserver"))
            return found[-1] if found and os.access(found[-1], os.X_OK) else None
    if version is None:
        return None
    path = root / f"{name}-{version}" / "bin" / name
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_tool(name: str) -> Path:
    """The pinned Go tool ``name``; fails the test under CI and skips it elsewhere when missing."""
    path = tool_path(name)
    if path is None:
        version = pinned_versions().get(name, "?")
        _missing(f"{name} {version} is not built: run `make tools` (or {ENSURE_TOOLS} {name})")
        raise AssertionError("unreachable")
    return path


def require_binary(name: str) -> Path:
    """A Debian-packaged program on PATH (or /usr/sbin, /usr/bin); fail under CI, else skip."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        pkg = DEBIAN_PACKAGES.get(name, name)
        _missing(f"{name} not found: apt-get install {pkg}")
        raise AssertionError("unreachable")
    return Path(found)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(
    url: str,
    *,
    timeout: float = 20.0,
    ok_statuses: Sequence[int] = (200,),
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Poll ``url`` until it answers one of ``ok_statuses``; raise with the log tail on timeout or exit."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered{_tail(log_path)}")
        try:
            r = httpx.get(url, timeout=2.0, verify=verify)
            if r.status_code in ok_statuses:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s ({last}){_tail(log_path)}")


def _tail(log_path: Path | None, lines: int = 30) -> str:
    if log_path is None or not log_path.exists():
        return ""
    text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return "\n--- " + str(log_path) + " ---\n" + "\n".join(text)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: never leave a peer process behind."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
