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


# (tool, arguments, text the output must contain; "{v}" is the pinned version)
TOOL_CHECKS = {
    "cosign": (["version"], "GitVersion:    {v}"),
    "cosign3": (["version"], "GitVersion:    {v}"),
    "notation": (["version"], "Version:     {v}"),
    "helm": (["version", "--short"], "{minor}"),  # no ldflags: helm reports major.minor only
    "kubeconform": (["-v"], ""),
    "ocireg": (["-h"], "-address"),
}


@pytest.mark.tools
@pytest.mark.parametrize("name", GO_TOOLS)
def test_pinned_tool_runs(name):
    path = tools.require_tool(name)
    args, expected = TOOL_CHECKS[name]
    proc = subprocess.run([str(path), *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    version = tools.pinned_versions()[name]
    minor = ".".join(version.split(".")[:2])
    assert expected.format(v=version, minor=minor) in proc.stdout + proc.stderr


def test_ensure_tools_reports_what_tool_path_finds():
    """With every tool built, ensure-tools.sh is a no-op that prints the paths tool_path returns."""
    if any(tools.tool_path(n) is None for n in GO_TOOLS):
        tools.require_tool(next(n for n in GO_TOOLS if tools.tool_path(n) is None))
    script = tools.TOOLS_DIR / "ensure-tools.sh"
    proc = subprocess.run(["bash", str(script), *GO_TOOLS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    printed = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert printed == {n: str(tools.tool_path(n)) for n in GO_TOOLS}
