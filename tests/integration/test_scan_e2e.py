"""The walking skeleton end to end: a real docker-registry, signatures in cosign's layout, the real
CLI as a process, SQLite and PostgreSQL stores. Each verdict of issue 3's 'done when' list is here."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod, publish_estate, write_pods, write_policy

pytestmark = pytest.mark.integration


def sigaudit(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def estate(registry, tmp_path_factory):
    d = tmp_path_factory.mktemp("estate")
    est = publish_estate(registry.url, registry.host)
    return est, write_policy(est, d), write_pods(est, d / "pods.json"), d


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}


def test_verdict_matrix_into_sqlite(estate, tmp_path: Path) -> None:
    est, policy, pods, _ = estate
    db = f"sqlite:///{tmp_path / 'a.db'}"
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db", db, "-o", "json",
                 "--cluster", "e2e", "--no-progress")
    assert r.returncode == 1, r.stderr  # non-compliant images found, scan itself fine
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["scan"]["status"] == "complete" and doc["scan"]["id"]
    assert statuses(doc) == est.expected
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in doc["images"]}
    # Every verdict carries reasons; the failing ones say why in words.
    assert all(i["reasons"] for i in doc["images"])
    assert any("another image" in r for r in by["other-digest"]["reasons"])
    assert any("does not verify" in r for r in by["wrong-key"]["reasons"])
    assert any("revoked" in r and "INC-7" in r for r in by["revoked"]["reasons"])
    assert any("lapsed" in r for r in by["legacy"]["reasons"])
    assert any("connection refused" in r or "cannot connect" in r for r in by["gone"]["reasons"])
    # The drifted image is judged on the digest that runs, not where the tag points now.
    assert by["drifted"]["digest"] == est.digests["drifted"] != est.digests["drifted-now"]
    # Running digest unknown (not started, upper-case imageID, local image id): error, never compliant;
    # what the (signed) tag names now is information only.
    for name in ("pending", "uppercase-id", "local-build"):
        assert not by[name]["compliant"] and by[name]["digest"] is None
        assert by[name]["reasons"][by[name]["deciding_reason"]].startswith("running digest unknown")
    # Containers of all kinds and their workloads.
    kinds = {(c["container_type"], c["workload_kind"]) for i in doc["images"] for c in i["containers"]}
    assert ("initContainer", "Deployment") in kinds and ("ephemeralContainer", "Deployment") in kinds
    want_verified = sum(1 for v in est.expected.values() if v == "verified")
    assert doc["summary"]["by_status"]["verified"] == want_verified and doc["summary"]["images"] == len(est.expected)
    assert {i["repository"].rsplit("/", 1)[-1] for i in doc["images"] if i["expiring"]} == est.expiring
    assert by["notation-expired"]["signatures"][0]["failure"] == "expired"
    # One verification per unique digest: 51 containers of 'signed' would still be one image.
    assert len(by["signed"]["containers"]) == 2


def test_an_unknown_running_digest_is_never_judged_on_its_tag(estate) -> None:
    """Issue 17: the tag of each of these names a digest signed by the trusted key. What runs is not
    known (an upper-case imageID naming the unsigned digest, a local image id, a pod not started yet),
    so each is an error; the tag's verdict is given for information, never counted."""
    est, policy, pods, _ = estate
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "-n", "payments", "--no-progress")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in doc["images"]}
    for name, why in (("uppercase-id", "imageID"), ("local-build", "local image id"), ("pending", "no image digest")):
        img = by[name]
        assert (img["status"], img["compliant"], img["digest"]) == ("error", False, None), img
        headline = img["reasons"][img["deciding_reason"]]
        assert headline.startswith("running digest unknown") and why in headline, img["reasons"]
        info = [x for x in img["reasons"] if x.startswith("information only")]
        assert len(info) == 1 and est.digests[name] in info[0] and "is verified" in info[0], img["reasons"]
        assert img["signatures"] == []  # the tag's signatures are not evidence about what runs
    # The unsigned digest that actually runs under uppercase-id is never reported as verified.
    assert est.digests["uppercase-id-runs"] not in json.dumps([i for i in doc["images"] if i["compliant"]])
    assert doc["summary"]["by_status"]["verified"] == 1  # drifted: its running digest is known and signed


def test_exit_zero_when_everything_in_scope_is_compliant(estate, tmp_path: Path) -> None:
    _, policy, pods, _ = estate
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "-n", "kube-system",
                 "--db", f"sqlite:///{tmp_path / 'b.db'}", "-o", "json", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert statuses(json.loads(r.stdout)) == {"pause": "exempt"}


def test_exit_zero_on_violations_flag_for_cronjobs(estate) -> None:
    _, policy, pods, _ = estate
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "none",
                 "--exit-zero-on-violations", "--no-progress")
    assert r.returncode == 0, r.stderr


def test_postgres_store_round_trip(estate, postgres_url: str) -> None:
    _, policy, pods, _ = estate
    assert sigaudit("db", "upgrade", "--db", postgres_url).returncode == 0
    assert sigaudit("db", "upgrade", "--db", postgres_url).returncode == 0  # twice is a no-op
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--db", postgres_url, "-o", "json",
                 "--cluster", "pg", "--no-progress")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    from scanner.document import scan_document
    from scanner.store import open_store

    store = open_store(postgres_url)
    try:
        reloaded = scan_document(store.load_scan(doc["scan"]["id"]))
    finally:
        store.close()
    assert reloaded == doc


def test_table_output_for_people(estate) -> None:
    est, policy, pods, _ = estate
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "--no-progress")
    assert r.returncode == 1
    compliant = sum(1 for v in est.expected.values() if v in ("verified", "exempt"))
    assert "revoked" in r.stdout and f"Compliant {compliant}/{len(est.expected)}" in r.stdout
    # The revoked image's row gives the revocation that decided it, not the other key's failure
    # listed first among its reasons.
    lines = r.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "demo/revoked" in line)
    row = [lines[start], *itertools.takewhile(lambda x: x.startswith("│           │"), lines[start + 1:])]
    reason = " ".join(line.rsplit("│", 2)[-2].strip() for line in row)
    assert "is revoked" in reason and "INC-7" in reason and "does not verify" not in reason, reason


def test_config_errors_exit_2(estate, tmp_path: Path) -> None:
    _, _, pods, _ = estate
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rulez: []\n")
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(bad), "--no-store")
    assert r.returncode == 2 and "bad.yaml:4" in r.stderr and "unknown field" in r.stderr
    r = sigaudit("scan", "--pods-file", str(pods), "--no-store")
    assert r.returncode == 2 and "no policy" in r.stderr


def test_malformed_pod_list_fails_the_scan_with_exit_3(estate, tmp_path: Path) -> None:
    _, policy, _, _ = estate
    broken = tmp_path / "pods.json"
    broken.write_text('{"apiVersion": "v1", "items": [{"metadata": {"name": "a"}')
    db = f"sqlite:///{tmp_path / 'c.db'}"
    r = sigaudit("scan", "--pods-file", str(broken), "--policy", str(policy), "--db", db, "--no-progress")
    assert r.returncode == 3 and "malformed or truncated" in r.stderr
    from scanner.store import open_store

    store = open_store(db)
    try:
        assert store.latest_scan_id("default") is None  # the failed scan never reads as complete
    finally:
        store.close()


def _private_registry_policy(tmp_path: Path, host: str, key: KeyPair) -> Path:
    (tmp_path / "k.pub").write_text(key.public_pem)
    p = tmp_path / "policy.yaml"
    p.write_text(f"""apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  insecureRegistries: ["{host}"]
  rules:
    - name: private
      images: ["{host}/*"]
      verifiers: [{{cosign: {{key: k.pub, ignoreTlog: true}}}}]
""")
    return p


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
def test_private_registry_with_docker_config_and_pull_secret_scope(registry_factory, tmp_path: Path, auth: str):
    reg = registry_factory(auth=auth)
    creds = ("alice", "wonderland")
    key = KeyPair.ecdsa()
    client_auth = creds if auth == "htpasswd" else oci.RegistryAuth(*creds)
    digest = oci.make_image(reg.url, "private/app", "1", auth=client_auth)
    sign_image(reg.url, reg.host, "private/app", digest, key, auth=client_auth)
    policy = _private_registry_policy(tmp_path, reg.host, key)
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("a", "p", [("c", f"{reg.host}/private/app:1", f"{reg.host}/private/app@{digest}")])]}))
    # Without credentials: the verdict is error (auth refused), never unsigned and never verified.
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "--docker-config", str(tmp_path / "none.json"), "--no-progress",
                 env={"DOCKER_CONFIG": str(tmp_path / "empty")})
    assert r.returncode == 2  # an explicitly named but missing docker config is a config error
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "--no-progress", env={"DOCKER_CONFIG": str(tmp_path / "empty")})
    img = json.loads(r.stdout)["images"][0]
    assert img["status"] == "error" and any("401" in x or "refused" in x or "credentials" in x for x in img["reasons"])
    # With docker config.json credentials: verified.
    cfg = tmp_path / "docker"
    cfg.mkdir()
    secret = base64.b64encode(b"alice:wonderland").decode()
    (cfg / "config.json").write_text(json.dumps({"auths": {reg.host: {"auth": secret}}}))
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "--no-progress", env={"DOCKER_CONFIG": str(cfg)})
    doc = json.loads(r.stdout)
    assert doc["images"][0]["status"] == "verified", doc["images"][0]["reasons"]
    assert "wonderland" not in r.stdout + r.stderr and secret not in r.stdout + r.stderr


def test_real_cosign_cli_signature_verifies(registry, tmp_path: Path) -> None:
    from tests.harness.tools import require_tool

    cosign = require_tool("cosign")
    env = {**os.environ, "COSIGN_PASSWORD": "", "HOME": str(tmp_path)}
    subprocess.run([str(cosign), "generate-key-pair"], cwd=tmp_path, env=env, check=True, capture_output=True)
    digest = oci.make_image(registry.url, "cosigned/app", "1")
    ref = f"{registry.host}/cosigned/app@{digest}"
    r = subprocess.run([str(cosign), "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes",
                        "--allow-insecure-registry", "--allow-http-registry", ref], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    other = KeyPair.ecdsa()
    (tmp_path / "other.pub").write_text(other.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  insecureRegistries: ["{registry.host}"]
  rules:
    - name: good
      images: ["{registry.host}/cosigned/*"]
      namespaces: ["good"]
      verifiers: [{{cosign: {{key: cosign.pub, ignoreTlog: true}}}}]
    - name: wrong
      images: ["{registry.host}/cosigned/*"]
      verifiers: [{{cosign: {{key: other.pub, ignoreTlog: true}}}}]
""")
    pods = tmp_path / "pods.json"
    iid = f"{registry.host}/cosigned/app@{digest}"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("good", "p", [("c", f"{registry.host}/cosigned/app:1", iid)]),
        _pod("bad", "q", [("c", f"{registry.host}/cosigned/app:1", iid)])]}))
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "--no-progress")
    got = {(i["rule"], i["status"]) for i in json.loads(r.stdout)["images"]}
    assert got == {("good", "verified"), ("wrong", "invalid")}, r.stdout


def test_bad_signature_material_gives_reasons_not_crashes(registry, tmp_path: Path) -> None:
    """Malformed payloads, missing annotations and oversized layers in a real registry."""
    from tests.harness.cosign_sign import SIG_ANNOTATION, push_signatures

    key = KeyPair.ecdsa()
    host, url = registry.host, registry.url
    cases: dict[str, tuple[str, str]] = {}

    def image(name: str) -> str:
        d = oci.make_image(url, f"bad/{name}", "1")
        cases[name] = (d, "")
        return d

    garbage = b"{not json"
    push_signatures(url, "bad/garbage", image("garbage"),
                    [(garbage, {SIG_ANNOTATION: base64.b64encode(key.sign(garbage)).decode()})])
    no_digest = b'{"critical": {"image": {}}}'
    push_signatures(url, "bad/nodigest", image("nodigest"),
                    [(no_digest, {SIG_ANNOTATION: base64.b64encode(key.sign(no_digest)).decode()})])
    push_signatures(url, "bad/noannotation", image("noannotation"), [(b"{}", {})])
    push_signatures(url, "bad/notbase64", image("notbase64"), [(b"{}", {SIG_ANNOTATION: "%%%not-base64%%%"})])
    big = b"x" * (5 * 1024 * 1024)
    push_signatures(url, "bad/oversized", image("oversized"), [(big, {SIG_ANNOTATION: "AAAA"})])
    expected = {"garbage": "invalid", "nodigest": "invalid", "noannotation": "invalid", "notbase64": "invalid",
                "oversized": "error"}
    policy = _private_registry_policy(tmp_path, host, key)
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("a", f"p-{n}", [("c", f"{host}/bad/{n}:1", f"{host}/bad/{n}@{d}")]) for n, (d, _) in cases.items()]}))
    r = sigaudit("scan", "--pods-file", str(pods), "--policy", str(policy), "--no-store", "-o", "json",
                 "--no-progress")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    got = {i["repository"].rsplit("/", 1)[-1]: i for i in json.loads(r.stdout)["images"]}
    for name, status in expected.items():
        assert got[name]["status"] == status, (name, got[name]["reasons"])
        assert got[name]["reasons"], name
    assert any("exceeds the limit" in x for x in got["oversized"]["reasons"])
    assert any("malformed" in x for x in got["garbage"]["reasons"])
