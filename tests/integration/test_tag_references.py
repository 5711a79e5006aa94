"""Tag references (issue #25 item 4): containers whose pod spec names an image by tag rather than by
digest are a finding, as Kyverno's ``verifyDigest`` and Gatekeeper's ``k8simagedigests`` report
them, never a change of verdict. One real ``sigaudit scan`` (a process) over images in the real
docker-registry, stored in SQLite: the JSON document, the HTML report (written by the scan and by
``sigaudit report`` from the store) and the metrics file all carry it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.harness import oci
from tests.harness.demo import _pod

pytestmark = pytest.mark.integration


def sigaudit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=180, env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})


def test_tag_references_are_a_finding_in_json_report_and_metrics(registry, tmp_path: Path) -> None:
    pushed = oci.push_image(registry.url, "tags/app", "v1")
    repo = f"{registry.host}/tags/app"
    running = f"{repo}@{pushed.digest}"
    pods = [
        _pod("team-a", "by-tag", [("web", f"{repo}:v1", running)]),
        _pod("team-a", "by-digest", [("web", running, running)]),
        # No tag at all (latest) in an init container; a tag *and* a digest pins the digest.
        _pod("team-b", "mixed", [("web", f"{repo}:v1@{pushed.digest}", running)], init=[("setup", repo, running)]),
        _pod("team-c", "pinned", [("web", running, running)]),
    ]
    (tmp_path / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods,
                                                    "metadata": {}}))
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "tags"},
        "spec": {"insecureRegistries": [registry.host], "rules": [{
            "name": "tags", "images": [f"{registry.host}/tags/*"],
            "verifiers": [{"cosign": {"key": pub, "ignoreTlog": True}}]}]}}))
    db = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    assert sigaudit("db", "upgrade", "--db", db).returncode == 0
    r = sigaudit("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"),
                 "--db", db, "--cluster", "tags", "-o", "json", "--no-progress",
                 "--report", str(tmp_path / "report.html"), "--metrics-file", str(tmp_path / "metrics.prom"))
    assert r.returncode == 1, r.stderr[-3000:]  # unsigned: violations found
    doc = json.loads(r.stdout)

    # JSON: a flag per container, a count in the summary, one finding per container.
    want = [("team-a", "by-tag", "web", f"{repo}:v1"), ("team-b", "mixed", "setup", repo)]
    assert doc["summary"]["tag_references"] == 2
    assert [(f["namespace"], f["pod"], f["container"], f["image"]) for f in doc["findings"]] == want
    assert all(f["kind"] == "tag-reference" for f in doc["findings"])
    (img,) = doc["images"]  # one running digest: the tags changed no verdict
    assert img["status"] == "unsigned"
    flags = {(c["pod"], c["container"]): c["tag_reference"] for c in img["containers"]}
    assert flags == {("by-tag", "web"): True, ("by-digest", "web"): False, ("mixed", "web"): False,
                     ("mixed", "setup"): True, ("pinned", "web"): False}

    # HTML, from the fresh result and from the store.
    r2 = sigaudit("report", "--db", db, "--cluster", "tags", "--out", str(tmp_path / "stored.html"))
    assert r2.returncode == 0, r2.stderr[-2000:]
    stored = sigaudit("report", "--db", db, "--cluster", "tags", "--format", "json")
    assert json.loads(stored.stdout)["findings"] == doc["findings"]
    for html in ((tmp_path / "report.html").read_text(), (tmp_path / "stored.html").read_text()):
        section = html[html.index('<section id="tag-references">'):]
        section = section[:section.index("</section>")]
        assert re.search(r'data-metric="tag-references">\s*2\s*<', section), section[:400]
        assert f"{repo}:v1" in section and ">by-tag<" in section and ">setup (initContainer)<" in section
        assert ">by-digest<" not in section and ">pinned<" not in section

    # Metrics: one series per namespace (0 where every container is pinned), no image label.
    prom = (tmp_path / "metrics.prom").read_text()
    series = {m.group(1): float(m.group(2)) for m in re.finditer(
        r'^sigaudit_tag_reference_containers\{cluster="tags",namespace="([^"]+)"\} (\S+)$', prom, re.M)}
    assert series == {"team-a": 1.0, "team-b": 1.0, "team-c": 0.0}, prom
    assert not re.search(r"^sigaudit_tag_reference_containers\{[^}]*image", prom, re.M)
