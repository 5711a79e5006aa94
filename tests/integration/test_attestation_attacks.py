"""Attacks on attestations with the real parts: the open-source Grafeas server, AWS KMS in moto (server
mode), an OCI 1.1 registry (ocireg) and the real ``sigaudit scan`` CLI as a process.

- the attestor's signed attestation of staging/app@X, filed again by someone who may write occurrences
  under prod/app@X (same digest, the occurrence's resourceUri is not signed), or copied as a referrer
  of prod/app in the registry: prod/app is not attested (kritis' attestlib checks the repository too).
- kritis allowlists exempt only what kritis admits.
- a hostile Grafeas (a proxy in front of the real one): JSON nested too deeply, an occurrence whose
  ``resource`` is not an object, pages without end, a body trickled a byte at a time: an ``error``
  verdict naming the source, never a traceback, a hang, or "not attested".
"""

from __future__ import annotations

import base64
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
from tests.harness.hostile_registry import Body, HostileRegistry, Rule

pytestmark = pytest.mark.integration

ATTESTOR = "qa-attestor"
ARTIFACT = "application/vnd.sigaudit.attestation.v1+json"


def sigaudit(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SIGAUDIT_"))}
    return subprocess.run([sys.executable, "-m", "scanner.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, **env})


def kritis_payload(repo: str, digest: str) -> bytes:
    doc = {"critical": {"identity": {"docker-reference": repo}, "image": {"docker-manifest-digest": digest},
                        "type": "atomic container signature"}}
    return json.dumps(doc, separators=(",", ":")).encode()


def same_image_in(reg: str, *repos: str) -> tuple[oci.Pushed, ...]:
    """One image (fixed config and layer), pushed to several repositories: one digest everywhere."""
    config = oci.canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
                                 "config": {"Labels": {"sigaudit.test/nonce": os.urandom(8).hex()}}})
    layer = os.urandom(256)
    pushed = tuple(oci.push_image(reg, repo, "1", config=config, layers=[layer]) for repo in repos)
    assert len({p.digest for p in pushed}) == 1
    return pushed


def scan(tmp: Path, pods: list[dict[str, Any]], policy: dict[str, Any], env: dict[str, str],
         *extra: str) -> dict[str, dict[str, Any]]:
    pods_file, policy_file = tmp / "pods.json", tmp / "policy.yaml"
    pods_file.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    policy_file.write_text(yaml.safe_dump(policy))
    r = sigaudit("scan", "--pods-file", str(pods_file), "--policy", str(policy_file), *extra, "--no-store",
                 "-o", "json", "--no-progress", env=env)
    assert r.returncode in (0, 1), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    by = {i["repository"].split("/", 1)[1]: i for i in json.loads(r.stdout)["images"]}
    for name, image in sorted(by.items()):  # shown with pytest -s: the verdicts of a real run
        print(f"{name:24} {image['status']:9} {image['reasons'][0] if image['reasons'] else ''}")
    return by


def test_an_attestation_copied_to_another_repository_of_the_same_digest_does_not_count(
    referrers_registry, moto_kms, grafeas_server, tmp_path: Path
) -> None:
    reg, host = referrers_registry.url, referrers_registry.host
    key = moto_kms.create_key("RSA_2048")
    grafeas_server.create_project("copies")
    note = grafeas_server.create_note("copies", ATTESTOR)
    staging, _prod = same_image_in(reg, "copies/staging/app", "copies/prod/app")
    digest = staging.digest
    # The attestor attests staging/app@X, in Grafeas ...
    p = kritis_payload(f"{host}/copies/staging/app", digest)
    sig = moto_kms.sign(key, p, "RSASSA_PKCS1_V1_5_SHA_256")
    grafeas_server.create_attestation("copies", note, f"https://{host}/copies/staging/app@{digest}", p, sig, key)
    # ... and someone who may write occurrences files the very same attestation under prod/app@X.
    grafeas_server.create_attestation("copies", note, f"https://{host}/copies/prod/app@{digest}", p, sig, key)
    # In the registry: the attestation as a referrer of staging/app, and the same referrer copied to prod/app.
    staging_reg, prod_reg = same_image_in(reg, "copies/staging/reg", "copies/prod/reg")
    regp = kritis_payload(f"{host}/copies/staging/reg", staging_reg.digest)
    blob = json.dumps({"serializedPayload": base64.b64encode(regp).decode(), "signatures": [
        {"publicKeyId": key, "signature": base64.b64encode(moto_kms.sign(key, regp, "RSASSA_PKCS1_V1_5_SHA_256"))
         .decode()}]}).encode()
    for repo, subject in (("copies/staging/reg", staging_reg), ("copies/prod/reg", prod_reg)):
        oci.make_artifact(reg, repo, subject, ARTIFACT, blob, payload_media_type=ARTIFACT)

    pods = [_pod("prod", name, [("app", f"{host}/{repo}:1", f"{host}/{repo}@{d}")])
            for name, repo, d in (("s", "copies/staging/app", digest), ("p", "copies/prod/app", digest),
                                  ("sr", "copies/staging/reg", staging_reg.digest),
                                  ("pr", "copies/prod/reg", prod_reg.digest))]
    kms_key = f"awskms:///{key}"
    policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "insecureRegistries": [host],
        "rules": [
            {"name": "grafeas", "images": [f"{host}/copies/*/app"], "verifiers": [{"attestation": {
                "attestor": ATTESTOR, "publicKeys": [kms_key], "noteName": note,
                "source": f"{grafeas_server.url}/v1beta1/projects/copies"}}]},
            {"name": "registry", "images": [f"{host}/copies/*/reg"], "verifiers": [{"attestation": {
                "attestor": ATTESTOR, "publicKeys": [kms_key], "source": "registry"}}]},
        ]}}
    by = scan(tmp_path, pods, policy, moto_kms.env)
    got = {k: v["status"] for k, v in by.items()}
    assert got == {"copies/staging/app": "verified", "copies/prod/app": "invalid",
                   "copies/staging/reg": "verified", "copies/prod/reg": "invalid"}, by
    for name in ("copies/prod/app", "copies/prod/reg"):
        assert any("for another repository" in r and f"{host}/copies/staging/" in r
                   for r in by[name]["reasons"]), by[name]["reasons"]


def test_kritis_allowlists_exempt_only_what_kritis_admits(
    referrers_registry, moto_kms, grafeas_server, tmp_path: Path
) -> None:
    """A GenericAttestationPolicy's namePattern `*` stops at `/` and a plain name is that image only;
    an ImageSecurityPolicy's imageAllowlist entries are exact. Before, they were sigaudit globs: `*`
    crossed `/`, a name matched every tag, an entry `*` exempted the namespace."""
    reg, host = referrers_registry.url, referrers_registry.host
    key = moto_kms.create_key("RSA_2048")
    grafeas_server.create_project("allow")
    note = grafeas_server.create_note("allow", ATTESTOR)
    from scanner.verify.kms import der_to_pem

    pem = der_to_pem(bytes(moto_kms.client().get_public_key(KeyId=key)["PublicKey"])).decode()
    images = {"team/app": "prod", "team/sub/app": "prod", "exact": "prod", "isp/app": "stage"}
    pushed = {name: oci.push_image(reg, f"allow/{name}", "2") for name in images}
    pods = [_pod(ns, name.replace("/", "-"),
                 [("c", f"{host}/allow/{name}:2", f"{host}/allow/{name}@{pushed[name].digest}")])
            for name, ns in images.items()]
    docs: list[dict[str, Any]] = [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
         "metadata": {"name": ATTESTOR, "namespace": ns},
         "spec": {"noteReference": f"v1beta1/{note}",
                  "publicKeys": [{"keyType": "PKIX", "keyId": key, "pkixPublicKey": {"publicKeyPem": pem}}]}}
        for ns in ("prod", "stage")
    ]
    docs += [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
         "metadata": {"name": "gap", "namespace": "prod"},
         "spec": {"attestationAuthorityNames": [ATTESTOR], "admissionAllowlistPatterns": [
             {"namePattern": f"{host}/allow/team/*"}, {"namePattern": f"{host}/allow/exact"}]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
         "metadata": {"name": "isp", "namespace": "stage"},
         "spec": {"attestationAuthorityName": ATTESTOR, "imageAllowlist": ["*", f"{host}/allow/isp/*"]}},
    ]
    kritis_file = tmp_path / "kritis.yaml"
    kritis_file.write_text(yaml.safe_dump_all(docs))
    native = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {"insecureRegistries": [host]}}
    by = scan(tmp_path, pods, native, {**moto_kms.env, "SIGAUDIT_GRAFEAS_URL": grafeas_server.url},
              "--policy-from", f"kritis:{kritis_file}")
    got = {k: v["status"] for k, v in by.items()}
    assert got == {"allow/team/app": "exempt", "allow/team/sub/app": "unsigned", "allow/exact": "unsigned",
                   "allow/isp/app": "unsigned"}, by
    assert any("kritis admission allowlist" in r for r in by["allow/team/app"]["reasons"])


def _occurrence(name: str, uri: str, note: str, resource: Any = None) -> dict[str, Any]:
    return {"name": name, "kind": "ATTESTATION", "noteName": note,
            "resource": {"uri": uri} if resource is None else resource,
            "attestation": {"attestation": {"genericSignedAttestation": {
                "serializedPayload": base64.b64encode(b"{}").decode(),
                "signatures": [{"signature": "c2ln", "publicKeyId": "someone-else"}]}}}}


def test_a_hostile_grafeas_is_an_error_never_a_crash_or_not_attested(
    referrers_registry, moto_kms, grafeas_server, tmp_path: Path
) -> None:
    reg, host = referrers_registry.url, referrers_registry.host
    key = moto_kms.create_key("RSA_2048")
    grafeas_server.create_project("hostile")
    note = grafeas_server.create_note("hostile", ATTESTOR)
    names = ("deep", "resource-string", "endless")
    pushed = {n: oci.push_image(reg, f"hostile/{n}", "1") for n in names}
    pods = [_pod("prod", n, [("c", f"{host}/hostile/{n}:1", f"{host}/hostile/{n}@{pushed[n].digest}")])
            for n in names]
    with HostileRegistry(upstream=grafeas_server.url) as proxy:
        def page(n: str, doc: dict[str, Any]) -> None:
            # Each image's listing asks for its own resource URL in the filter.
            proxy.add(Rule("GET", rf"/occurrences\?.*hostile%2F{n}%40", Body(json.dumps(doc).encode(),
                                                                                content_type="application/json")))
        proxy.add(Rule("GET", r"/occurrences\?.*hostile%2Fdeep%40",
                       Body(b"[" * 200_000, content_type="application/json")))
        uri = f"https://{host}/hostile/resource-string@{pushed['resource-string'].digest}"
        broken = _occurrence("projects/hostile/occurrences/x", uri, note, resource="not an object")
        broken["attestation"]["attestation"]["genericSignedAttestation"]["serializedPayload"] = "!!"
        page("resource-string", {"occurrences": [broken]})
        # Someone else's occurrences, page after page, each with a next page (the server ignores the filter).
        noise = [_occurrence(f"projects/hostile/occurrences/n{i}",
                             f"https://elsewhere.example/app{i}@sha256:{'e' * 64}", note) for i in range(5)]
        page("endless", {"occurrences": noise, "nextPageToken": "more"})
        policy = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
            "insecureRegistries": [host],
            "rules": [{"name": "grafeas", "images": [f"{host}/hostile/*"], "verifiers": [{"attestation": {
                "attestor": ATTESTOR, "publicKeys": [f"awskms:///{key}"], "noteName": note,
                "source": f"{proxy.url}/v1beta1/projects/hostile"}}]}]}}
        by = scan(tmp_path, pods, policy, moto_kms.env)
    got = {k: v["status"] for k, v in by.items()}
    # resource-string: the broken occurrence is not filed under a URL of the image: not attested.
    assert got == {"hostile/deep": "error", "hostile/resource-string": "unsigned", "hostile/endless": "error"}, by
    assert any("nested too deeply" in r for r in by["hostile/deep"]["reasons"])
    assert any("after 20 pages" in r for r in by["hostile/endless"]["reasons"])


def test_a_grafeas_trickling_its_answer_is_cut_at_the_total_timeout() -> None:
    """httpx's timeout is per read: a byte every half second resets it. The listing has a wall clock."""
    import time

    from scanner.verify.attestation import AttestationSourceError, GrafeasClient, GrafeasEndpoint

    port, close = _trickling_server()
    client = GrafeasClient(GrafeasEndpoint.parse(f"http://127.0.0.1:{port}/v1beta1/projects/p"), total_timeout=3)
    started = time.monotonic()
    try:
        with pytest.raises(AttestationSourceError, match="no complete answer within 3s"):
            client.attestations([f"https://r.example/a@sha256:{'a' * 64}"], None)
    finally:
        close()
    assert time.monotonic() - started < 10


def test_credentials_in_a_grafeas_source_never_reach_the_output(tmp_path: Path) -> None:
    """Before: `http://builder:hunter2@host/...` was named in every image's reasons (stdout JSON, and so
    the database, HTML and CSV). Now the policy is refused at load (exit 2), without repeating it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    digest = "sha256:" + "d" * 64
    pods = [_pod("prod", "p", [("c", "127.0.0.1:9/team/app:1", f"127.0.0.1:9/team/app@{digest}")])]
    (tmp_path / "pods.json").write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
        "apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
            "insecureRegistries": ["127.0.0.1:9"],
            "rules": [{"name": "r", "images": ["*"], "verifiers": [{"attestation": {
                "attestor": "qa", "publicKeys": [pem],
                "source": "http://builder:hunter2@127.0.0.1:9/v1beta1/projects/p"}}]}]}}))
    r = sigaudit("scan", "--pods-file", str(tmp_path / "pods.json"), "--policy", str(tmp_path / "policy.yaml"),
                 "--no-store", "-o", "json", "--no-progress", env={})
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "hunter2" not in r.stdout + r.stderr
    assert "SIGAUDIT_GRAFEAS_TOKEN" in r.stderr


def _trickling_server() -> tuple[int, Any]:
    """A server on 127.0.0.1 that answers 200 and then sends its body a byte every half second."""
    import socket
    import threading
    import time

    srv = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"1\r\n \r\n")
                except OSError:
                    return
                time.sleep(0.5)

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        srv.close()

    return srv.getsockname()[1], close


def test_a_vault_trickling_its_answer_is_cut_at_the_total_timeout(monkeypatch) -> None:
    import time

    from scanner.verify import kms

    port, close = _trickling_server()
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VAULT_TOKEN", "s.token")
    monkeypatch.setattr(kms, "KMS_TOTAL_TIMEOUT_SECONDS", 3.0)
    started = time.monotonic()
    try:
        with pytest.raises(kms.KmsKeyUnavailable, match="no complete answer from Vault within 3s"):
            kms.fetch_public_key_pem("hashivault://attestor")
    finally:
        close()
    assert time.monotonic() - started < 10


def test_vault_credentials_never_reach_an_error_reason(monkeypatch) -> None:
    """Before: a Vault that refused the request gave "Vault answered 403 for https://admin:hunter2@…",
    the reason of every image the key judges."""
    from scanner.verify import kms
    from tests.harness.hostile_registry import Status

    with HostileRegistry() as vault:
        vault.add(Rule("GET", r"/v1/transit/keys/", Status(403, body=b'{"errors":["permission denied"]}')))
        monkeypatch.setenv("VAULT_ADDR", f"http://admin:hunter2@{vault.host}")
        monkeypatch.setenv("VAULT_TOKEN", "s.token")
        with pytest.raises(kms.KmsKeyUnavailable) as refused:
            kms.fetch_public_key_pem("hashivault://attestor")
    assert "hunter2" not in str(refused.value), refused.value


def test_a_required_predicate_attested_only_by_a_revoked_identity_is_not_attested(registry, tmp_path: Path) -> None:
    """requirePredicateTypes was checked inside the verifier, before the policy's revocations: a
    provenance attestation made by a revoked (compromised) workflow identity satisfied it, beside a
    good image signature from the release workflow, and the image was `verified`. Real keyless
    bundles (@sigstore/cli against the mock Fulcio/Rekor) attached as cosign v3 attaches them."""
    from tests.sigstore_mock.harness import MockSigstore, attach_bundle, cosign_sign_statement

    issuer = "https://token.actions.githubusercontent.com"
    release = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
    compromised = "https://github.com/acme/app/.github/workflows/nightly.yml@refs/heads/main"
    slsa = "https://slsa.dev/provenance/v1"
    with MockSigstore.start(tmp_path / "mock") as mock:
        pushed = oci.push_image(registry.url, "predicates/app", "1")
        signature = mock.attest(cosign_sign_statement(pushed.digest), subject=release, issuer=issuer)
        provenance = mock.attest(cosign_sign_statement(pushed.digest, slsa), subject=compromised, issuer=issuer)
        attach_bundle(registry.url, "predicates/app", pushed, signature, referrers_api=False)
        attach_bundle(registry.url, "predicates/app", pushed, provenance, referrers_api=False, predicate_type=slsa)
        pods = [_pod("prod", "p", [("c", f"{registry.host}/predicates/app:1",
                                    f"{registry.host}/predicates/app@{pushed.digest}")])]
        verifier = {"cosign": {"keyless": {
            "identities": [{"subjectRegExp": r"https://github\.com/acme/app/\.github/workflows/.+", "issuer": issuer}],
            "trustedRoot": str(mock.trusted_root)}, "requirePredicateTypes": [slsa]}}

        def policy(revocations: list[dict[str, str]]) -> dict[str, Any]:
            return {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
                "insecureRegistries": [registry.host], "revocations": revocations,
                "rules": [{"name": "provenance", "images": [f"{registry.host}/predicates/*"],
                           "verifiers": [verifier]}]}}

        env = {"SIGAUDIT_SIGSTORE_OFFLINE": "1"}
        control = scan(tmp_path, pods, policy([]), env)["predicates/app"]
        assert control["status"] == "verified", control
        revoked = scan(tmp_path, pods, policy([{"identity": compromised, "reason": "nightly workflow compromised"}]),
                       env)["predicates/app"]
        assert revoked["status"] == "revoked", revoked
        assert any(slsa in r and "revoked" in r and "nightly workflow compromised" in r
                   for r in revoked["reasons"]), revoked["reasons"]
        # Revoking the release identity instead: the image signature itself is revoked, as before.
        other = scan(tmp_path, pods, policy([{"identity": release, "reason": "r"}]), env)["predicates/app"]
        assert other["status"] == "revoked", other


def test_an_occurrence_filed_under_a_near_miss_of_the_resource_url_is_not_the_images(grafeas_server) -> None:
    """Exactly `https://REPO@DIGEST` or `REPO@DIGEST` (kritis, gcloud): never a prefix, a suffix, a tag,
    another scheme or case, trailing junk. (Held before this pass; kept as a guard.)"""
    from scanner.verify.attestation import GrafeasClient, GrafeasEndpoint

    g = grafeas_server
    g.create_project("nearmiss")
    note = g.create_note("nearmiss", ATTESTOR)
    digest = "sha256:" + "c" * 64
    bare = f"reg.example/team/app@{digest}"
    for uri in (f"https://{bare}/extra", f"https://{bare}x", f"https://{bare}?x=1", f"http://{bare}",
                f"HTTPS://{bare}", "https://reg.example/team/app:1", f"https://reg.example/team/app/sub@{digest}",
                f"https://reg.example/team@{digest}", f"https://{bare.upper()}", f" {bare}", f"{bare} "):
        g.create_attestation("nearmiss", note, uri, b"{}", b"s", "k")
    exact = g.create_attestation("nearmiss", note, f"https://{bare}", b"{}", b"s", "k")
    client = GrafeasClient(GrafeasEndpoint.parse(g.project_url("nearmiss")))
    found = client.attestations((f"https://{bare}", bare), note)
    assert [a.origin for a in found] == [exact]
