"""A registry host name is case-insensitive (DNS): ``REGISTRY.EXAMPLE/app`` is the repository
``registry.example/app``, pulled from the same registry. The policy must judge it as that repository.

Once, the host was kept as written: a pod running ``LOCALHOST:<port>/prod/app`` escaped the rule
written for ``localhost:<port>/prod/*`` (and fell to a later, looser one) and the notation trust
policy statement scoped to ``localhost:<port>/prod/app`` (falling to the ``*`` statement, which
here skips verification): an unsigned image was reported ``verified``. The real CLI scans a real
TLS docker-registry (its certificate names ``localhost``; a registry reached over HTTPS, as in
production, so no ``insecureRegistries`` spelling is involved).
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

from tests.harness import notation_sign as ns
from tests.harness import oci
from tests.harness.cosign_sign import KeyPair

pytestmark = pytest.mark.integration


def _pod(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "prod", "uid": f"uid-{name}"},
            "spec": {"containers": [{"name": "c", "image": image}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c", "image": image, "imageID": image,
                                                                    "ready": True}]}}


def _scan(tmp: Path, ca: Path, pods: list[dict[str, Any]], rules: list[dict[str, Any]]) -> dict[str, Any]:
    (tmp / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "case"},
           "spec": {"rules": rules}}
    (tmp / "policy.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(tmp / "pods.json"),
                           "--policy", str(tmp / "policy.yaml"), "--no-store", "--no-cache", "--no-progress",
                           "-o", "json"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SSL_CERT_FILE": str(ca)})
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


@pytest.mark.parametrize("spelling", ["LOCALHOST:{port}", "localhost:0{port}"])
def test_an_upper_case_registry_host_is_judged_as_the_same_repository(
    registry_factory: Any, tmp_path: Path, spelling: str
) -> None:
    """(Also the port: ``localhost:0<port>`` is the same registry, dialled on the same port, and was once
    judged as another repository just as ``LOCALHOST`` was.)"""
    reg = registry_factory(tls=True)
    assert reg.ca_path is not None
    port = reg.url.rsplit(":", 1)[1]
    host = f"localhost:{port}"
    with reg.client() as c:
        digest = oci.make_image(f"https://{host}", "prod/app", "v1", client=c)  # unsigned
    lower, upper = f"{host}/prod/app@{digest}", f"{spelling.format(port=port)}/prod/app@{digest}"

    # notation: the prod repository is strict, everything else (other registries) is skipped.
    pki = ns.make_pki("Prod Signer")
    store = tmp_path / "truststore" / "x509" / "ca" / "prod"
    store.mkdir(parents=True)
    (store / "root.pem").write_bytes(pki.root.pem)
    (tmp_path / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [
        {"name": "prod", "registryScopes": [f"{host}/prod/app"], "signatureVerification": {"level": "strict"},
         "trustStores": ["ca:prod"], "trustedIdentities": ["*"]},
        {"name": "others", "registryScopes": ["*"], "signatureVerification": {"level": "skip"}}]}))
    notation = [{"name": "notation", "images": ["*"], "verifiers": [
        {"notation": {"trustPolicy": str(tmp_path / "trustpolicy.json"),
                      "trustStore": str(tmp_path / "truststore")}}]}]
    doc = _scan(tmp_path, reg.ca_path, [_pod("a", lower), _pod("b", upper)], notation)
    by = {c["pod"]: i for i in doc["images"] for c in i["containers"]}
    assert by["a"]["status"] == "unsigned", by["a"]["reasons"]
    assert by["b"]["status"] == "unsigned", by["b"]["reasons"]  # was "verified" by the skip statement

    # sigaudit's own rules: the prod rule applies, not the looser catch-all after it.
    (tmp_path / "cosign.pub").write_text(KeyPair.ecdsa().public_pem)
    rules = [{"name": "prod", "images": [f"{host}/prod/*"], "verifiers": [{"cosign": {"key": "cosign.pub",
                                                                                       "ignoreTlog": True}}]},
             {"name": "elsewhere", "images": ["*"], "mode": "warn",
              "verifiers": [{"cosign": {"key": "cosign.pub", "ignoreTlog": True}}]}]
    doc = _scan(tmp_path, reg.ca_path, [_pod("a", lower), _pod("b", upper)], rules)
    by = {c["pod"]: i for i in doc["images"] for c in i["containers"]}
    assert (by["a"]["rule"], by["a"]["warn_only"]) == ("prod", False)
    assert (by["b"]["rule"], by["b"]["warn_only"]) == ("prod", False), by["b"]
