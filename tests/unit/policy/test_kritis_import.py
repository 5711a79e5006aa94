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
    # Allowlists waive the rules of the policies kritis applies them to, never another source's rules:
    # they are not policy-wide exemptions.
    assert policy.exemptions == ()
    ex = {(r.name, e.images[0], e.namespaces[0]) for r in policy.rules for e in r.waivers}
    assert ex == {("kritis:prod/gap", "gcr.io/distroless/*", "prod"),
                  ("kritis:staging/isp", "registry.example/base:1", "staging"),
                  ("kritis:legacy-ns/old", "quay.io/old/*", "legacy-ns")}
    assert all(e.reason.startswith("kritis admission allowlist") for r in policy.rules for e in r.waivers)
    text = "\n".join(policy.warnings)
    assert "PGP" in text and "packageVulnerabilityRequirements" in text and "legacy-ns/missing not found" in text
    # Reported fields are notes on every verdict of the rule, not only warnings on stderr.
    assert any("asciiArmoredPgpPublicKey" in n for n in gap.notes)
    assert any("packageVulnerabilityRequirements" in n for n in rules["kritis:staging/isp"].notes)


@pytest.mark.parametrize("note", ["notes/qa", "projects/p#/notes/qa", "projects/p?x=1/notes/qa",
                                  "projects/../notes/qa", "projects/p/notes/q a"])
def test_bad_note_reference_refuses_the_policies_naming_the_authority(note: str, tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Before: a ConfigError that stopped the whole import (every namespace unaudited, exit 2) for one
    namespace's authority — or, for `#`/`?` in the project, a Grafeas URL cut short. Now the policies
    naming it are refused (their images `error`), the others are imported."""
    docs = [dict(DOCS[0], spec={**DOCS[0]["spec"], "noteReference": note}), DOCS[2],
            {**DOCS[0], "metadata": {"name": "qa", "namespace": "other"}},
            {**DOCS[2], "metadata": {"name": "gap", "namespace": "other"},
             "spec": {"attestationAuthorityNames": ["qa"]}}]
    policy = _import(tmp_path, docs, monkeypatch)
    rules = {r.name: r for r in policy.rules}
    assert any("noteReference" in r for r in rules["kritis:prod/gap"].refused), rules["kritis:prod/gap"].refused
    assert rules["kritis:prod/gap"].verifiers == ()
    assert rules["kritis:other/gap"].refused == () and rules["kritis:other/gap"].verifiers


def test_unknown_kind_is_refused_with_kritis_in_the_hint() -> None:
    with pytest.raises(ConfigError, match="kritis:FILE"):
        merge(None, ["gatekeeper:x.yaml"], loader=PolicyLoader(), kubeconfig=None, context=None)


def test_every_policy_of_a_namespace_applies(tmp_path: Path, monkeypatch) -> None:
    """kritis reviews every ImageSecurityPolicy and every GenericAttestationPolicy of the pod's namespace
    (and for GAPs keeps the last one's answer): each becomes a rule that must hold. Before, the second
    policy of a namespace was dropped. A GAP and an ISP may share a name."""
    from scanner.inventory.references import parse_reference
    from scanner.policy.engine import match_rules

    more = [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
         "metadata": {"name": "gap2", "namespace": "prod"}, "spec": {"attestationAuthorityNames": ["legacy"]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
         "metadata": {"name": "gap", "namespace": "prod"},
         "spec": {"attestationAuthorityName": "qa", "imageAllowlist": ["registry.example/isp-only:1"]}},
    ]
    policy = _import(tmp_path, [*DOCS, *more], monkeypatch)
    rules = match_rules(policy, parse_reference("registry.example/app:1"), "prod")
    assert [(r.name, r.source) for r in rules] == [
        ("kritis:prod/gap", "kritis:GenericAttestationPolicy/gap"),
        ("kritis:prod/gap2", "kritis:GenericAttestationPolicy/gap2"),
        ("kritis:prod/gap", "kritis:ImageSecurityPolicy/gap")]
    gap, gap2, isp = rules
    assert any("last GenericAttestationPolicy" in n for n in gap.notes + gap2.notes)
    # GAP allowlists are flattened over the namespace's GAPs; an ISP's allowlist is its own.
    assert [w.images for w in gap2.waivers] == [["gcr.io/distroless/*"]]
    assert [w.images for w in isp.waivers] == [["registry.example/isp-only:1"]]


def test_allowlists_are_in_the_exemptions_register(tmp_path: Path, monkeypatch) -> None:
    from scanner.policy.loader import policy_summary

    summary = policy_summary(_import(tmp_path, DOCS, monkeypatch))
    listed = {(e["images"][0], tuple(e["rules"])) for e in summary["exemptions"]}
    assert listed == {("gcr.io/distroless/*", ("kritis:prod/gap",)),
                      ("registry.example/base:1", ("kritis:staging/isp",)),
                      ("quay.io/old/*", ("kritis:legacy-ns/old",))}
