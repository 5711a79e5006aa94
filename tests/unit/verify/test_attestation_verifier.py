"""The attestation verifier's decisions: verified naming the attestor, not attested, another digest,
a bad signature, another attestor's attestation, an unreadable source, a KMS key that is unavailable;
and the policy engine's wording of each verdict."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from scanner.errors import ConfigError
from scanner.models import (
    ContainerRef,
    ContainerType,
    Descriptor,
    ImageReference,
    RunningImage,
    SignatureMaterial,
    Status,
    Workload,
)
from scanner.policy.engine import evaluate
from scanner.policy.loader import CompiledRule, Policy, PolicyLoader
from scanner.policy.schema import AttestationVerifierSpec, parse_duration
from scanner.verify.attestation import (
    Attestation,
    AttestationSourceError,
    AttestationVerifier,
    GrafeasEndpoint,
    occurrence_attestation,
    pkix_key_id,
    resource_urls,
)

NOW = datetime(2026, 6, 1, tzinfo=UTC)
DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
IMAGE = RunningImage(
    ImageReference("registry.example", "team/app", "1.0", DIGEST),
    (ContainerRef("prod", "p", "c", ContainerType.CONTAINER, "registry.example/team/app:1.0", None,
                  Workload("Pod", "p")),),
)
MATERIAL = SignatureMaterial(Descriptor("application/vnd.oci.image.manifest.v1+json", DIGEST, 1))


def payload(digest: str = DIGEST, *, gcloud: bool = False) -> bytes:
    kind = "Google cloud binauthz container signature" if gcloud else "atomic container signature"
    doc = {"critical": {"identity": {"docker-reference": "registry.example/team/app"},
                        "image": {"docker-manifest-digest": digest}, "type": kind}}
    if gcloud:
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    return json.dumps(doc, separators=(",", ":")).encode()


def pem(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass
class MemorySource:
    """The injected source: the attestations a Grafeas would list for the image's URLs."""

    items: list[Attestation] = field(default_factory=list)
    fail: str = ""
    asked: list[tuple[Sequence[str], str | None]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "memory"

    def attestations(self, urls: Sequence[str], note_name: str | None) -> list[Attestation]:
        self.asked.append((urls, note_name))
        if self.fail:
            raise AttestationSourceError(self.fail)
        return list(self.items)


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP384R1())
STRANGER = ec.generate_private_key(ec.SECP256R1())


def att(data: bytes, sig: bytes, key_id: str = "", origin: str = "projects/p/occurrences/1") -> Attestation:
    return Attestation.from_generic(
        {"serializedPayload": base64.b64encode(data).decode(),
         "signatures": [{"signature": base64.b64encode(sig).decode(), "publicKeyId": key_id}]},
        origin=origin,
    )


def verifier(source: MemorySource, *keys: str, tmp_path: Path) -> AttestationVerifier:
    spec = AttestationVerifierSpec(attestor="prod-attestor", publicKeys=list(keys) or [pem(RSA)],
                                   source="http://127.0.0.1:1/v1beta1/projects/p")
    return AttestationVerifier.from_spec(spec, base_dir=tmp_path, loader=PolicyLoader(), source=source)


def verdict(v: AttestationVerifier):
    rule = CompiledRule("attested", ("*",), ("*",), (v,))
    policy = Policy((rule,), (), (), parse_duration("720h"), frozenset(), 50, "sha256:x")
    return evaluate(IMAGE, rule, v.verify(IMAGE, MATERIAL, NOW), [], policy, NOW, "prod")


def test_rsa_pss_with_digest_length_salt_verifies_and_names_the_attestor(tmp_path: Path) -> None:
    data = payload(gcloud=True)  # Cloud KMS: PSS salt = digest length; gcloud: indented JSON
    sig = RSA.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    v = verifier(MemorySource([att(data, sig, "//cloudkms.googleapis.com/v1/projects/p/x")]), tmp_path=tmp_path)
    out = verdict(v)
    assert out.status is Status.VERIFIED
    assert "attested by prod-attestor" in out.reasons[0] and "RSA_SIGN_PSS_2048_SHA256" in out.reasons[0]
    assert out.signatures[0].signer == "prod-attestor"


def test_ecdsa_p384_with_sha384(tmp_path: Path) -> None:
    data = payload()
    v = verifier(MemorySource([att(data, EC.sign(data, ec.ECDSA(hashes.SHA384())))]), pem(EC), tmp_path=tmp_path)
    assert verdict(v).status is Status.VERIFIED


def test_nothing_found_reads_not_attested_by(tmp_path: Path) -> None:
    source = MemorySource()
    out = verdict(verifier(source, tmp_path=tmp_path))
    assert out.status is Status.UNSIGNED
    assert out.reasons[0] == "image is not attested by prod-attestor"
    # Both spellings of the resource URL are asked for.
    bare = f"registry.example/team/app@{DIGEST}"
    assert set(source.asked[0][0]) == {f"https://{bare}", bare}


def test_attestation_for_another_digest_is_invalid(tmp_path: Path) -> None:
    data = payload(OTHER)
    sig = RSA.sign(data, padding.PKCS1v15(), hashes.SHA256())
    out = verdict(verifier(MemorySource([att(data, sig)]), tmp_path=tmp_path))
    assert out.status is Status.INVALID
    assert any("for another image" in r and OTHER in r for r in out.reasons)


def test_bad_signature_is_invalid(tmp_path: Path) -> None:
    data = payload()
    sig = RSA.sign(data, padding.PKCS1v15(), hashes.SHA256())
    out = verdict(verifier(MemorySource([att(data + b" ", sig)]), tmp_path=tmp_path))
    assert out.status is Status.INVALID
    assert any("does not verify" in r for r in out.reasons)


def test_another_attestors_attestation_does_not_count_either_way(tmp_path: Path) -> None:
    data = payload()
    other = att(data, STRANGER.sign(data, ec.ECDSA(hashes.SHA256())), pkix_key_id(STRANGER.public_key()))
    out = verdict(verifier(MemorySource([other]), tmp_path=tmp_path))
    assert out.status is Status.UNSIGNED and "not attested by prod-attestor" in out.reasons[0]


def test_unreachable_source_is_error(tmp_path: Path) -> None:
    out = verdict(verifier(MemorySource(fail="cannot reach http://127.0.0.1:1: ConnectError"), tmp_path=tmp_path))
    assert out.status is Status.ERROR and "cannot reach" in out.reasons[0]


def test_unavailable_kms_key_makes_error_unless_another_key_verifies(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VAULT_ADDR", raising=False)
    out = verdict(verifier(MemorySource(), "hashivault://attestor", tmp_path=tmp_path))
    assert out.status is Status.ERROR
    assert any("hashivault://attestor" in r and "VAULT_ADDR" in r for r in out.reasons)
    data = payload()
    good = att(data, RSA.sign(data, padding.PKCS1v15(), hashes.SHA256()))
    out = verdict(verifier(MemorySource([good]), "hashivault://attestor", pem(RSA), tmp_path=tmp_path))
    assert out.status is Status.VERIFIED


def test_grafeas_occurrence_shapes_v1beta1_and_v1() -> None:
    data = payload()
    sig = base64.b64encode(b"sig").decode()
    v1beta1 = {"name": "projects/p/occurrences/1", "kind": "ATTESTATION", "noteName": "projects/p/notes/n",
               "resource": {"uri": resource_urls(IMAGE)[0]},
               "attestation": {"attestation": {"genericSignedAttestation": {
                   "contentType": "SIMPLE_SIGNING_JSON", "serializedPayload": base64.b64encode(data).decode(),
                   "signatures": [{"signature": sig, "publicKeyId": "k"}]}}}}
    v1 = {"name": "projects/p/occurrences/2", "kind": "ATTESTATION", "resourceUri": resource_urls(IMAGE)[1],
          "attestation": {"serializedPayload": base64.b64encode(data).decode(), "signatures": [{"signature": sig}]}}
    a, b = occurrence_attestation(v1beta1), occurrence_attestation(v1)
    assert a is not None and b is not None
    assert a.serialized_payload == b.serialized_payload == data and a.note_name == "projects/p/notes/n"
    assert a.resource_url.startswith("https://") and not b.resource_url.startswith("https://")
    pgp = {**v1beta1, "attestation": {"attestation": {"pgpSignedAttestation": {"signature": "x"}}}}
    assert occurrence_attestation(pgp) is None
    assert occurrence_attestation({"kind": "VULNERABILITY"}) is None


def test_grafeas_source_urls() -> None:
    e = GrafeasEndpoint.parse("grafeas+http://127.0.0.1:8080/v1beta1/projects/kritis")
    assert e.occurrences_url == "http://127.0.0.1:8080/v1beta1/projects/kritis/occurrences"
    e = GrafeasEndpoint.parse("https://containeranalysis.googleapis.com/v1/projects/my-proj")
    assert (e.version, e.project) == ("v1", "my-proj")
    with pytest.raises(ConfigError):
        GrafeasEndpoint.parse("ftp://x/v1beta1/projects/p")
    with pytest.raises(ConfigError):
        GrafeasEndpoint.parse("http://x/projects/p")


def test_ed25519_is_refused_as_attestor_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    with pytest.raises(ConfigError, match="not a PKIX attestation key"):
        verifier(MemorySource(), pem(ed25519.Ed25519PrivateKey.generate()), tmp_path=tmp_path)
