"""The pinned peer tools work against the harness registries (so other tests can rely on both)."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from tests.harness import oci
from tests.harness.tools import require_tool

pytestmark = [pytest.mark.integration, pytest.mark.tools]


def _run(tmp_path, *args):
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "COSIGN_PASSWORD": ""}
    proc = subprocess.run([str(a) for a in args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def test_cosign_v2_signs_and_verifies_on_distribution(registry, tmp_path):
    cosign = require_tool("cosign")
    digest = oci.make_image(registry.url, "peers/cosign2", "v1")
    ref = f"{registry.host}/peers/cosign2@{digest}"
    _run(tmp_path, cosign, "generate-key-pair")
    _run(tmp_path, cosign, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", ref)
    _run(tmp_path, cosign, "verify", "--key", "cosign.pub", "--insecure-ignore-tlog", ref)
    tags = httpx.get(f"{registry.url}/v2/peers/cosign2/tags/list").json()["tags"]
    assert digest.replace(":", "-") + ".sig" in tags


def test_cosign_v3_bundle_is_listed_as_referrer(referrers_registry, tmp_path):
    cosign3 = require_tool("cosign3")
    reg = referrers_registry
    digest = oci.make_image(reg.url, "peers/cosign3", "v1")
    _run(tmp_path, cosign3, "generate-key-pair")
    _run(
        tmp_path,
        cosign3,
        "sign",
        "--key",
        "cosign.key",
        "--tlog-upload=false",
        "--yes",
        "--new-bundle-format",
        "--use-signing-config=false",
        f"{reg.host}/peers/cosign3@{digest}",
    )
    refs = oci.list_referrers(reg.url, "peers/cosign3", digest).json()["manifests"]
    assert [m["artifactType"] for m in refs] == ["application/vnd.dev.sigstore.bundle.v0.3+json"]


def test_notation_signs_as_referrer(referrers_registry, tmp_path):
    notation = require_tool("notation")
    reg = referrers_registry
    digest = oci.make_image(reg.url, "peers/notation", "v1")
    ref = f"{reg.host}/peers/notation@{digest}"
    _run(tmp_path, notation, "cert", "generate-test", "--default", "harness")
    _run(tmp_path, notation, "sign", "--insecure-registry", ref)
    refs = oci.list_referrers(reg.url, "peers/notation", digest).json()["manifests"]
    assert [m["artifactType"] for m in refs] == ["application/vnd.cncf.notary.signature"]
    assert "application/vnd.cncf.notary.signature" in _run(tmp_path, notation, "ls", "--insecure-registry", ref).stdout
