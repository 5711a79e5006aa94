"""What a scan imports at start-up is part of its cost (a warm scan of 2,000 digests is a couple of
seconds, of which imports were a second): a SQLite scan never loads SQLAlchemy's PostgreSQL dialect,
httpx's command-line (rich, pygments) or the Kubernetes client when it reads a pod file, nor httpx
itself while nothing fetches over it (the registry client is on urllib3; the CRL/OCSP fetcher a
notation verifier holds is made at its first request), nor SQLAlchemy's ORM (the store is Core
tables and statements: declaring them as ORM classes cost every scan ~0.1 CPU-s, issue 19)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.harness.cosign_sign import KeyPair
from tests.harness.demo import _pod
from tests.harness.notation_sign import make_pki, write_trust_material

NEVER = ("sqlalchemy.orm", "sqlalchemy.dialects.postgresql", "psycopg", "rich", "pygments", "kubernetes", "httpx",
         "httpcore")


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_sqlite_scan_of_a_pod_file_imports_no_postgres_httpx_cli_or_kubernetes(tmp_path: Path) -> None:
    key = tmp_path / "k.pub"
    key.write_text(KeyPair.ecdsa().public_pem)
    trust_policy, trust_store = write_trust_material(tmp_path / "notation", {"t": [make_pki("t").root]})
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({  # JSON is YAML
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "metadata": {"name": "t"},
        "spec": {"insecureRegistries": ["127.0.0.1:9"], "rules": [
            # a notation verifier holds a CRL/OCSP fetcher (for images no pod runs here)
            {"name": "notary", "images": ["127.0.0.1:9/notary/*"], "verifiers": [
                {"notation": {"trustPolicy": str(trust_policy), "trustStore": str(trust_store)}}]},
            {"name": "all", "images": ["*"], "verifiers": [{"cosign": {"key": str(key), "ignoreTlog": True}}]}]}}))
    digest = "sha256:" + "1" * 64
    pods = tmp_path / "pods.json"  # one pod on a closed local port: the scan runs every stage, fast
    pods.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        _pod("ns", "p", [("app", "127.0.0.1:9/a:1", f"127.0.0.1:9/a@{digest}")], owner=("ReplicaSet", "rs"),
             labels={})]}))
    cmd = [sys.executable, "-X", "importtime", "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
           str(policy), "--db", f"sqlite:///{tmp_path / 's.db'}", "-o", "json", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120)  # creates the database
    assert first.returncode == 1, first.stderr[-2000:]
    warm = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert warm.returncode == 1, warm.stderr[-2000:]
    assert json.loads(warm.stdout)["images"][0]["status"] == "error"  # the scan did reach the registry stage
    modules = _imported(warm.stderr)
    # the test measures: the registry client, the store, the pod-file parser and the notation verifier
    assert {"scanner.registry.client", "scanner.store.store", "urllib3", "ijson", "scanner.verify.notation"} <= modules
    loaded = sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in NEVER))
    assert loaded == []
