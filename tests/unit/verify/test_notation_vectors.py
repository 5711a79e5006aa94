"""Every notation vector in tests/data/vectors/notation/cases.json, used as it is.

Clocks: the vectors were made between 2020 and 2025 and several certificates have expired since;
each group says which instant it verifies at and why. The CRL vectors are served by a real HTTP
server on 127.0.0.1 (port 10086 when free, as the certificates' CDP URLs say; otherwise a random
port and a fetcher that rewrites ``localhost:10086`` to it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from scanner.errors import ConfigError
from scanner.models import (
    Descriptor,
    ImageReference,
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureMaterial,
    SignatureResult,
    SignedTime,
    TimeSource,
)
from scanner.policy.schema import NotationVerifierSpec
from scanner.registry.fetcher import HttpFetcher
from scanner.verify.notation import NotationVerifier, check_authentic_timestamp
from scanner.verify.notation_envelope import (
    COSE_MEDIA_TYPE,
    JWS_MEDIA_TYPE,
    parse_envelope,
)
from scanner.verify.notation_trust import (
    TrustPolicyError,
    TrustStoreError,
    check_trusted_identities,
    load_named_store,
    parse_trust_policy,
    parse_trust_policy_bytes,
)
from scanner.verify.revocation import RevocationChecker, RevocationStatus, delta_crl_urls
from scanner.verify.x509 import validate_timestamping_chain
from tests.harness.revocation_server import RevocationServer
from tests.vectors import VECTORS as ALL_VECTORS

VECTORS = ALL_VECTORS / "notation"
CASES: dict[str, Any] = json.loads((VECTORS / "cases.json").read_text())

TRUSTSTORE = VECTORS / "notation-go/verifier/testdata/truststore"


def cases(group: str) -> list[Any]:
    return [pytest.param(c, id=c.get("id") or c.get("file")) for c in CASES.get(group, [])]


def image_for(ref: str, target: Descriptor) -> RunningImage:
    repo, _, digest = ref.partition("@")
    registry, _, repository = repo.partition("/")
    return RunningImage(ImageReference(registry, repository, None, digest or target.digest), ())


def verifier_for(policy: dict[str, Any] | Path, store_root: Path, tmp_path: Path, **kw: Any) -> NotationVerifier:
    if isinstance(policy, Path):
        policy_path = policy
    else:
        policy_path = tmp_path / "trustpolicy.json"
        policy_path.write_text(json.dumps(policy))
    spec = NotationVerifierSpec(trustPolicy=str(policy_path), trustStore=str(store_root))
    return NotationVerifier.from_spec(spec, base_dir=tmp_path, fetcher=None, **kw)


def passed(results: tuple[SignatureResult, ...]) -> bool:
    """notation's rule: the artifact verifies when any one signature verifies."""
    return any(r.outcome is Outcome.PASSED for r in results)


# ----------------------------------------------------------------------------------------------
# Envelope verification combinations (notation-go TestNotationVerificationCombinations).
# Clock: 2026-01-01. The mock chain is valid 2020-2122 and ca/sa_valid expire in 2120, the
# *_expired envelopes expired on 2022-07-29: any instant in between gives upstream's verdicts.

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _envelope_material(case: dict[str, Any], envelope: Path, media_type: str) -> tuple[RunningImage, SignatureMaterial]:
    t = case["target_artifact"]
    target = Descriptor(t["mediaType"], t["digest"], t["size"])
    ref = ReferrerArtifact("sha256:" + "0" * 64, "application/vnd.cncf.notary.signature", media_type,
                           envelope.read_bytes(), {}, target)
    return image_for(case["artifact_reference"], target), SignatureMaterial(image=target, referrers=(ref,))


@pytest.mark.parametrize("case", cases("envelope_verification_cases"))
def test_envelope_verification_cases(case: dict[str, Any], tmp_path: Path) -> None:
    v = verifier_for(case["trust_policy"], VECTORS / case["trust_store_root"], tmp_path)
    image, material = _envelope_material(case, VECTORS / case["envelope"], case["signature_media_type"])
    results = v.verify(image, material, NOW)
    assert len(results) == 1
    r = results[0]
    assert passed(results) == (case["expected"] == "pass"), r.reason
    failing = case.get("failing_validation")
    if failing:
        check = {"integrity": "integrity", "authenticity": "authenticity", "expiry": "expiry"}[failing]
        names = {"authenticity": ("authenticity", "trusted-identity")}.get(check, (check,))
        bad = [c for c in r.checks if c.name.value in names and c.outcome is Outcome.FAILED]
        assert bad, r.checks
        assert bad[0].enforced == (case["failing_validation_action"] == "enforce")
        if case["failing_validation_action"] == "log":
            assert "was set to \"log\"" in r.reason
    else:
        assert all(c.outcome in (Outcome.PASSED, Outcome.SKIPPED) for c in r.checks), r.checks
        assert r.signer == "CN=Notation Test Root,O=Notary,L=Seattle,ST=WA,C=US"
        assert len(r.details["chain_sha256"]) == 2


@pytest.mark.parametrize("case", cases("user_metadata_cases"))
def test_user_metadata_cases(case: dict[str, Any], tmp_path: Path) -> None:
    # The case names no artifact descriptor: upstream verifies against the payload's own target,
    # so we do too. Clock 2026-01-01: the signer's certificate (valid one day in January 2023) is
    # expired, which level audit only logs, as the case says.
    envelope = VECTORS / case["envelope"]
    target_json = parse_envelope(JWS_MEDIA_TYPE, envelope.read_bytes()).target
    target = Descriptor(target_json.media_type, target_json.digest, target_json.size)
    v = verifier_for(case["trust_policy"], TRUSTSTORE, tmp_path, user_metadata=case["user_metadata"])
    ref = ReferrerArtifact("sha256:" + "1" * 64, "application/vnd.cncf.notary.signature", JWS_MEDIA_TYPE,
                           envelope.read_bytes(), {}, target)
    results = v.verify(image_for("registry.acme-rockets.io/software/net-monitor", target),
                       SignatureMaterial(image=target, referrers=(ref,)), NOW)
    assert passed(results) == (case["expected"] == "pass"), results[0].reason
    assert results[0].details.get("user_metadata", {}).get("io.wabbit-networks.buildId") == "123" or \
        case["expected"] == "fail"


@pytest.mark.parametrize("case", cases("trusted_identity_cases"))
def test_trusted_identity_cases(case: dict[str, Any]) -> None:
    cert = x509.load_pem_x509_certificate((VECTORS / case["signing_cert"]).read_bytes())
    problem = check_trusted_identities(case["trusted_identities"], cert)
    assert (problem is None) == (case["expected"] == "pass"), problem


# ----------------------------------------------------------------------------------------------
# Authentic timestamp (notation-go TestAuthenticTimestamp calls verifyAuthenticTimestamp directly).
# Clock: 2026-01-01 — the alpine signing cert is valid until 2033 (afterCertExpiry case: no
# timestamp needed), testTSA expired on 2024-06-18 (no-tsa-store case must fail on it).
# TSA-chain revocation is not part of these vectors offline: upstream asks GlobalSign's OCSP
# responder over the internet. ``test_tsa_revocation_unknown_fails_the_timestamp`` covers it.


@pytest.mark.parametrize("case", cases("timestamp_cases"))
def test_timestamp_cases(case: dict[str, Any]) -> None:
    envelope_bytes = (VECTORS / case["envelope"]).read_bytes()
    try:
        stmt = parse_trust_policy({"version": "1.0", "trustPolicies": [case["trust_policy_statement"]]}).statements[0]
    except TrustPolicyError as exc:
        assert case["expected"] == "fail"
        assert "missing separator" in str(exc)
        return
    env = parse_envelope(case["media_type"], envelope_bytes)
    if "inject_timestamp_token" in case:
        import dataclasses

        token = (VECTORS / case["inject_timestamp_token"]).read_bytes()
        sig = env.signature
        if "mutation" in case:
            sig = b"mismatch" if "b'mismatch'" in case["mutation"] else b"notation"
        env = dataclasses.replace(env, timestamp_token=token, signature=sig)
    tsa_names = stmt.stores_of("tsa")
    try:
        tsa = [c for n in tsa_names for c in load_named_store(TRUSTSTORE, "tsa", n).certificates] if tsa_names \
            else None
    except TrustStoreError as exc:
        assert case["expected"] == "fail"
        assert "does not exist" in str(exc)
        return
    result = check_authentic_timestamp(env, stmt, tsa, NOW, revocation=None)
    assert (result.problem is None) == (case["expected"] == "pass"), result.problem
    want = case.get("expected_error") or case.get("expected_error_prefix")
    if want and any(k in want for k in ("validity period", "no timestamp countersignature", "mismatched",
                                        "unknown authority", "signing certificate not found")):
        assert result.problem is not None
        key = want.split(" with error: ")[-1].split(", it ")[0]
        key = key.replace("failed to verify signed token: ", "").replace("cms verification failure: ", "")
        assert key.split(":")[-1].strip() in result.problem


def test_tsa_revocation_unknown_fails_the_timestamp() -> None:
    """Offline, the GlobalSign TSA chain's status is unknown: strict must not call that verified."""
    stmt = parse_trust_policy({"version": "1.0", "trustPolicies": [CASES["timestamp_cases"][0]
                                                                   ["trust_policy_statement"]]}).statements[0]
    env = parse_envelope(JWS_MEDIA_TYPE, (VECTORS / CASES["timestamp_cases"][0]["envelope"]).read_bytes())
    tsa = list(load_named_store(TRUSTSTORE, "tsa", "test-timestamp").certificates)
    result = check_authentic_timestamp(env, stmt, tsa, NOW, revocation=RevocationChecker(None))
    assert result.problem is not None and result.error
    assert "unknown" in result.problem


@pytest.mark.parametrize("case", cases("trust_store_cases"))
def test_trust_store_cases(case: dict[str, Any]) -> None:
    typ, name = case["store"].split("/")
    if case["expected"] == "pass":
        assert load_named_store(TRUSTSTORE, typ, name).certificates
    else:
        with pytest.raises(TrustStoreError) as err:
            load_named_store(TRUSTSTORE, typ, name)
        want = case.get("expected_error") or case.get("expected_error_contains")
        assert want in str(err.value)


def test_symlinked_store_is_rejected(tmp_path: Path) -> None:
    # The upstream symlink fixtures were not copied (git symlinks); the rule is rebuilt here.
    real = tmp_path / "real"
    real.mkdir()
    shutil.copy(TRUSTSTORE / "x509/ca/valid-trust-store/NotationTestRoot.pem", real)
    (tmp_path / "x509/ca").mkdir(parents=True)
    (tmp_path / "x509/ca/linked").symlink_to(real)
    with pytest.raises(TrustStoreError, match="symlink"):
        load_named_store(tmp_path, "ca", "linked")
    (tmp_path / "x509/ca/files").mkdir()
    (tmp_path / "x509/ca/files/root.pem").symlink_to(real / "NotationTestRoot.pem")
    with pytest.raises(TrustStoreError, match="symlink"):
        load_named_store(tmp_path, "ca", "files")


@pytest.mark.parametrize("case", cases("x509_chain_cases"))
def test_x509_chain_cases(case: dict[str, Any]) -> None:
    chain = [x509.load_pem_x509_certificate((VECTORS / p).read_bytes()) if b"BEGIN" in (VECTORS / p).read_bytes()
             else x509.load_der_x509_certificate((VECTORS / p).read_bytes()) for p in case["chain"]]
    validate_timestamping_chain(chain)


# ----------------------------------------------------------------------------------------------
# notation CLI e2e OCI layouts. Clock 2026-01-01: e2e.crt is valid 2022-2122; the expired
# signature's expiry (2023-06-27) and expired_e2e.crt (2023-06-26..27) are in the past.


def layout_material(layout: Path, tag: str) -> tuple[Descriptor, SignatureMaterial]:
    index = json.loads((layout / "index.json").read_text())
    subj = next(m for m in index["manifests"] if m.get("annotations", {}).get("org.opencontainers.image.ref.name")
                == tag)
    target = Descriptor(subj["mediaType"], subj["digest"], subj["size"])

    def blob(digest: str) -> bytes:
        data = (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        return data

    referrers = []
    for path in sorted((layout / "blobs" / "sha256").iterdir()):
        try:
            manifest = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(manifest, dict) or (manifest.get("subject") or {}).get("digest") != target.digest:
            continue
        layer = manifest["layers"][0]
        s = manifest["subject"]
        referrers.append(ReferrerArtifact(
            manifest_digest="sha256:" + path.name,
            artifact_type=manifest.get("artifactType") or manifest["config"]["mediaType"],
            blob_media_type=layer["mediaType"], blob=blob(layer["digest"]),
            annotations=manifest.get("annotations", {}),
            subject=Descriptor(s["mediaType"], s["digest"], s["size"])))
    return target, SignatureMaterial(image=target, referrers=tuple(referrers))


@pytest.mark.parametrize("case", cases("e2e_oci_layout_cases"))
def test_e2e_oci_layout_cases(case: dict[str, Any], tmp_path: Path) -> None:
    stores = dict(case["trust_store"])
    if case["trust_policy"].endswith("multiple_trust_store_trustpolicy.json"):
        # The case's own note: upstream also puts new_e2e.crt in ca:e2e-new.
        stores["ca:e2e-new"] = ["notation-cli-e2e/config/localkeys/new_e2e.crt"]
    root = tmp_path / "truststore"
    for key, certs in stores.items():
        typ, name = key.split(":")
        d = root / "x509" / typ / name
        d.mkdir(parents=True)
        for c in certs:
            shutil.copy(VECTORS / c, d)
    target, material = layout_material(VECTORS / case["oci_layout"], case["subject_tag"])
    image = RunningImage(ImageReference("localhost:5000", "e2e", "v1", target.digest), ())
    try:
        v = verifier_for(VECTORS / case["trust_policy"], root, tmp_path)
    except ConfigError as exc:
        assert case["expected"] == "fail"
        assert case["expected_error_contains"] in str(exc)
        return
    results = v.verify(image, material, NOW)
    assert passed(results) == (case["expected"] == "pass"), [r.reason for r in results]
    want = case.get("expected_error_contains")
    if want and "Trust policy is configured to skip" not in want:
        assert any(want.rstrip(".") in r.reason for r in results), [r.reason for r in results]
    if case["id"] == "e2e-unsigned":
        assert results == ()
    if case["id"] == "e2e-valid-strict":
        r = results[0]
        assert r.details["chain_sha256"] == ["e38aea13f2b051f7183cca64a51ee676f4d4456f41d9fecf15eb367efc7343b9"]
        assert json.loads(material.referrers[0].annotations["io.cncf.notary.x509chain.thumbprint#S256"]) == \
            r.details["chain_sha256"]
        assert r.signed_at == SignedTime(datetime.fromisoformat("2023-06-27T13:30:33+08:00"), TimeSource.CLAIMED)
    if case["id"] == "e2e-invalid-sig-skip":
        assert results[0].reason.startswith("verification level skip")
    if case["id"] == "e2e-expired-sig-strict":
        assert results[0].failure.value == "expired"
    if case["id"] == "e2e-expired-cert-strict":
        assert results[0].failure.value == "expired"


@pytest.mark.parametrize("case", cases("parse_cases"))
def test_parse_cases(case: dict[str, Any]) -> None:
    if "file" in case:  # header conformance vectors: the reference encodings must be readable
        doc = json.loads((VECTORS / case["file"]).read_text())
        assert doc
        return
    if "envelope" in case:
        path = VECTORS / case["envelope"]
        env = parse_envelope(COSE_MEDIA_TYPE if path.name.startswith("cose") else JWS_MEDIA_TYPE, path.read_bytes())
        env.verify_signature()
        assert env.target.digest == case["expected_fields"]["targetArtifact.digest"]
        assert env.signing_scheme == case["expected_fields"]["signingScheme"]
        return
    layout = VECTORS / case["oci_layout"]
    index = json.loads((layout / "index.json").read_text())
    sig_manifests = [json.loads((layout / "blobs/sha256" / m["digest"].split(":")[1]).read_bytes())
                     for m in index["manifests"] if m["mediaType"].endswith("manifest.v1+json")]
    sigs = [m for m in sig_manifests if m.get("subject")]
    assert sigs
    layer = sigs[0]["layers"][0]
    env = parse_envelope(layer["mediaType"], (layout / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes())
    from scanner.verify.timestamps import TimestampError, verify_timestamp_token

    if case["expected"] == "parse-ok":
        f = case["expected_fields"]
        assert env.signature_algorithm == f["signatureAlgorithm"]
        assert env.signing_time == datetime.fromisoformat(f["signingTime"].replace("Z", "+00:00"))
        assert env.expiry == datetime.fromisoformat(f["expiry"].replace("Z", "+00:00"))
        assert dict(env.target.annotations) == f["userDefinedAttributes"]
        assert env.signing_agent == f["signingAgent"]
        assert hashlib.sha256(env.certificates[0].public_bytes(__import__(
            "cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.DER)).hexdigest() == \
            f["signing_cert_sha256"]
        assert env.timestamp_token
        # The TSA root is not part of the vectors: verification must fail as untrusted, not crash.
        with pytest.raises(TimestampError, match="unknown authority"):
            verify_timestamp_token(env.timestamp_token, env.signature, list(
                load_named_store(TRUSTSTORE, "tsa", "test-timestamp").certificates))
    else:
        with pytest.raises(TimestampError, match="failed to parse timestamp countersignature"):
            verify_timestamp_token(env.timestamp_token or b"", env.signature, list(
                load_named_store(TRUSTSTORE, "tsa", "test-timestamp").certificates))


@pytest.mark.parametrize("case", cases("trust_policy_document_cases"))
def test_trust_policy_document_cases(case: dict[str, Any]) -> None:
    data = (VECTORS / case["file"]).read_bytes()
    if case["expected"] == "valid":
        parse_trust_policy_bytes(data)
    else:
        with pytest.raises(TrustPolicyError) as err:
            parse_trust_policy_bytes(data)
        if case["expected_error_contains"]:
            assert case["expected_error_contains"] in str(err.value)


# ----------------------------------------------------------------------------------------------
# CRL revocation with a real HTTP server. Clock 2026-01-01: the chain and the good CRLs are valid
# until 2124, leaf_expired.crl's nextUpdate (2023-12-25) has passed.


_CRLServer = RevocationServer


class _RewritingFetcher(HttpFetcher):
    """Sends the vectors' ``localhost:10086`` to the test server's real port (when 10086 was taken)."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.port = port

    def get(self, url: str, *, max_bytes: int, timeout: float) -> bytes:
        return super().get(url.replace("localhost:10086", f"127.0.0.1:{self.port}"), max_bytes=max_bytes,
                           timeout=timeout)


@pytest.fixture(scope="module")
def crl_server() -> Any:
    s = _CRLServer(10086)
    yield s
    s.close()


@pytest.mark.parametrize("case", cases("revocation_crl_cases"))
def test_revocation_crl_cases(case: dict[str, Any], crl_server: _CRLServer) -> None:
    crl_server.files.clear()
    for url, path in case["crls"].items():
        crl_server.files["/" + url.rsplit("/", 1)[1]] = (VECTORS / path).read_bytes()
    chain = x509.load_pem_x509_certificates((VECTORS / case["chain"]).read_bytes())
    root = x509.load_pem_x509_certificate((VECTORS / case["root"]).read_bytes())
    assert chain[-1] == root
    checker = RevocationChecker(_RewritingFetcher(crl_server.port))
    result = checker.check_chain(chain, NOW)
    assert result.status.value == case["revocation_result"].lower(), result.reason
    assert result.ok == (case["expected"] == "pass")
    if result.status is RevocationStatus.REVOKED:
        assert "is revoked" in result.reason


def test_crl_cache_is_used_until_next_update(crl_server: _CRLServer) -> None:
    case = CASES["revocation_crl_cases"][0]
    crl_server.files.clear()
    for url, path in case["crls"].items():
        crl_server.files["/" + url.rsplit("/", 1)[1]] = (VECTORS / path).read_bytes()
    chain = x509.load_pem_x509_certificates((VECTORS / case["chain"]).read_bytes())
    checker = RevocationChecker(_RewritingFetcher(crl_server.port))
    before = len(crl_server.hits)
    assert checker.check_chain(chain, NOW).ok
    assert len(crl_server.hits) == before + 2
    assert checker.check_chain(chain, NOW).ok
    assert len(crl_server.hits) == before + 2  # served from the cache
    # Past nextUpdate (2124-10-18) the cached CRLs are stale and fetched again (and are then stale).
    later = datetime(2125, 1, 1, tzinfo=UTC)
    assert checker.check_chain(chain, later).status is RevocationStatus.UNKNOWN
    assert len(crl_server.hits) > before + 2


@pytest.mark.parametrize("case", cases("crl_extension_parse_cases"))
def test_crl_extension_parse_cases(case: dict[str, Any]) -> None:
    from scanner.verify.notation_trust import load_certificates

    path = VECTORS / (case.get("cert") or case["crl"])
    data = path.read_bytes()
    expected = case["expected"]
    if "crl" in case:
        crl = x509.load_der_x509_crl(data) if not data.startswith(b"-----") else x509.load_pem_x509_crl(data)
        assert len(delta_crl_urls(crl)) > 1  # "multiple delta CRLs" is refused by _delta_for
        return
    cert = load_certificates(data, path.name)[0]
    if expected.startswith("error"):
        with pytest.raises(ValueError):
            cert.extensions
            delta_crl_urls(cert)
        return
    try:
        urls = delta_crl_urls(cert)
    except ValueError:
        urls = []
    want = {"one": 1, "zero": 0, "two": 2}[expected.split()[0]]
    assert len(urls) == want
