"""Verification results reused across scans: one cheap request per digest when nothing changed; a
vanished signature, a replaced signature or a changed key is noticed (counted in the real registry's
access log, not by our own counters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sig_tag, sign_image
from tests.harness.demo import _pod

pytestmark = pytest.mark.integration


def scan(pods: Path, policy: Path, db: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                        str(policy), "--db", db, "-o", "json", "--no-progress"], capture_output=True, text=True,
                       timeout=120, env=os.environ.copy())
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_warm_scan_reuses_and_notices_changes(registry_factory, tmp_path: Path) -> None:
    reg = registry_factory()
    key = KeyPair.ecdsa()
    names = [f"app{i}" for i in range(5)]
    digests = {n: oci.make_image(reg.url, f"c/{n}", "1") for n in names}
    for n in names:
        sign_image(reg.url, reg.host, f"c/{n}", digests[n], key)
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    body = (f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: ['{reg.host}']\n"
            f"  rules:\n    - name: r\n      images: ['{reg.host}/*']\n"
            "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    policy.write_text(body)
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{reg.host}/c/{n}:1", f"{reg.host}/c/{n}@{d}")]) for n, d in digests.items()]}))
    db = f"sqlite:///{tmp_path / 's.db'}"

    before = reg.request_count()
    cold = scan(pods, policy, db)
    cold_requests = reg.request_count() - before
    assert {i["status"] for i in cold["images"]} == {"verified"}
    before = reg.request_count()
    warm = scan(pods, policy, db)
    warm_requests = reg.request_count() - before
    assert {i["status"] for i in warm["images"]} == {"verified"}
    assert warm_requests <= len(names) < cold_requests, (cold_requests, warm_requests)

    # The signature of app0 disappears: the cheap re-list sees it, the verdict is unsigned.
    with httpx.Client() as c:
        r = c.head(f"{reg.url}/v2/c/app0/manifests/{sig_tag(digests['app0'])}",
                   headers={"Accept": oci.OCI_MANIFEST})
        c.delete(f"{reg.url}/v2/c/app0/manifests/{r.headers['docker-content-digest']}").raise_for_status()
    # app1's signature is replaced by one from another key: a different .sig manifest, a miss.
    sign_image(reg.url, reg.host, "c/app1", digests["app1"], KeyPair.ecdsa())
    after = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in scan(pods, policy, db)["images"]}
    assert after == {"app0": "unsigned", "app1": "invalid", "app2": "verified", "app3": "verified",
                     "app4": "verified"}

    # A changed trust key invalidates every cached verdict.
    other = KeyPair.ecdsa()
    (tmp_path / "k.pub").write_text(other.public_pem)
    after = {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in scan(pods, policy, db)["images"]}
    assert set(after.values()) <= {"invalid", "unsigned"} and after["app2"] == "invalid"


def test_notation_results_are_reused_when_no_revocation_endpoint_is_named(registry_factory, tmp_path: Path) -> None:
    """Notation verdicts are cached only when no network answer (CRL/OCSP/TSA) went into them."""
    from tests.harness import notation_sign

    reg = registry_factory()
    pki = notation_sign.make_pki("Cache Signer")
    names = ["n0", "n1", "n2"]
    digests = {n: oci.make_image(reg.url, f"nc/{n}", "1") for n in names}
    for n in names:
        notation_sign.sign_image(reg.url, f"nc/{n}", digests[n], pki.chain)
    policy_path, store_dir = notation_sign.write_trust_material(tmp_path / "trust", {"sigaudit": [pki.root]})
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{reg.host}']\n  rules:\n    - name: n\n      images: ['{reg.host}/*']\n"
                      f"      verifiers: [{{notation: {{trustPolicy: {policy_path}, trustStore: {store_dir}}}}}]\n")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{reg.host}/nc/{n}:1", f"{reg.host}/nc/{n}@{d}")]) for n, d in digests.items()]}))
    db = f"sqlite:///{tmp_path / 'n.db'}"
    before = reg.request_count()
    assert {i["status"] for i in scan(pods, policy, db)["images"]} == {"verified"}
    cold = reg.request_count() - before
    before = reg.request_count()
    assert {i["status"] for i in scan(pods, policy, db)["images"]} == {"verified"}
    warm = reg.request_count() - before
    # One referrers listing per digest, plus one probe per registry for the referrers API.
    assert warm <= len(names) + 1 < cold, (cold, warm)


# -- issue 17 A: a cached verdict is keyed by every input of the decision ------------------------------


def scan_statuses(pods: Path, policy: Path, db: str | None) -> dict[str, str]:
    """{repository: status} of one scan; ``db`` None: ``--no-store`` (no cache at all)."""
    store = ["--db", db] if db else ["--no-store"]
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                        str(policy), *store, "-o", "json", "--no-progress"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "SIGAUDIT_SIGSTORE_OFFLINE": "1"})
    assert r.returncode in (0, 1), r.stderr
    return {i["repository"]: i["status"] for i in json.loads(r.stdout)["images"]}


def copy_with_referrers(url: str, src: str, dst: str, digest: str, tag: str = "1") -> None:
    """Promote ``src@digest`` to ``dst`` the way ``oras cp -r`` / ``regctl image copy --referrers``
    do: the same manifest bytes (so the same digest), its blobs, and the signatures attached to it
    (docker-registry 2.8 has no referrers API: the ``sha256-<hex>`` tag index and what it lists)."""

    def copy_manifest(ref: str, to: str) -> None:
        raw, media_type = oci.get_manifest(url, src, ref)
        doc = json.loads(raw)
        for desc in [doc.get("config"), *doc.get("layers", []), *doc.get("manifests", [])]:
            if desc and desc.get("mediaType") not in (oci.OCI_MANIFEST, oci.OCI_INDEX):
                oci.push_blob(url, dst, oci.get_blob(url, src, desc["digest"]))
            elif desc:
                copy_manifest(desc["digest"], desc["digest"])
        oci.push_manifest(url, dst, to, raw, media_type.split(";")[0])

    copy_manifest(digest, tag)
    referrers_tag = digest.replace(":", "-", 1)
    if httpx.head(f"{url}/v2/{src}/manifests/{referrers_tag}", headers={"Accept": oci.OCI_INDEX}).status_code == 200:
        copy_manifest(referrers_tag, referrers_tag)


def _two_repo_estate(tmp_path: Path, reg, statements: list[dict], stores: dict[str, list]) -> Path:
    """A trust policy with ``statements`` and ca stores ``{name: [Issued]}``, and an AuditPolicy using it."""
    trust = tmp_path / "trust"
    for name, certs in stores.items():
        d = trust / "truststore" / "x509" / "ca" / name
        d.mkdir(parents=True)
        for i, c in enumerate(certs):
            (d / f"cert{i}.pem").write_bytes(c.pem)
    (trust / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": statements}))
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{reg.host}']\n  rules:\n    - name: n\n      images: ['{reg.host}/*']\n"
                      f"      verifiers: [{{notation: {{trustPolicy: {trust / 'trustpolicy.json'}, "
                      f"trustStore: {trust / 'truststore'}}}}}]\n")
    return policy


def _pods(tmp_path: Path, name: str, reg, digest: str, repos: list[str]) -> Path:
    pods = tmp_path / name
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod(r.split("/")[0], f"p-{r.replace('/', '-')}", [("c", f"{reg.host}/{r}:1", f"{reg.host}/{r}@{digest}")])
        for r in repos]}))
    return pods


def _strict(name: str, scope: str, store: str) -> dict:
    return {"name": name, "registryScopes": [scope], "signatureVerification": {"level": "strict"},
            "trustStores": [f"ca:{store}"], "trustedIdentities": ["*"]}


def test_notation_verdict_of_one_repository_is_not_reused_for_another(registry_factory, tmp_path: Path) -> None:
    """One digest in dev/app and prod/app, with the dev signer's notation signature promoted along
    with it. The trust policy's registryScopes choose the statement: dev trusts the dev signer, prod
    only the prod signer. A scan of dev must not make the prod pod `verified` from the cache."""
    from tests.harness import notation_sign

    reg = registry_factory()
    dev_pki, prod_pki = notation_sign.make_pki("Dev Signer"), notation_sign.make_pki("Prod Signer")
    digest = oci.make_image(reg.url, "dev/app", "1")
    notation_sign.sign_image(reg.url, "dev/app", digest, dev_pki.chain)
    copy_with_referrers(reg.url, "dev/app", "prod/app", digest)
    policy = _two_repo_estate(tmp_path, reg, [_strict("dev", f"{reg.host}/dev/app", "dev"),
                                              _strict("prod", f"{reg.host}/prod/app", "prod")],
                              {"dev": [dev_pki.root], "prod": [prod_pki.root]})
    dev, prod = f"{reg.host}/dev/app", f"{reg.host}/prod/app"
    dev_pods = _pods(tmp_path, "dev.json", reg, digest, ["dev/app"])
    prod_pods = _pods(tmp_path, "prod.json", reg, digest, ["prod/app"])
    both = _pods(tmp_path, "both.json", reg, digest, ["dev/app", "prod/app"])
    # Without a cache: what each repository's statement says.
    assert scan_statuses(both, policy, None) == {dev: "verified", prod: "invalid"}

    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert scan_statuses(dev_pods, policy, db) == {dev: "verified"}
    assert scan_statuses(prod_pods, policy, db) == {prod: "invalid"}  # was `verified`, by the dev statement
    assert scan_statuses(dev_pods, policy, db) == {dev: "verified"}

    # Both in one scan, then again warm: each keeps its own verdict.
    db = f"sqlite:///{tmp_path / 'b.db'}"
    assert scan_statuses(both, policy, db) == {dev: "verified", prod: "invalid"}
    assert scan_statuses(both, policy, db) == {dev: "verified", prod: "invalid"}


def test_notation_skip_statement_of_one_repository_is_not_reused_for_another(registry_factory,
                                                                              tmp_path: Path) -> None:
    """dev/app's statement is `skip`; prod/app's is strict. The same unsigned digest runs in both:
    the dev verdict (verified by skip) must not be served to the prod pod."""
    from tests.harness import notation_sign

    reg = registry_factory()
    prod_pki = notation_sign.make_pki("Prod Signer")
    digest = oci.make_image(reg.url, "dev/app", "1")
    copy_with_referrers(reg.url, "dev/app", "prod/app", digest)
    policy = _two_repo_estate(tmp_path, reg, [
        {"name": "dev", "registryScopes": [f"{reg.host}/dev/app"], "signatureVerification": {"level": "skip"}},
        _strict("prod", f"{reg.host}/prod/app", "prod")], {"prod": [prod_pki.root]})
    dev, prod = f"{reg.host}/dev/app", f"{reg.host}/prod/app"
    dev_pods = _pods(tmp_path, "dev.json", reg, digest, ["dev/app"])
    prod_pods = _pods(tmp_path, "prod.json", reg, digest, ["prod/app"])
    both = _pods(tmp_path, "both.json", reg, digest, ["dev/app", "prod/app"])
    assert scan_statuses(both, policy, None) == {dev: "verified", prod: "unsigned"}

    db = f"sqlite:///{tmp_path / 'a.db'}"
    assert scan_statuses(dev_pods, policy, db) == {dev: "verified"}
    assert scan_statuses(prod_pods, policy, db) == {prod: "unsigned"}  # was `verified`, by dev's skip

    db = f"sqlite:///{tmp_path / 'b.db'}"
    assert scan_statuses(both, policy, db) == {dev: "verified", prod: "unsigned"}
    assert scan_statuses(both, policy, db) == {dev: "verified", prod: "unsigned"}


def _cosign_key_policy(path: Path, reg, verifier: str) -> Path:
    path.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                    f"  insecureRegistries: ['{reg.host}']\n  rules:\n    - name: k\n      images: ['{reg.host}/*']\n"
                    f"      verifiers: [{{cosign: {verifier}}}]\n")
    return path


def test_cosign_key_verdict_is_not_reused_under_another_rekor_key_or_trusted_root(registry_factory,
                                                                                    tmp_path: Path) -> None:
    """A key signature made by the real cosign with the log (a mock Rekor's SET). The key verifier
    checks the SET against `rekorPubKey` / the `trustedRoot`'s logs: when that trust changes (same
    file, other content), a warm scan must judge as a scan without cache does: `invalid`."""
    from tests.harness.tools import require_tool
    from tests.sigstore_mock.harness import MockSigstore

    cosign = require_tool("cosign")
    reg = registry_factory()
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run([str(cosign), "generate-key-pair"], cwd=keys, check=True, capture_output=True, timeout=60,
                   env={**os.environ, "COSIGN_PASSWORD": ""})
    digest = oci.make_image(reg.url, "c/logged", "1")
    with MockSigstore.start(tmp_path / "mock") as mock, MockSigstore.start(tmp_path / "other") as other:
        r = subprocess.run([str(cosign), "sign", "--key", str(keys / "cosign.key"), "--rekor-url", mock.url,
                            "--allow-http-registry", "--allow-insecure-registry", "-y",
                            f"{reg.host}/c/logged@{digest}"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COSIGN_PASSWORD": "", "TUF_ROOT": "/nonexistent-sigaudit",
                                "SIGSTORE_REKOR_PUBLIC_KEY": str(mock.rekor_pub)})
        assert r.returncode == 0, r.stderr[-3000:]
        ours = {"rekor": mock.rekor_pub.read_bytes(), "root": mock.trusted_root.read_bytes()}
        theirs = {"rekor": other.rekor_pub.read_bytes(), "root": other.trusted_root.read_bytes()}
    pods = _pods(tmp_path, "pods.json", reg, digest, ["c/logged"])
    image = f"{reg.host}/c/logged"
    (tmp_path / "rekor.pub").write_bytes(ours["rekor"])
    (tmp_path / "root.json").write_bytes(ours["root"])
    pub = keys / "cosign.pub"
    for label, verifier, trust_file, kind in (
        ("rekorPubKey", f"{{key: {pub}, ignoreTlog: false, rekorPubKey: rekor.pub}}", "rekor.pub", "rekor"),
        ("trustedRoot", f"{{key: {pub}, ignoreTlog: false, trustedRoot: root.json}}", "root.json", "root"),
    ):
        (tmp_path / trust_file).write_bytes(ours[kind])
        policy = _cosign_key_policy(tmp_path / f"policy-{kind}.yaml", reg, verifier)
        db = f"sqlite:///{tmp_path / f'{kind}.db'}"
        assert scan_statuses(pods, policy, db) == {image: "verified"}, label
        assert scan_statuses(pods, policy, db) == {image: "verified"}, label
        # Another log's key, written over the same file: the SET is from a log no longer trusted.
        (tmp_path / trust_file).write_bytes(theirs[kind])
        assert scan_statuses(pods, policy, None) == {image: "invalid"}, label
        assert scan_statuses(pods, policy, db) == {image: "invalid"}, label  # was `verified` from the cache
        # And back: the first verdict is served again (the old entry is still valid for the old trust).
        (tmp_path / trust_file).write_bytes(ours[kind])
        assert scan_statuses(pods, policy, db) == {image: "verified"}, label


def test_recheck_window_judges_a_warm_scan_without_requests(registry_factory, tmp_path: Path) -> None:
    """--recheck-after through the real CLI, store and registry: the second scan sends no request and
    says since when each verdict's signatures were seen; a changed key is still a miss; --no-store or
    --no-cache with a window is a usage error."""
    reg = registry_factory()
    key = KeyPair.ecdsa()
    names = [f"app{i}" for i in range(4)]
    digests = {n: oci.make_image(reg.url, f"w/{n}", "1") for n in names}
    for n in names[:3]:
        sign_image(reg.url, reg.host, f"w/{n}", digests[n], key)  # app3 stays unsigned
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                      f"  insecureRegistries: ['{reg.host}']\n"
                      f"  rules:\n    - name: r\n      images: ['{reg.host}/*']\n"
                      "      verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]\n")
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("ns", f"p-{n}", [("c", f"{reg.host}/w/{n}:1", f"{reg.host}/w/{n}@{d}")]) for n, d in digests.items()]}))
    db = f"sqlite:///{tmp_path / 's.db'}"

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy",
                               str(policy), "--db", db, "-o", "json", "--no-progress", *extra],
                              capture_output=True, text=True, timeout=120, env=os.environ.copy())

    def statuses(doc: dict) -> dict[str, tuple[str, str | None]]:
        return {i["repository"].rsplit("/", 1)[-1]: (i["status"], i["checked_at"]) for i in doc["images"]}

    cold = run("--recheck-after", "1h")
    assert cold.returncode == 1, cold.stderr
    assert statuses(json.loads(cold.stdout)) == {"app0": ("verified", None), "app1": ("verified", None),
                                                 "app2": ("verified", None), "app3": ("unsigned", None)}
    before = reg.request_count()
    warm = run("--recheck-after", "1h")
    warm_doc = json.loads(warm.stdout)
    got = statuses(warm_doc)
    # Only the unsigned image is re-checked (the /v2/ probe, a HEAD of its .sig tag, a referrers listing).
    assert 1 <= reg.request_count() - before <= 3, reg.request_count() - before
    assert got["app3"] == ("unsigned", None)
    assert all(got[n][0] == "verified" and got[n][1] for n in names[:3]), got
    # Without the window the same database re-lists every digest, as before.
    before = reg.request_count()
    assert {s for s, _ in statuses(json.loads(run().stdout)).values()} == {"verified", "unsigned"}
    assert reg.request_count() - before >= len(names)
    # A changed trust key is a miss inside the window.
    (tmp_path / "k.pub").write_text(KeyPair.ecdsa().public_pem)
    changed = statuses(json.loads(run("--recheck-after", "1h").stdout))
    assert changed["app0"] == ("invalid", None) and changed["app3"] == ("unsigned", None)
    for extra in (("--no-store",), ("--no-cache",)):
        r = run("--recheck-after", "1h", *extra)
        assert r.returncode == 2 and "--recheck-after" in r.stderr, (extra, r.stderr)
