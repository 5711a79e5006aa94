"""Every policy field that constrains signatures is enforced for every signature format — or the
policy is refused at load (exit 2). There is no third possibility: a field silently ignored for one
format makes an image ``verified`` that the policy meant to refuse (issue #17, section B).

One table, field x format. Each format is a real signature made here (cosign ``.sig`` layer, key-signed
Sigstore bundle, keyless bundle from the public Sigstore vectors, DSSE attestation bundles, notation
JWS and COSE, a kritis attestation), judged the way a scan judges it: the policy file through the
loader, the verifiers it builds, the engine's verdict. For each (field, format):

* ``violated``: the policy asks what this signature does not give -> never ``verified``;
* ``satisfied`` (where the format can satisfy it): the same field, met -> ``verified``, which shows
  the field is checked, not merely failing everything.

``test_every_field_is_classified`` makes a new schema field fail until it is placed in this table
or explicitly classified, so the same class of bug cannot come back with the next field.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from scanner.errors import ConfigError
from scanner.models import (
    ContainerRef,
    ContainerType,
    CosignLayer,
    Descriptor,
    ImageReference,
    ReferrerArtifact,
    RunningImage,
    SignatureMaterial,
    Status,
    Verdict,
    Workload,
)
from scanner.policy.engine import evaluate
from scanner.policy.loader import load_policy
from scanner.policy.schema import CosignVerifierSpec, Revocation
from scanner.verify.attestation import REGISTRY_ARTIFACT_TYPE, pkix_key_id
from scanner.verify.keys import parse_public_key
from scanner.verify.notation_envelope import COSE_MEDIA_TYPE, JWS_MEDIA_TYPE
from tests.harness import notation_sign
from tests.harness.cosign_sign import KeyPair, simplesigning_payload
from tests.harness.notation_sign import Issued

VECTORS = Path(__file__).resolve().parents[2] / "data" / "vectors"
T0 = datetime(2026, 10, 20, tzinfo=UTC)  # when the signatures made here are signed
NOW = T0 + timedelta(days=10)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
SPDX = "https://spdx.dev/Document"
KEY = KeyPair.ecdsa()


# ----------------------------------------------------------------------------------------------
# Signature builders (the same layouts cosign v3 / notation / kritis write).


def _digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def sig_layer(digest: str, optional: Mapping[str, Any] | None = None) -> CosignLayer:
    payload = simplesigning_payload("registry.test/app", digest, dict(optional) if optional else None)
    return CosignLayer(payload, "application/vnd.dev.cosign.simplesigning.v1+json",
                       {"dev.cosignproject.cosign/signature": base64.b64encode(KEY.sign(payload)).decode()},
                       "sha256:" + hashlib.sha256(payload).hexdigest())


def key_bundle(digest: str, predicate_type: str = SIGN_PREDICATE,
               annotations: Mapping[str, Any] | None = None, predicate: Any = None) -> bytes:
    """A key-signed DSSE bundle without a log entry, as ``cosign sign|attest --key --new-bundle-format
    --tlog-upload=false`` writes it (subject annotations = ``-a``)."""
    subject: dict[str, Any] = {"digest": {"sha256": digest.removeprefix("sha256:")}}
    if annotations is not None:
        subject["annotations"] = dict(annotations)
    stmt = {"_type": "https://in-toto.io/Statement/v1", "subject": [subject], "predicateType": predicate_type,
            "predicate": predicate if predicate is not None else {}}
    payload = json.dumps(stmt).encode()
    ptype = "application/vnd.in-toto+json"
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype.encode(), len(payload), payload)
    return json.dumps({
        "mediaType": BUNDLE_TYPE,
        "verificationMaterial": {"publicKey": {"hint": "k"}},
        "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": ptype,
                         "signatures": [{"sig": base64.b64encode(KEY.sign(pae)).decode()}]},
    }).encode()


def bundle_ref(blob: bytes, digest: str) -> ReferrerArtifact:
    return ReferrerArtifact("sha256:" + hashlib.sha256(blob).hexdigest(), BUNDLE_TYPE, BUNDLE_TYPE, blob, {},
                            Descriptor(MANIFEST, digest, 100))


def notation_ref(blob: bytes, media_type: str, target: Descriptor) -> ReferrerArtifact:
    return ReferrerArtifact("sha256:" + hashlib.sha256(blob).hexdigest(), "application/vnd.cncf.notary.signature",
                            media_type, blob, {}, target)


def kritis_ref(digest: str) -> ReferrerArtifact:
    payload = json.dumps({"critical": {"identity": {"docker-reference": "registry.test/app"},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "atomic container signature"}}).encode()
    pub = parse_public_key(KEY.public_pem.encode())
    occ = {"serializedPayload": base64.b64encode(payload).decode(),
           "signatures": [{"publicKeyId": pkix_key_id(pub), "signature": base64.b64encode(KEY.sign(payload)).decode()}]}
    blob = json.dumps(occ).encode()
    return ReferrerArtifact("sha256:" + hashlib.sha256(blob).hexdigest(), REGISTRY_ARTIFACT_TYPE,
                            REGISTRY_ARTIFACT_TYPE, blob, {}, Descriptor(MANIFEST, digest, 100))


# ----------------------------------------------------------------------------------------------
# The formats.


@dataclass(frozen=True)
class Format:
    name: str
    digest: str
    kind: str  # "cosign-key", "cosign-keyless", "notation", "attestation": which verifier judges it
    verifier: Callable[[Path], dict[str, Any]]  # the policy's verifier entry that trusts the signer
    material: Callable[[], tuple[Any, ...]]  # (cosign layers, referrers)
    image_signature: bool = True  # False: an attestation, never an image signature
    authentic_time: bool = False  # carries an authentic signing time here (TSA, Rekor SET, signing authority)
    annotations: bool = False  # can carry cosign -a annotations (and carries env=prod here)
    attest: Callable[[], ReferrerArtifact] | None = None  # an SPDX attestation of the same signer
    extra: dict[str, Any] = field(default_factory=dict)


def _key_entry(tmp: Path, **fields: Any) -> dict[str, Any]:
    (tmp / "cosign.pub").write_text(KEY.public_pem)
    return {"cosign": {"key": "cosign.pub", "ignoreTlog": True, **fields}}


KEYLESS_MSG = json.loads((VECTORS / "sigstore-python" / "cases.json").read_text())
_MSG = next(c for c in KEYLESS_MSG["cases"] if c["id"] == "bundle-v0.1-identity-match")
MSG_DIGEST = "sha256:" + _MSG["artifact_sha256"]
ATT_DIGEST = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4"
SIG_DIGEST = _digest_of("legacy")
KB_DIGEST = _digest_of("key-bundle")
KATT_DIGEST = _digest_of("key-attestation")
KRITIS_DIGEST = _digest_of("kritis")


def _keyless_msg_entry(tmp: Path, **fields: Any) -> dict[str, Any]:
    pol = _MSG["policy"]
    return {"cosign": {"keyless": {"identities": [{"subject": pol["certificate_identity"],
                                                   "issuer": pol["certificate_oidc_issuer"]}],
                                   "trustedRoot": str(VECTORS / "sigstore-python" / _MSG["trusted_root"])},
                       **fields}}


def _keyless_att_entry(tmp: Path, **fields: Any) -> dict[str, Any]:
    return {"cosign": {"keyless": {"identities": [{"subjectRegExp": ".*", "issuerRegExp": ".*"}],
                                   "trustedRoot": str(VECTORS / "cosign" / "new-bundle-cosign" /
                                                      "trusted_root_pgi.json")},
                       **fields}}


def _notation_pki() -> dict[str, Issued]:
    root = notation_sign.issue("Acme Root", ca=True, org="Acme", not_before=T0 - timedelta(days=1),
                               not_after=T0 + timedelta(days=365))
    inter = notation_sign.issue("Acme Intermediate", ca=True, issuer=root, org="Acme",
                                not_before=T0 - timedelta(days=1), not_after=T0 + timedelta(days=365))
    leaf = notation_sign.issue("Acme Signer", issuer=inter, org="Acme", not_before=T0 - timedelta(days=1),
                               not_after=T0 + timedelta(days=365))
    return {"root": root, "inter": inter, "leaf": leaf}


PKI = _notation_pki()
CHAIN = [PKI["leaf"], PKI["inter"], PKI["root"]]
NOTATION_TARGET = Descriptor(MANIFEST, _digest_of("notation"), 1234)
CLAIMED_2020 = datetime(2020, 1, 1, tzinfo=UTC)  # a notary.x509 signer backdating its own signingTime


def _notation_entry(store_type: str) -> Callable[[Path], dict[str, Any]]:
    def entry(tmp: Path) -> dict[str, Any]:
        store = tmp / "store" / "x509" / store_type / "acme"
        store.mkdir(parents=True, exist_ok=True)
        (store / "root.pem").write_bytes(PKI["root"].cert.public_bytes(serialization.Encoding.PEM))
        statement = {"name": "acme", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
                     "trustStores": [f"{store_type}:acme"], "trustedIdentities": ["*"]}
        (tmp / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": [statement]}))
        return {"notation": {"trustPolicy": "trustpolicy.json", "trustStore": "store"}}
    return entry


def _target() -> dict[str, Any]:
    return {"mediaType": NOTATION_TARGET.media_type, "digest": NOTATION_TARGET.digest, "size": NOTATION_TARGET.size}


def _kritis_entry(tmp: Path, **fields: Any) -> dict[str, Any]:
    (tmp / "attestor.pub").write_text(KEY.public_pem)
    return {"attestation": {"attestor": "qa-attestor", "publicKeys": ["attestor.pub"]}}


FORMATS = [
    Format("legacy .sig", SIG_DIGEST, "cosign-key", _key_entry,
           lambda: ((sig_layer(SIG_DIGEST, {"env": "prod"}),), ()), annotations=True,
           attest=lambda: bundle_ref(key_bundle(SIG_DIGEST, SPDX, predicate={"spdxVersion": "SPDX-2.3"}), SIG_DIGEST)),
    Format("key bundle", KB_DIGEST, "cosign-key", _key_entry,
           lambda: ((), (bundle_ref(key_bundle(KB_DIGEST, annotations={"env": "prod"}), KB_DIGEST),)),
           annotations=True,
           attest=lambda: bundle_ref(key_bundle(KB_DIGEST, SPDX, predicate={"spdxVersion": "SPDX-2.3"}), KB_DIGEST)),
    Format("keyless bundle", MSG_DIGEST, "cosign-keyless", _keyless_msg_entry,
           lambda: ((), (bundle_ref((VECTORS / "sigstore-python" / _MSG["bundle"]).read_bytes(), MSG_DIGEST),)),
           authentic_time=True),  # Rekor SET
    Format("DSSE attestation bundle (key)", KATT_DIGEST, "cosign-key", _key_entry,
           lambda: ((), (bundle_ref(key_bundle(KATT_DIGEST, SPDX, {"env": "prod"}, {"spdxVersion": "SPDX-2.3"}),
                                    KATT_DIGEST),)),
           image_signature=False),
    Format("DSSE attestation bundle (keyless)", ATT_DIGEST, "cosign-keyless", _keyless_att_entry,
           lambda: ((), (bundle_ref((VECTORS / "cosign" / "new-bundle-cosign" / "oci-attestation.sigstore.json")
                                    .read_bytes(), ATT_DIGEST),)),
           image_signature=False, authentic_time=True),
    Format("notation JWS", NOTATION_TARGET.digest, "notation", _notation_entry("ca"),
           lambda: ((), (notation_ref(notation_sign.jws_envelope(CHAIN, _target(), signing_time=CLAIMED_2020),
                                      JWS_MEDIA_TYPE, NOTATION_TARGET),))),
    Format("notation COSE", NOTATION_TARGET.digest, "notation", _notation_entry("ca"),
           lambda: ((), (notation_ref(notation_sign.cose_envelope(CHAIN, _target(), signing_time=CLAIMED_2020),
                                      COSE_MEDIA_TYPE, NOTATION_TARGET),))),
    Format("notation JWS (signing authority)", NOTATION_TARGET.digest, "notation",
           _notation_entry("signingAuthority"),
           lambda: ((), (notation_ref(notation_sign.jws_envelope(CHAIN, _target(), signing_time=T0,
                                                                 scheme="notary.x509.signingAuthority"),
                                      JWS_MEDIA_TYPE, NOTATION_TARGET),)),
           authentic_time=True),
    Format("kritis attestation", KRITIS_DIGEST, "attestation", _kritis_entry,
           lambda: ((), (kritis_ref(KRITIS_DIGEST),))),
]
IDS = [f.name for f in FORMATS]


@pytest.fixture(autouse=True)
def _offline_sigstore(monkeypatch: pytest.MonkeyPatch) -> None:
    # Key verifiers load the public-good root (for bundles' logs) from sigstore-python's embedded copy.
    monkeypatch.setenv("SIGAUDIT_SIGSTORE_OFFLINE", "1")


# ----------------------------------------------------------------------------------------------
# Judging an image as a scan does: policy file -> loader -> verifiers -> engine.


def judge(tmp: Path, fmt: Format, *, verifier: dict[str, Any] | None = None,
          revocations: list[dict[str, Any]] | None = None, extra_referrers: tuple[ReferrerArtifact, ...] = (),
          ) -> Verdict:
    tmp.mkdir(parents=True, exist_ok=True)
    entry = verifier if verifier is not None else fmt.verifier(tmp)
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
           "spec": {"rules": [{"name": "all", "images": ["*"], "verifiers": [entry]}],
                    "revocations": revocations or []}}
    path = tmp / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    policy = load_policy(path)
    layers, referrers = fmt.material()
    desc = NOTATION_TARGET if fmt.kind == "notation" else Descriptor(MANIFEST, fmt.digest, 100)
    material = SignatureMaterial(image=desc, cosign_layers=layers, referrers=(*referrers, *extra_referrers))
    image = RunningImage(ImageReference("registry.test", "app", "v1", fmt.digest),
                         (ContainerRef("ns", "p", "c", ContainerType.CONTAINER, "registry.test/app:v1", None,
                                       Workload("Pod", "p")),))
    rule = policy.rules[0]
    results = [r for v in rule.verifiers for r in v.verify(image, material, NOW)]
    return evaluate(image, rule, results, [], policy, NOW, "ns")


def with_fields(fmt: Format, tmp: Path, **fields: Any) -> dict[str, Any]:
    entry = fmt.verifier(tmp)
    (kind,) = entry
    return {kind: {**entry[kind], **fields}}


def signer_of(fmt: Format, tmp: Path) -> tuple[str | None, str]:
    """The key sha256 and the signer name the control verdict reports (what a revocation names)."""
    v = judge(tmp, fmt)
    (sig,) = [s for s in v.signatures if s.outcome.value in ("passed", "skipped")]
    return sig.key_sha256, sig.signer


# ----------------------------------------------------------------------------------------------
# The control: each format, with no constraining field, is judged as what it is.


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_control_each_format_alone(fmt: Format, tmp_path: Path) -> None:
    v = judge(tmp_path, fmt)
    if fmt.image_signature:
        assert v.status is Status.VERIFIED, v.reasons
    else:
        # An attestation is not an image signature: an SBOM alone never makes an image verified.
        assert v.status is Status.UNSIGNED, v.reasons
        assert any("not an image signature" in r for r in v.reasons), v.reasons


# ----------------------------------------------------------------------------------------------
# cosign `annotations` (cosign sign -a k=v).

COSIGN_KINDS = ("cosign-key", "cosign-keyless")


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
@pytest.mark.parametrize("wanted", [{"env": "dev"}, {"team": "None"}, {"env": "prod", "team": "a"}],
                         ids=["other-value", "absent-vs-None-string", "one-missing"])
def test_annotations_violated_is_never_verified(fmt: Format, wanted: dict[str, str], tmp_path: Path) -> None:
    if fmt.kind in COSIGN_KINDS:
        entry = with_fields(fmt, tmp_path, annotations=wanted)
    else:  # a cosign entry never judges notation or kritis signatures, whatever its fields
        entry = _key_entry(tmp_path, annotations=wanted)
    assert judge(tmp_path, fmt, verifier=entry).status is not Status.VERIFIED


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.annotations], ids=lambda f: f.name)
def test_annotations_satisfied_is_verified(fmt: Format, tmp_path: Path) -> None:
    v = judge(tmp_path, fmt, verifier=with_fields(fmt, tmp_path, annotations={"env": "prod"}))
    assert v.status is Status.VERIFIED, v.reasons


# ----------------------------------------------------------------------------------------------
# cosign `requirePredicateTypes`.


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_required_predicate_missing_is_never_verified(fmt: Format, tmp_path: Path) -> None:
    if fmt.kind in COSIGN_KINDS:
        entry = with_fields(fmt, tmp_path, requirePredicateTypes=["https://slsa.dev/provenance/v1"])
    else:
        entry = _key_entry(tmp_path, requirePredicateTypes=["https://slsa.dev/provenance/v1"])
    v = judge(tmp_path, fmt, verifier=entry)
    assert v.status is not Status.VERIFIED, v.reasons


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.attest], ids=lambda f: f.name)
def test_required_predicate_attested_is_verified(fmt: Format, tmp_path: Path) -> None:
    assert fmt.attest is not None
    entry = with_fields(fmt, tmp_path, requirePredicateTypes=[SPDX])
    assert judge(tmp_path, fmt, verifier=entry).status is not Status.VERIFIED
    v = judge(tmp_path, fmt, verifier=entry, extra_referrers=(fmt.attest(),))
    assert v.status is Status.VERIFIED, v.reasons


# ----------------------------------------------------------------------------------------------
# cosign `attestations` (CEL conditions on the verified statement); notation and kritis entries
# refuse the field at load (tests/unit/verify/test_conditions.py).


@pytest.mark.parametrize("fmt", FORMATS, ids=IDS)
def test_attestation_conditions_unmet_are_never_verified(fmt: Format, tmp_path: Path) -> None:
    want = [{"predicateType": SPDX, "conditions": ["false"]}]
    entry = with_fields(fmt, tmp_path, attestations=want) if fmt.kind in COSIGN_KINDS else \
        _key_entry(tmp_path, attestations=want)
    extra = (fmt.attest(),) if fmt.attest is not None else ()
    v = judge(tmp_path, fmt, verifier=entry, extra_referrers=extra)
    assert v.status is not Status.VERIFIED, v.reasons


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.attest], ids=lambda f: f.name)
def test_attestation_conditions_met_are_verified(fmt: Format, tmp_path: Path) -> None:
    assert fmt.attest is not None
    entry = with_fields(fmt, tmp_path, attestations=[
        {"predicateType": SPDX, "conditions": [f'statement.predicateType == "{SPDX}"', "has(predicate.spdxVersion)"]}])
    assert judge(tmp_path, fmt, verifier=entry).status is not Status.VERIFIED
    v = judge(tmp_path, fmt, verifier=entry, extra_referrers=(fmt.attest(),))
    assert v.status is Status.VERIFIED, v.reasons


# ----------------------------------------------------------------------------------------------
# `revocations`: keySha256, identity, revokedAt.


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.image_signature], ids=lambda f: f.name)
@pytest.mark.parametrize("by", ["keySha256", "identity"])
def test_revocation_applies_to_every_format(fmt: Format, by: str, tmp_path: Path) -> None:
    key_sha, signer = signer_of(fmt, tmp_path / "control")
    name = key_sha if by == "keySha256" else signer
    assert name
    v = judge(tmp_path, fmt, revocations=[{by: name, "reason": "leaked"}])
    assert v.status is Status.REVOKED, v.reasons


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.image_signature], ids=lambda f: f.name)
@pytest.mark.parametrize("by", ["keySha256", "identity"])
def test_revoked_at_spares_only_what_an_authentic_time_proves_older(fmt: Format, by: str, tmp_path: Path) -> None:
    key_sha, signer = signer_of(fmt, tmp_path / "control")
    name = key_sha if by == "keySha256" else signer
    # Revoked from 2000 on: every signature here was made later, authentic time or not.
    early = judge(tmp_path / "early", fmt, revocations=[{by: name, "revokedAt": "2000-01-01T00:00:00Z",
                                                         "reason": "r"}])
    assert early.status is Status.REVOKED, early.reasons
    # Revoked from 2100 on: only a signature whose *authentic* time proves it older escapes.
    late = judge(tmp_path / "late", fmt, revocations=[{by: name, "revokedAt": "2100-01-01T00:00:00Z",
                                                       "reason": "r"}])
    if fmt.authentic_time:
        assert late.status is Status.VERIFIED, late.reasons
    else:
        assert late.status is Status.REVOKED, late.reasons


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.kind == "notation" and not f.authentic_time],
                         ids=lambda f: f.name)
def test_backdated_signing_time_does_not_escape_a_revocation(fmt: Format, tmp_path: Path) -> None:
    """notary.x509 without a TSA countersignature: signingTime is the signer's own claim. A revoked
    identity that writes 2020 there is still revoked (revokedAt 2026-06-01)."""
    _, signer = signer_of(fmt, tmp_path / "control")
    v = judge(tmp_path, fmt, revocations=[{"identity": signer, "revokedAt": "2026-06-01T00:00:00Z",
                                           "reason": "profile revoked"}])
    assert v.status is Status.REVOKED, v.reasons
    assert any("claimed" in r and "not authenticated" in r for r in v.reasons), v.reasons


# ----------------------------------------------------------------------------------------------
# The classification: a new field fails here until it is placed in the table above or classified.

MATRIX = "enforced for every format: the table above"
FIELDS: dict[type, dict[str, str]] = {
    CosignVerifierSpec: {
        "annotations": MATRIX,
        "require_predicate_types": MATRIX,
        "attestations": MATRIX,
        "key": "the trust anchor itself (tests/unit/verify/test_cosign_key_vectors.py)",
        "keyless": "the trust anchor itself (tests/unit/verify/test_cosign_keyless_vectors.py)",
        "ignore_tlog": "relaxes the log check for .sig and bundles alike (tests/unit/verify/test_sigstore_bundle.py "
                       "test_a_keyless_bundle_without_a_log_entry_needs_ignore_tlog, ..._passes_its_log_and_sct_"
                       "fields_to_bundles); never makes a signature pass that another field refuses",
        "ignore_sct": "relaxes the SCT check for .sig and bundles alike (tests/unit/verify/test_sigstore_bundle.py "
                      "test_ignore_sct_is_honoured_for_certificate_bundles); never makes a signature pass that "
                      "another field refuses",
        "rekor_pubkey": "log trust material, enforced for every logged format: test_log_keys_* and "
                        "test_rekor_pub_key_applies_to_key_signed_bundles (and test_sigstore_interop.py)",
        "trusted_root": "trust material (tests/integration/test_sigstore_interop.py); given twice, or beside "
                        "keyless.roots, refused at load: test_trust_material_given_twice_is_refused_at_load",
    },
    Revocation: {
        "key_sha256": MATRIX,
        "identity": MATRIX,
        "revoked_at": MATRIX,
        "reason": "text shown in the verdict's reasons",
    },
}


def test_every_field_is_classified() -> None:
    for model, classified in FIELDS.items():
        assert set(model.model_fields) == set(classified), (
            f"{model.__name__}: classify every field (enforced in the table, or why it does not constrain "
            f"signatures): {sorted(set(model.model_fields) ^ set(classified))}")


def test_refused_at_load_is_exit_2(tmp_path: Path) -> None:
    """What the schema cannot honour is refused when the policy is loaded, naming file, line and field."""
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy", "spec": {
        "rules": [{"name": "r", "images": ["*"], "verifiers": [{"cosign": {
            "key": "cosign.pub", "annotations": {"env": 1}}}]}]}}))
    with pytest.raises(ConfigError) as err:
        load_policy(path)
    assert "policy.yaml:" in str(err.value) and "annotations" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Log keys: a Rekor key (rekorPubKey, keyless.rekor.pubkey) and a CT key (keyless.ctlog.pubkey)
# replace the logs of whichever trust root the entry uses (trustedRoot, or the public-good root),
# for every format that relies on a log; they were once read only beside keyless.roots.

KEYLESS_FORMATS = [f for f in FORMATS if f.kind == "cosign-keyless"]
OTHER_LOG_KEY = KeyPair.ecdsa()


def _root_keys_pem(fmt: Format, tmp: Path, which: str) -> str:
    """The PEM public keys of the ``tlogs`` or ``ctlogs`` of the format's own trusted root."""
    root = json.loads(Path(fmt.verifier(tmp)["cosign"]["keyless"]["trustedRoot"]).read_text())
    pems = []
    for log in root[which]:
        der = base64.b64decode(log["publicKey"]["rawBytes"])
        pems.append(serialization.load_der_public_key(der).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode())
    return "".join(pems)


def _log_key_entry(fmt: Format, tmp: Path, where: str, pem: str) -> dict[str, Any]:
    entry = fmt.verifier(tmp)
    (tmp / "log.pub").write_text(pem)
    if where == "rekorPubKey":
        entry["cosign"]["rekorPubKey"] = "log.pub"
    elif where == "keyless.rekor":
        entry["cosign"]["keyless"]["rekor"] = {"pubkey": "log.pub"}
    else:
        entry["cosign"]["keyless"]["ctlog"] = {"pubkey": "log.pub"}
    return entry


def _signature_outcome(v: Verdict) -> str:
    (sig,) = v.signatures
    return sig.outcome.value


@pytest.mark.parametrize("where", ["rekorPubKey", "keyless.rekor", "keyless.ctlog"])
@pytest.mark.parametrize("fmt", KEYLESS_FORMATS, ids=[f.name for f in KEYLESS_FORMATS])
def test_log_keys_violated_are_never_verified(fmt: Format, where: str, tmp_path: Path) -> None:
    v = judge(tmp_path, fmt, verifier=_log_key_entry(fmt, tmp_path, where, OTHER_LOG_KEY.public_pem))
    assert v.status is not Status.VERIFIED and _signature_outcome(v) == "failed", v.reasons


@pytest.mark.parametrize("where", ["rekorPubKey", "keyless.rekor", "keyless.ctlog"])
@pytest.mark.parametrize("fmt", KEYLESS_FORMATS, ids=[f.name for f in KEYLESS_FORMATS])
def test_log_keys_satisfied_are_verified(fmt: Format, where: str, tmp_path: Path) -> None:
    pem = _root_keys_pem(fmt, tmp_path, "ctlogs" if where == "keyless.ctlog" else "tlogs")
    v = judge(tmp_path, fmt, verifier=_log_key_entry(fmt, tmp_path, where, pem))
    assert _signature_outcome(v) == ("passed" if fmt.image_signature else "skipped"), v.reasons
    assert v.status is (Status.VERIFIED if fmt.image_signature else Status.UNSIGNED)


MANAGED = json.loads((VECTORS / "sigstore-conformance" / "cases.json").read_text())
_MK = next(c for c in MANAGED["cases"] if c["id"] == "managed-key-happy-path")  # logged in the public Rekor
MK_DIGEST = "sha256:" + _MK["artifact_sha256"]
MANAGED_KEY_BUNDLE = Format(
    "key bundle logged in Rekor", MK_DIGEST, "cosign-key",
    lambda tmp: {"cosign": {"key": str(VECTORS / "sigstore-conformance" / _MK["verify_with"]["key"]),
                            "trustedRoot": str(VECTORS / "sigstore-conformance" / _MK["trusted_root"])}},
    lambda: ((), (bundle_ref((VECTORS / "sigstore-conformance" / _MK["bundle"]).read_bytes(), MK_DIGEST),)))


def test_rekor_pub_key_applies_to_key_signed_bundles(tmp_path: Path) -> None:
    """Key-based: rekorPubKey judged the legacy .sig SET but not a bundle's log entry, which was
    checked against the trusted root's logs (or the public-good root's) instead."""
    fmt = MANAGED_KEY_BUNDLE
    assert judge(tmp_path / "control", fmt).status is Status.VERIFIED
    entry = fmt.verifier(tmp_path)
    (tmp_path / "rekor.pub").write_text(OTHER_LOG_KEY.public_pem)
    v = judge(tmp_path / "other", fmt, verifier={"cosign": {**entry["cosign"], "rekorPubKey": str(tmp_path /
                                                                                                   "rekor.pub")}})
    assert v.status is not Status.VERIFIED and _signature_outcome(v) == "failed", v.reasons
    root = json.loads(Path(entry["cosign"]["trustedRoot"]).read_text())
    (tmp_path / "rekor-own.pub").write_text("".join(
        serialization.load_der_public_key(base64.b64decode(t["publicKey"]["rawBytes"])).public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        for t in root["tlogs"]))
    v = judge(tmp_path / "own", fmt, verifier={"cosign": {**entry["cosign"], "rekorPubKey": str(tmp_path /
                                                                                                 "rekor-own.pub")}})
    assert v.status is Status.VERIFIED, v.reasons


@pytest.mark.parametrize(("fields", "needle"), [
    ({"trustedRoot": "other.json"}, "trustedRoot is given twice"),
    ({"keyless.roots": "fulcio.pem"}, "keyless.roots and trustedRoot both name the Fulcio CAs"),
    ({"rekorPubKey": "rekor.pub", "keyless.rekor": {"pubkey": "rekor.pub"}}, "the Rekor key is given twice"),
    # An empty value would read as "not given" and fall back to another root.
    ({"keyless.trustedRoot": ""}, "must not be empty"),
    ({"rekorPubKey": " "}, "must not be empty"),
])
def test_trust_material_given_twice_is_refused_at_load(fields: dict[str, Any], needle: str, tmp_path: Path) -> None:
    """One place for each piece of Sigstore trust: a second one would be silently passed over. Refused
    through the real CLI (exit 2), naming the file, the line and the field."""
    import subprocess
    import sys

    entry = _keyless_msg_entry(tmp_path)
    for k, val in fields.items():
        if k.startswith("keyless."):
            entry["cosign"]["keyless"][k.removeprefix("keyless.")] = val
        else:
            entry["cosign"][k] = val
    doc = {"apiVersion": "sigaudit.io/v1alpha1", "kind": "AuditPolicy",
           "spec": {"rules": [{"name": "all", "images": ["*"], "verifiers": [entry]}]}}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "scanner.cli", "check-policy", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert f"{path}:" in proc.stderr and "spec.rules.0.verifiers.0.cosign" in proc.stderr
