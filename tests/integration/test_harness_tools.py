"""Tool lookup: versions.env parses, and ensure-tools.sh output matches what tool_path finds."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.harness import tools

pytestmark = pytest.mark.integration

GO_TOOLS = ["cosign", "cosign3", "notation", "helm", "kubeconform", "ocireg"]


def test_versions_env_pins_every_tool():
    pins = tools.pinned_versions()
    assert set(GO_TOOLS) <= set(pins)
    assert all(v.startswith("v") for v in pins.values())


def test_missing_tool_skips_or_fails(monkeypatch, tmp_path):
    monkeypatch.setenv("SIGAUDIT_TOOLS_DIR", str(tmp_path))
    assert tools.tool_path("cosign") is None
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"ensure-tools\.sh cosign"):
        tools.require_tool("cosign")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"ensure-tools\.sh cosign"):
        tools.require_tool("cosign")
    with pytest.raises(pytest.fail.Exception, match="apt-get install"):
        tools.require_binary("no-such-binary-sigaudit")


def test_free_port_is_bindable():
    import socket

    port = tools.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


@pytest.mark.tools
@pytest.mark.parametrize("name", GO_TOOLS)
def test_pinned_tool_runs(name):
    path = tools.require_tool(name)
    args = {
        "cosign": ["version"],
        "cosign3": ["version"],
        "notation": ["version"],
        "helm": ["version", "--short"],
        "kubeconform": ["-v"],
        "ocireg": ["-h"],
    }[name]
    proc = subprocess.run(
        [str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": os.environ.get("HOME", "/root")},
    )
    assert proc.returncode in (0, 2) if name == "ocireg" else proc.returncode == 0, proc.stderr
    if name in ("cosign", "cosign3", "notation"):
        assert tools.pinned_versions()[name].lstrip("v") in proc.stdout + proc.stderr or "devel" in proc.stdout
