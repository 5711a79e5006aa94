"""cosign v3's own bundles, judged by ``sigaudit scan``: an attestation is not an image signature, and
``annotations`` / ``requirePredicateTypes`` hold for bundles as for ``.sig`` (issue #17, section B).

The real ``cosign3`` (v3.1.3) signs and attests images in the real docker-registry (referrers by the
``sha256-<hex>`` tag fallback), without a log (``--tlog-upload=false``; the policy says
``ignoreTlog: true``):

* ``signed``: ``cosign3 sign --new-bundle-format -a env=prod`` — a DSSE bundle with predicate type
  ``https://sigstore.dev/cosign/sign/v1``, ``env=prod`` on the statement's subject;
* ``sbom-only``: ``cosign3 attest --type spdxjson`` only — a DSSE bundle with predicate type
  ``https://spdx.dev/Document``. (``cosign3 verify --key`` itself accepts this image; sigaudit follows
  cosign's signing convention instead: only ``cosign sign`` makes an image signature.)
* ``signed+sbom``: both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import oci
from tests.harness.demo import _pod
from tests.harness.tools import require_tool

pytestmark = pytest.mark.integration
REPO = "fields"
SPDX = "https://spdx.dev/Document"


def _cosign(cosign: Path, *args: str, cwd: Path | None = None) -> None:
    r = subprocess.run([str(cosign), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                       env={**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": "/nonexistent-sigaudit"})
    assert r.returncode == 0, f"{cosign.name} {' '.join(args)}: {r.stderr[-3000:]}"


@pytest.fixture(scope="module")
def estate(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cosign3 = require_tool("cosign3")
    d = tmp_path_factory.mktemp("cosign3-fields")
    _cosign(cosign3, "generate-key-pair", cwd=d)
    (d / "sbom.json").write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "app"}))
    common = ["--key", str(d / "cosign.key"), "--new-bundle-format", "--tlog-upload=false",
              "--use-signing-config=false", "--allow-http-registry", "-y"]
    refs: dict[str, str] = {}
    for name in ("signed", "sbom-only", "signed+sbom"):
        pushed = oci.push_image(registry.url, f"{REPO}/{name.replace('+', '-')}", "v1")
        ref = f"{registry.host}/{REPO}/{name.replace('+', '-')}@{pushed.digest}"
        if "signed" in name:
            _cosign(cosign3, "sign", *common, "-a", "env=prod", ref)
        if "sbom" in name:
            _cosign(cosign3, "attest", *common, "--type", "spdxjson", "--predicate", str(d / "sbom.json"), ref)
        refs[name] = ref
    return {"refs": refs, "pub": d / "cosign.pub", "host": registry.host}


def scan(tmp: Path, estate: dict[str, Any], **fields: Any) -> dict[str, dict[str, Any]]:
    tmp.mkdir(parents=True, exist_ok=True)
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
              "spec": {"insecureRegistries": [estate["host"]],
                       "rules": [{"name": "r", "images": [f"{estate['host']}/{REPO}/*"],
                                  "verifiers": [{"cosign": {"key": str(estate["pub"]), "ignoreTlog": True,
                                                            **fields}}]}]}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(policy))
    pods = [_pod("ns", f"p{n}", [("c", ref, ref)]) for n, ref in enumerate(estate["refs"].values())]
    (tmp / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp / "pods.json"),
                        "--policy", str(tmp / "policy.yaml"), "--no-store", "-o", "json", "--no-progress"],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), r.stderr[-3000:]
    by_digest = {i["digest"]: i for i in json.loads(r.stdout)["images"]}
    return {name: by_digest[ref.split("@")[1]] for name, ref in estate["refs"].items()}


def statuses(got: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {name: d["status"] for name, d in got.items()}


def test_an_sbom_attestation_alone_is_not_an_image_signature(estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate)
    assert statuses(got) == {"signed": "verified", "sbom-only": "unsigned", "signed+sbom": "verified"}, got
    assert any("not an image signature" in r for r in got["sbom-only"]["reasons"])


@pytest.mark.parametrize(("annotations", "want"), [
    ({"env": "prod"}, {"signed": "verified", "sbom-only": "unsigned", "signed+sbom": "verified"}),
    ({"env": "dev"}, {"signed": "invalid", "sbom-only": "unsigned", "signed+sbom": "invalid"}),
    ({"team": "None"}, {"signed": "invalid", "sbom-only": "unsigned", "signed+sbom": "invalid"}),
])
def test_annotations_are_checked_on_cosign3_bundles(estate: dict[str, Any], tmp_path: Path,
                                                    annotations: dict[str, str], want: dict[str, str]) -> None:
    assert statuses(scan(tmp_path, estate, annotations=annotations)) == want


def test_required_predicate_type_on_a_key_verifier(estate: dict[str, Any], tmp_path: Path) -> None:
    got = scan(tmp_path, estate, requirePredicateTypes=[SPDX])
    assert statuses(got) == {"signed": "invalid", "sbom-only": "unsigned", "signed+sbom": "verified"}, got
    assert any(SPDX in r for r in got["signed"]["reasons"])
