"""kritis resources imported as rules and exemptions: every CRD form (publicKeys[], legacy
publicKeyData, ACK's publicKeyId; GenericAttestationPolicy allow/whitelist patterns; ImageSecurityPolicy's
singular attestationAuthorityName), unsupported parts reported, never silently dropped."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scanner.errors import ConfigError
from scanner.policy.imports import merge
from scanner.policy.loader import PolicyLoader
from scanner.verify.attestation import AttestationVerifier


def _pem(private) -> str:
    return private.public_key().public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo).decode()


RSA_PEM = _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_PEM = _pem(ec.generate_private_key(ec.SECP256R1()))

DOCS = [
    {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
     "metadata": {"name": "qa", "namespace": "prod"},
     "spec": {"noteReference": "v1beta1/projects/build-proj/notes/qa",
              "publicKeys": [{"keyType": "PKIX", "keyId": "qa-key-1",
                              "pkixPublicKey": {"publicKeyPem": RSA_PEM, "signatureAlgorithm": "RSA_PSS_2048_SHA256"}},
                             {"keyType": "PGP", "keyId": "ABCD", "asciiArmoredPgpPublicKey": "xx"}]}},
    {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
     "metadata": {"name": "legacy", "namespace": "prod"},
     "spec": {"noteReference": "projects/build-proj/notes/legacy",
              "publicKeyData": base64.b64encode(EC_PEM.encode()).decode(), "publicKeyId": "ack-key"}},
    {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
     "metadata": {"name": "gap", "namespace": "prod"},
     "spec": {"attestationAuthorityNames": ["qa", "legacy"],
              "admissionAllowlistPatterns": [{"namePattern": "gcr.io/distroless/*"}]}},
    {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
     "metadata": {"name": "isp", "namespace": "staging"},
     "spec": {"attestationAuthorityName": "qa", "imageWhitelist": ["registry.example/base:1"],
              "packageVulnerabilityRequirements": {"maximumSeverity": "HIGH"}}},
    {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
     "metadata": {"name": "old", "namespace": "legacy-ns"},
     "spec": {"attestationAuthorityNames": ["missing"],
              "admissionWhitelistPatterns": [{"namePattern": "quay.io/old/*"}]}},
]


def _import(tmp_path: Path, docs: list, monkeypatch) -> object:
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    f = tmp_path / "kritis.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"kritis:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


def test_rules_exemptions_and_warnings(tmp_path: Path, monkeypatch) -> None:
    policy = _import(tmp_path, DOCS, monkeypatch)
    rules = {r.name: r for r in policy.rules}
    assert set(rules) == {"kritis:prod/gap", "kritis:staging/isp", "kritis:legacy-ns/old"}
    gap = rules["kritis:prod/gap"]
    assert gap.namespaces == ("prod",) and gap.images == ("*",) and gap.count == 2  # every authority
    qa, legacy = gap.verifiers
    assert isinstance(qa, AttestationVerifier) and isinstance(legacy, AttestationVerifier)
    assert qa.name == "attestation by qa" and qa.note_name == "projects/build-proj/notes/qa"
    assert qa.source_label == "http://127.0.0.1:1/v1beta1/projects/build-proj"
    assert len(qa.keys) == 1 and "qa-key-1" in qa.keys[0].ids  # the PGP key is not used
    assert "ack-key" in legacy.keys[0].ids
    # kritis looks an authority up in the policy's own namespace: staging has no "qa" (prod's is not
    # borrowed), and legacy-ns has no "missing". Judging without them would be looser: refused.
    assert rules["kritis:staging/isp"].refused == ("AttestationAuthority staging/qa not found",)
    assert rules["kritis:legacy-ns/old"].refused == ("AttestationAuthority legacy-ns/missing not found",)
    assert rules["kritis:staging/isp"].verifiers == () == rules["kritis:legacy-ns/old"].verifiers
    ex = {(e.images[0], e.namespaces[0]): e for e in policy.exemptions}
    assert set(ex) == {("gcr.io/distroless/*", "prod"), ("registry.example/base:1", "staging"),
                       ("quay.io/old/*", "legacy-ns")}
    assert all(e.reason.startswith("kritis admission allowlist") for e in policy.exemptions)
    text = "\n".join(policy.warnings)
    assert "PGP" in text and "packageVulnerabilityRequirements" in text and "legacy-ns/missing not found" in text
    # Reported fields are notes on every verdict of the rule, not only warnings on stderr.
    assert any("asciiArmoredPgpPublicKey" in n for n in gap.notes)
    assert any("packageVulnerabilityRequirements" in n for n in rules["kritis:staging/isp"].notes)


def test_bad_note_reference_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    docs = [dict(DOCS[0], spec={**DOCS[0]["spec"], "noteReference": "notes/qa"}), DOCS[2]]
    with pytest.raises(ConfigError, match="noteReference"):
        _import(tmp_path, docs, monkeypatch)


def test_unknown_kind_is_refused_with_kritis_in_the_hint() -> None:
    with pytest.raises(ConfigError, match="kritis:FILE"):
        merge(None, ["gatekeeper:x.yaml"], loader=PolicyLoader(), kubeconfig=None, context=None)
