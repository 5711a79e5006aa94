"""An end-to-end scan under an imported Kyverno policy (and a ClusterImagePolicy) gives the same verdicts
as the same rules written natively, and each verdict names the policy and rule behind it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness.demo import publish_estate, write_pods, write_policy

pytestmark = pytest.mark.integration


def scan(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--no-store", "-o", "json", "--no-progress",
                        *args], capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def verdicts(doc: dict) -> dict[str, str]:
    return {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}


def test_imported_policies_match_native(registry, tmp_path: Path) -> None:
    est = publish_estate(registry.url, registry.host)
    native = write_policy(est, tmp_path)
    pods = write_pods(est, tmp_path / "pods.json")
    native_doc = yaml.safe_load(native.read_text())
    trusted, revoked = (tmp_path / "trusted.pub").read_text(), (tmp_path / "revoked.pub").read_text()

    # The same rule as a Kyverno ClusterPolicy: two attestor entries, any one (count: 1).
    kyverno = {
        "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "demo"},
        "spec": {"validationFailureAction": "Enforce", "rules": [{
            "name": "demo-images", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
            "verifyImages": [{"imageReferences": [f"{est.host}/demo/*", "127.0.0.1:9/*"], "attestors": [{
                "count": 1, "entries": [{"keys": {"publicKeys": trusted, "rekor": {"ignoreTlog": True}}},
                                        {"keys": {"publicKeys": revoked, "rekor": {"ignoreTlog": True}}}]}]}]}]},
    }
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump(kyverno))
    # Native file keeps what the imported rule does not say: exemptions, revocations, insecure registries,
    # and the demo's notation rule (a notation trust policy, not a cosign key; native rules come first).
    rest = {**native_doc, "spec": {**native_doc["spec"], "rules": [
        r for r in native_doc["spec"]["rules"] if r["name"] != "demo-images"]}}
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump(rest))

    want = scan("--pods-file", str(pods), "--policy", str(native))
    got = scan("--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
               "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    assert verdicts(got) == verdicts(want) == est.expected
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in got["images"]}
    assert by["signed"]["policy_source"] == "kyverno:ClusterPolicy/demo"
    assert by["signed"]["rule"] == "demo/demo-images"

    # The same as a ClusterImagePolicy: its globs are per path segment (demo/* matches demo/x only).
    cip = {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy", "metadata": {"name": "demo"},
           "spec": {"images": [{"glob": f"{est.host}/demo/*"}, {"glob": "127.0.0.1:9/**"}], "authorities": [
               {"name": "trusted", "key": {"data": trusted}, "ctlog": {"ignoreTlog": True}},
               {"name": "revoked", "key": {"data": revoked}, "ctlog": {"ignoreTlog": True}}]}}
    (tmp_path / "cip.yaml").write_text(yaml.safe_dump(cip))
    got = scan("--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
               "--policy-from", f"clusterimagepolicy:{tmp_path / 'cip.yaml'}")
    assert verdicts(got) == est.expected
    assert {i["policy_source"] for i in got["images"] if i["rule"] and i["rule"] != "notation-images"} == {
        "clusterimagepolicy:ClusterImagePolicy/demo"}
