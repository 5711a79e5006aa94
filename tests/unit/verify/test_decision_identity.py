"""Decision identities (issue 17 A): the verification cache is keyed by what each verifier declares its
results depend on. Every field of every verifier spec (and of a notation trust policy statement) is
changed here, one at a time, and the identity must change with it — or the case records why the
field cannot change the verdict. A field added to a spec without a case here fails
``test_every_spec_field_has_a_case``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel

import scanner.verify.base as base
from scanner.errors import ConfigError
from scanner.models import (
    Check,
    CheckName,
    CosignLayer,
    Descriptor,
    ImageReference,
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureMaterial,
    SignatureResult,
)
from scanner.policy.loader import PolicyLoader
from scanner.policy.schema import VerifierSpec
from scanner.verify.attestation import AttestationVerifier
from scanner.verify.base import Verifier
from scanner.verify.cosign import CosignKeyVerifier
from scanner.verify.cosign_keyless import CosignKeylessVerifier
from scanner.verify.kms import UnavailableKeyVerifier
from scanner.verify.notation import NotationVerifier
from scanner.verify.notation_trust import TrustPolicyStatement
from scanner.verify.static import StaticVerifier
from scanner.verify.trustroot import trust_from_json, trusted_root_json_from_pems
from tests.harness import cosign_sign, notation_sign

REGISTRY = "reg.example"
DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 6, 1, tzinfo=UTC)


def image(repository: str = "prod/app") -> RunningImage:
    """Verifiers read the reference and the digest, never the containers."""
    return RunningImage(ImageReference(REGISTRY, repository, "1", DIGEST), ())


def _pub_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class Env:
    """A directory of trust material: two of everything, so a file can be given other content."""

    d: Path
    keys: list[ec.EllipticCurvePrivateKey]
    pems: dict[str, list[bytes]]  # name -> [first content, second content]
    notation_chain: list[notation_sign.Issued] | None = None  # the notation probe's signer and root

    def write(self, name: str, which: int = 0) -> str:
        (self.d / name).write_bytes(self.pems[name.split(".")[0]][which])
        return name

    def build(self, doc: dict[str, Any]) -> Verifier:
        return PolicyLoader().build_verifier(VerifierSpec.model_validate(doc), self.d, "spec.rules.0.verifiers.0", "r")


def _notation_pki() -> list[notation_sign.Issued]:
    return [notation_sign.issue(f"Store Root {i}", ca=True) for i in range(2)]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(6)]
    cas = _notation_pki()
    pems = {
        "k": [_pub_pem(keys[0]), _pub_pem(keys[1])],  # cosign / attestor keys
        "rekor": [_pub_pem(keys[2]), _pub_pem(keys[3])],
        "ctlog": [_pub_pem(keys[4]), _pub_pem(keys[5])],
        "fulcio": [cas[0].pem, cas[1].pem],
    }
    pems["root"] = [trusted_root_json_from_pems(pems["fulcio"][i], pems["rekor"][i], pems["ctlog"][i])
                    for i in (0, 1)]
    e = Env(tmp_path, keys, pems)
    for name in ("k.pub", "rekor.pub", "ctlog.pub", "fulcio.pem", "root.json"):
        e.write(name)
    # The public-good root through TUF is replaced by the first (or, via `public_good`, another) root.
    _public_good(monkeypatch, pems["root"][0])
    return e


def _public_good(monkeypatch: pytest.MonkeyPatch, raw: bytes | None) -> None:
    def load(*, offline: bool) -> Any:
        if raw is None:
            raise ConfigError("cannot load the Sigstore public-good trust root: offline and no cache")
        return trust_from_json(raw, source="public-good (test)")

    monkeypatch.setattr("scanner.verify.trustroot.public_good_trust", load)
    monkeypatch.setattr("scanner.verify.cosign_keyless.public_good_trust", load)


# -- the walk --------------------------------------------------------------------------------------

DIFFERS = "differs"


@dataclass(frozen=True)
class Case:
    fields: tuple[str, ...]  # "Model.field" of the spec models (or "TrustPolicyStatement.field")
    label: str
    base: Callable[[Env], dict[str, Any]]
    changed: Callable[[Env], dict[str, Any]]  # may rewrite files: the content changes, the path does not
    expect: str = DIFFERS  # or why the change cannot change the verdict
    repository: str = "prod/app"


KEY = {"cosign": {"key": "k.pub", "ignoreTlog": False, "rekorPubKey": "rekor.pub", "trustedRoot": "root.json"}}
KEY_NO_LOG = {"cosign": {"key": "k.pub", "ignoreTlog": True, "trustedRoot": "root.json"}}
IDENT = {"issuer": "https://issuer.example", "subject": "release@example.com"}
KEYLESS = {"cosign": {"keyless": {"identities": [IDENT], "trustedRoot": "root.json"}}}
ROOTS = {"cosign": {"keyless": {"identities": [IDENT], "roots": "fulcio.pem", "rekor": {"pubkey": "rekor.pub"},
                                "ctlog": {"pubkey": "ctlog.pub"}}}}
ROOTS_SPEC_REKOR = {"cosign": {"keyless": {"identities": [IDENT], "roots": "fulcio.pem",
                                                        "ctlog": {"pubkey": "ctlog.pub"}},
                                           "rekorPubKey": "rekor.pub"}}
ATTEST = {"attestation": {"attestor": "qa", "publicKeys": ["k.pub"]}}


def _with(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``a.b.c`` set to ``value`` (None deletes it)."""
    out: dict[str, Any] = json.loads(json.dumps(doc))
    node = out
    *parents, last = path.split(".")
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def same(doc: dict[str, Any]) -> Callable[[Env], dict[str, Any]]:
    return lambda e: doc


def rewrite(name: str, doc: dict[str, Any]) -> Callable[[Env], dict[str, Any]]:
    def change(e: Env) -> dict[str, Any]:
        e.write(name, 1)
        return doc
    return change


def set_(doc: dict[str, Any], path: str, value: Any) -> Callable[[Env], dict[str, Any]]:
    return same(_with(doc, path, value))


def copied_root(doc: dict[str, Any]) -> Callable[[Env], dict[str, Any]]:
    """``copy.json``: the same bytes as ``root.json``."""
    def change(e: Env) -> dict[str, Any]:
        shutil.copy(e.d / "root.json", e.d / "copy.json")
        return doc
    return change


def other_root(doc: dict[str, Any]) -> Callable[[Env], dict[str, Any]]:
    """``other.json``: another trusted root."""
    def change(e: Env) -> dict[str, Any]:
        (e.d / "other.json").write_bytes(e.pems["root"][1])
        return doc
    return change


def statement(name: str, scope: str, store: str = "ca:s0", **sv: Any) -> dict[str, Any]:
    return {"name": name, "registryScopes": [scope], "signatureVerification": {"level": "strict", **sv},
            "trustStores": [store], "trustedIdentities": ["*"]}


def notation_env(e: Env, statements: list[dict[str, Any]], certs: dict[str, int] | None = None) -> dict[str, Any]:
    """trustpolicy.json with ``statements``; trust stores ca:s0, ca:s1, tsa:t0 (cert index per store)."""
    cas = e.pems["fulcio"]
    for store, which in {"ca/s0": 0, "ca/s1": 1, "tsa/t0": 0, **(certs or {})}.items():
        d = e.d / "truststore" / "x509" / store
        d.mkdir(parents=True, exist_ok=True)
        (d / "root.pem").write_bytes(cas[which])
    (e.d / "trustpolicy.json").write_text(json.dumps({"version": "1.0", "trustPolicies": statements}))
    return {"notation": {"trustPolicy": "trustpolicy.json", "trustStore": "truststore"}}


PROD = f"{REGISTRY}/prod/app"
DEV = f"{REGISTRY}/dev/app"
TWO = [statement("prod", PROD), statement("dev", DEV, "ca:s1")]


def notation(statements: list[dict[str, Any]], certs: dict[str, int] | None = None) -> Callable[[Env], dict[str, Any]]:
    return lambda e: notation_env(e, statements, certs)


def _prod_with(**changes: Any) -> list[dict[str, Any]]:
    s = statement("prod", PROD)
    for k, v in changes.items():
        if k in ("level", "override", "verifyTimestamp"):
            s["signatureVerification"][k] = v
        else:
            s[k] = v
    return [s, statement("dev", DEV, "ca:s1")]


CASES = [
    # cosign, key-based
    Case(("CosignVerifierSpec.key",), "the key file's content", same(KEY), rewrite("k.pub", KEY)),
    Case(("CosignVerifierSpec.ignore_tlog",), "key: ignoreTlog", same(KEY), set_(KEY, "cosign.ignoreTlog", True)),
    Case(("CosignVerifierSpec.ignore_sct",), "key: ignoreSCT", same(KEY_NO_LOG),
         set_(KEY_NO_LOG, "cosign.ignoreSCT", True),
         "a key-signed signature carries no certificate, so no SCT to check"),
    Case(("CosignVerifierSpec.rekor_pubkey",), "key: the rekorPubKey file's content (item 2)", same(KEY),
         rewrite("rekor.pub", KEY)),
    Case(("CosignVerifierSpec.trusted_root",), "key: the trustedRoot file's content (item 2)", same(KEY),
         rewrite("root.json", KEY)),
    Case(("CosignVerifierSpec.trusted_root",), "key: trustedRoot replaces the public-good root",
         set_(KEY, "cosign.trustedRoot", None), same(KEY)),
    Case(("CosignVerifierSpec.annotations",), "key: annotations", same(KEY),
         set_(KEY, "cosign.annotations", {"env": "prod"})),
    Case(("CosignVerifierSpec.require_predicate_types",), "key: requirePredicateTypes", same(KEY_NO_LOG),
         set_(KEY_NO_LOG, "cosign.requirePredicateTypes", ["https://slsa.dev/provenance/v1"])),
    Case(("CosignVerifierSpec.attestations", "AttestationConditionsSpec.predicate_type",
          "AttestationConditionsSpec.conditions"), "key: attestations", same(KEY_NO_LOG),
         set_(KEY_NO_LOG, "cosign.attestations", [{"predicateType": "https://slsa.dev/provenance/v1",
                                                   "conditions": ["has(predicate.runDetails)"]}])),
    Case(("CosignVerifierSpec.attestations",), "key: attestations, another condition",
         set_(KEY_NO_LOG, "cosign.attestations", [{"predicateType": "https://slsa.dev/provenance/v1",
                                                   "conditions": ["has(predicate.runDetails)"]}]),
         set_(KEY_NO_LOG, "cosign.attestations", [{"predicateType": "https://slsa.dev/provenance/v1",
                                                   "conditions": ["has(predicate.buildDefinition)"]}])),
    # cosign, keyless
    Case(("CosignVerifierSpec.keyless", "Keyless.identities"), "keyless: one more identity", same(KEYLESS),
         set_(KEYLESS, "cosign.keyless.identities", [IDENT, {"issuer": "https://x", "subject": "y"}])),
    Case(("Identity.issuer",), "keyless: issuer", same(KEYLESS),
         set_(KEYLESS, "cosign.keyless.identities.0.issuer", "https://other.example")),
    Case(("Identity.subject",), "keyless: subject", same(KEYLESS),
         set_(KEYLESS, "cosign.keyless.identities.0.subject", "other@example.com")),
    Case(("Identity.issuer_regexp",), "keyless: the same issuer text as a regexp", same(KEYLESS),
         same(_with(_with(KEYLESS, "cosign.keyless.identities.0.issuer", None),
                    "cosign.keyless.identities.0.issuerRegExp", IDENT["issuer"]))),
    Case(("Identity.subject_regexp",), "keyless: the same subject text as a regexp", same(KEYLESS),
         same(_with(_with(KEYLESS, "cosign.keyless.identities.0.subject", None),
                    "cosign.keyless.identities.0.subjectRegExp", IDENT["subject"]))),
    Case(("Identity.extensions",), "keyless: a required Fulcio extension", same(KEYLESS),
         set_(KEYLESS, "cosign.keyless.identities.0.extensions", {"githubWorkflowRef": "refs/heads/main"})),
    Case(("Identity.extensions_regexp",), "keyless: the same extension value as a regexp",
         set_(KEYLESS, "cosign.keyless.identities.0.extensions", {"githubWorkflowRef": "refs/heads/main"}),
         set_(KEYLESS, "cosign.keyless.identities.0.extensionsRegExp", {"githubWorkflowRef": "refs/heads/main"})),
    Case(("Keyless.trusted_root",), "keyless: the trustedRoot file's content", same(KEYLESS),
         rewrite("root.json", KEYLESS)),
    Case(("Keyless.trusted_root",), "keyless: the same trusted root under another name",
         same(KEYLESS), copied_root(_with(KEYLESS, "cosign.keyless.trustedRoot", "copy.json")),
         "the root is named by its content, not its path"),
    Case(("Keyless.trusted_root",), "keyless: a trusted root instead of the public-good root",
         set_(KEYLESS, "cosign.keyless.trustedRoot", None), rewrite("root.json", KEYLESS)),
    Case(("Keyless.roots",), "keyless: the Fulcio roots' content", same(ROOTS), rewrite("fulcio.pem", ROOTS)),
    Case(("Keyless.rekor", "PubKeyRef.pubkey"), "keyless: rekor.pubkey's content", same(ROOTS),
         rewrite("rekor.pub", ROOTS)),
    Case(("Keyless.ctlog", "CtlogConfig.pubkey"), "keyless: ctlog.pubkey's content", same(ROOTS),
         rewrite("ctlog.pub", ROOTS)),
    Case(("CtlogConfig.ignore_sct",), "keyless: ctlog.ignoreSCT", same(ROOTS),
         set_(ROOTS, "cosign.keyless.ctlog.ignoreSCT", True)),
    Case(("CosignVerifierSpec.ignore_sct",), "keyless: ignoreSCT", same(KEYLESS),
         set_(KEYLESS, "cosign.ignoreSCT", True)),
    Case(("CosignVerifierSpec.ignore_tlog",), "keyless: ignoreTlog", same(KEYLESS),
         set_(KEYLESS, "cosign.ignoreTlog", True)),
    Case(("CosignVerifierSpec.require_predicate_types",), "keyless: requirePredicateTypes", same(KEYLESS),
         set_(KEYLESS, "cosign.requirePredicateTypes", ["https://slsa.dev/provenance/v1"])),
    Case(("CosignVerifierSpec.attestations",), "keyless: attestations", same(KEYLESS),
         set_(KEYLESS, "cosign.attestations", [{"predicateType": "https://slsa.dev/provenance/v1",
                                                "conditions": ["has(predicate.runDetails)"]}])),
    Case(("CosignVerifierSpec.annotations",), "keyless: annotations", same(KEYLESS),
         set_(KEYLESS, "cosign.annotations", {"env": "prod"})),
    Case(("CosignVerifierSpec.rekor_pubkey",), "keyless with roots: rekorPubKey stands in for rekor.pubkey",
         same(ROOTS_SPEC_REKOR), rewrite("rekor.pub", ROOTS_SPEC_REKOR)),
    # A Rekor key replaces the logs of the trusted root (and of the public-good root); a second
    # trustedRoot beside keyless.trustedRoot is refused at load (tests/unit/policy/test_schema_fields.py).
    Case(("CosignVerifierSpec.rekor_pubkey",), "keyless with a trustedRoot: rekorPubKey replaces its logs",
         same(KEYLESS), rewrite("rekor.pub", _with(KEYLESS, "cosign.rekorPubKey", "rekor.pub"))),
    Case(("CosignVerifierSpec.rekor_pubkey",), "keyless with a trustedRoot: rekorPubKey naming the root's own log",
         same(KEYLESS), same(_with(KEYLESS, "cosign.rekorPubKey", "rekor.pub")),
         "the root's tlogs replaced by the key they already hold: the same trust root, by content"),
    Case(("CosignVerifierSpec.rekor_pubkey",), "keyless with a trustedRoot: the rekorPubKey file's content",
         same(_with(KEYLESS, "cosign.rekorPubKey", "rekor.pub")),
         rewrite("rekor.pub", _with(KEYLESS, "cosign.rekorPubKey", "rekor.pub"))),
    Case(("CosignVerifierSpec.rekor_pubkey",), "keyless on the public-good root: rekorPubKey replaces its logs",
         same(_with(KEYLESS, "cosign.keyless.trustedRoot", None)),
         rewrite("rekor.pub", _with(_with(KEYLESS, "cosign.keyless.trustedRoot", None), "cosign.rekorPubKey",
                                    "rekor.pub"))),
    Case(("Keyless.ctlog", "CtlogConfig.pubkey"), "keyless with a trustedRoot: ctlog.pubkey replaces its CT logs",
         same(KEYLESS), rewrite("ctlog.pub", _with(KEYLESS, "cosign.keyless.ctlog", {"pubkey": "ctlog.pub"}))),
    Case(("CosignVerifierSpec.trusted_root",), "keyless: the spec's trustedRoot in place of keyless.trustedRoot",
         same(KEYLESS), other_root(_with(_with(KEYLESS, "cosign.keyless.trustedRoot", None), "cosign.trustedRoot",
                                             "other.json"))),
    # notation: the statement the repository's scope selects, and the stores it names
    Case(("NotationVerifierSpec.trust_policy", "TrustPolicyStatement.registry_scopes"),
         "notation: the repository's scope moves to another statement", notation(TWO),
         notation([statement("prod", "*"), statement("dev", PROD, "ca:s1")])),
    Case(("NotationVerifierSpec.trust_policy",), "notation: another repository's statement changes",
         notation(TWO), notation([statement("prod", PROD), statement("dev", DEV, "ca:s0")]),
         "the statement of another repository is never chosen for this image"),
    Case(("TrustPolicyStatement.name",), "notation: statement name", notation(TWO),
         notation([dict(statement("prod", PROD), name="prod-2"), statement("dev", DEV, "ca:s1")])),
    Case(("TrustPolicyStatement.level",), "notation: level strict -> permissive", notation(TWO),
         notation(_prod_with(level="permissive"))),
    Case(("TrustPolicyStatement.level",), "notation: level strict -> skip", notation(TWO),
         notation([{"name": "prod", "registryScopes": [PROD], "signatureVerification": {"level": "skip"}},
                   statement("dev", DEV, "ca:s1")])),
    Case(("TrustPolicyStatement.actions",), "notation: override revocation", notation(TWO),
         notation(_prod_with(override={"revocation": "skip"}))),
    Case(("TrustPolicyStatement.verify_timestamp",), "notation: verifyTimestamp", notation(TWO),
         notation(_prod_with(verifyTimestamp="afterCertExpiry"))),
    Case(("TrustPolicyStatement.trust_stores",), "notation: another trust store", notation(TWO),
         notation(_prod_with(trustStores=["ca:s1"]))),
    Case(("TrustPolicyStatement.trust_stores",), "notation: a TSA store added", notation(TWO),
         notation(_prod_with(trustStores=["ca:s0", "tsa:t0"]))),
    Case(("TrustPolicyStatement.trusted_identities",), "notation: trusted identities", notation(TWO),
         notation(_prod_with(trustedIdentities=["x509.subject: C=US, ST=WA, O=sigaudit"]))),
    Case(("NotationVerifierSpec.trust_store",), "notation: the certificate in the chosen store", notation(TWO),
         notation(TWO, {"ca/s0": 1})),
    Case(("NotationVerifierSpec.trust_store",), "notation: the TSA certificate of the chosen statement",
         notation(_prod_with(trustStores=["ca:s0", "tsa:t0"])),
         notation(_prod_with(trustStores=["ca:s0", "tsa:t0"]), {"tsa/t0": 1})),
    Case(("NotationVerifierSpec.trust_store",), "notation: a certificate in a store the statement does not name",
         notation(TWO), notation(TWO, {"ca/s1": 0}), "a store the chosen statement does not name is never read"),
    Case(("TrustPolicyStatement.global_policy",), "notation: globalPolicy", notation(TWO), notation(TWO),
         "blob trust policies only: an OCI statement with globalPolicy is refused at load"),
    # attestations
    Case(("AttestationVerifierSpec.attestor",), "attestation: attestor", same(ATTEST),
         set_(ATTEST, "attestation.attestor", "security")),
    Case(("AttestationVerifierSpec.public_keys",), "attestation: the key file's content", same(ATTEST),
         rewrite("k.pub", ATTEST)),
    Case(("AttestationVerifierSpec.source",), "attestation: registry -> Grafeas (never cached)", same(ATTEST),
         set_(ATTEST, "attestation.source", "http://127.0.0.1:1/v1beta1/projects/p")),
    # noteName with `source: registry` is refused at load (registry attestations carry no note); with a
    # Grafeas source nothing is cached.
    Case(("AttestationVerifierSpec.note_name",), "attestation: noteName (Grafeas only, never cached)",
         set_(ATTEST, "attestation.source", "http://127.0.0.1:1/v1beta1/projects/p"),
         set_(_with(ATTEST, "attestation.source", "http://127.0.0.1:1/v1beta1/projects/p"),
              "attestation.noteName", "projects/p/notes/qa"),
         expect="a Grafeas source's results are never reused (no identity)"),
    Case(("AttestationVerifierSpec.public_key_ids",), "attestation: publicKeyIds", same(ATTEST),
         set_(ATTEST, "attestation.publicKeyIds", ["qa-key-1"])),
    # the kind
    Case(("VerifierSpec.cosign", "VerifierSpec.attestation", "VerifierSpec.notation", "CosignVerifierSpec.keyless"),
         "the verifier kind (same key, another kind)", same(_with(KEY, "cosign.ignoreTlog", True)),
         same(ATTEST)),
]


def _probes(env: Env) -> list[SignatureMaterial]:
    """Material the "cannot change the verdict" records are checked on: a key signature that
    verifies with the first key, a notation signature chaining to the first store root, nothing."""
    return [_sig_material(env), _notation_probe(env), SignatureMaterial(Descriptor("", DIGEST, 0))]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_each_spec_field_changes_the_identity_or_says_why_not(case: Case, env: Env) -> None:
    probes = _probes(env)
    first = env.build(case.base(env))
    before = first.decision_identity(image(case.repository))
    second = env.build(case.changed(env))
    after = second.decision_identity(image(case.repository))
    if case.expect == DIFFERS:
        assert before != after, f"{case.label}: the identity did not change"
    else:
        assert before == after, f"{case.label}: recorded as not changing the verdict ({case.expect})"
        # The record is checked, not trusted: the verifiers give equal results on the probes (a field
        # that starts being read makes this fail, and then the identity must name it).
        for m in probes:
            img = image(case.repository)
            assert first.verify(img, m, NOW) == second.verify(img, m, NOW), f"{case.label}: results differ"
    if "Grafeas" not in case.label:
        assert before is not None and before.startswith(base.IDENTITY_PREFIX)


def _spec_fields() -> set[str]:
    """Every field of every model reachable from VerifierSpec, as Model.field."""
    seen: set[str] = set()
    todo: list[type[BaseModel]] = [VerifierSpec]
    done: set[type[BaseModel]] = set()
    while todo:
        model = todo.pop()
        if model in done:
            continue
        done.add(model)
        for name, info in model.model_fields.items():
            seen.add(f"{model.__name__}.{name}")
            stack: list[Any] = [info.annotation]
            while stack:
                t = stack.pop()
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
                stack += list(typing.get_args(t))
    return seen


def test_every_spec_field_has_a_case() -> None:
    wanted = _spec_fields() | {f"TrustPolicyStatement.{f.name}" for f in dataclasses.fields(TrustPolicyStatement)}
    covered = {f for c in CASES for f in c.fields}
    assert wanted - covered == set(), "spec fields without a decision-identity case"
    assert covered - wanted == set(), "cases naming fields that no longer exist"


def test_every_verifier_declares_its_identity() -> None:
    """Each verifier class subclasses the protocol (so optional capabilities come with defaults) and
    is covered here; none of them is probed with getattr any more."""
    def names(classes: Any) -> set[str]:  # by name: a slots dataclass leaves its pre-slots class behind
        return {f"{c.__module__}.{c.__qualname__}" for c in classes}

    assert names(Verifier.__subclasses__()) == names([CosignKeyVerifier, CosignKeylessVerifier, NotationVerifier,
                                                      AttestationVerifier, StaticVerifier, UnavailableKeyVerifier])
    assert UnavailableKeyVerifier("awskms:///k", "down").decision_identity(image()) is None
    assert StaticVerifier("pass", source="a").decision_identity(image()) != StaticVerifier(
        "fail", source="a").decision_identity(image())
    assert StaticVerifier("pass", source="a").decision_identity(image()) != StaticVerifier(
        "pass", source="b").decision_identity(image())


# -- the repository ----------------------------------------------------------------------------------


def _sig_material(env: Env) -> SignatureMaterial:
    signer = cosign_sign.KeyPair(env.keys[0])
    payload = cosign_sign.simplesigning_payload(f"{REGISTRY}/dev/app", DIGEST)
    sig = base64.b64encode(signer.sign(payload)).decode()
    layer = CosignLayer(payload, cosign_sign.SIMPLESIGNING, {cosign_sign.SIG_ANNOTATION: sig}, "sha256:" + "1" * 64)
    return SignatureMaterial(Descriptor("", DIGEST, 0), (layer,), "sha256:" + "2" * 64)


def test_cosign_verdicts_do_not_depend_on_the_repository(env: Env) -> None:
    """Key and keyless identities do not name the repository, and the results prove it: the same
    signature judged for dev/app and prod/app gives equal results (the payload's docker-reference
    is ignored, as cosign ignores it)."""
    key = env.build(_with(KEY, "cosign.ignoreTlog", True))
    assert key.decision_identity(image("dev/app")) == key.decision_identity(image("prod/app"))
    material = _sig_material(env)
    dev, prod = key.verify(image("dev/app"), material, NOW), key.verify(image("prod/app"), material, NOW)
    assert dev == prod and dev[0].outcome is Outcome.PASSED
    keyless = env.build(KEYLESS)
    assert keyless.decision_identity(image("dev/app")) == keyless.decision_identity(image("prod/app"))


def _notation_material(target: dict[str, Any], chain: list[notation_sign.Issued]) -> SignatureMaterial:
    blob = notation_sign.jws_envelope(chain, target)
    ref = ReferrerArtifact("sha256:" + "3" * 64, notation_sign.ARTIFACT_TYPE, notation_sign.JWS_MEDIA_TYPE, blob, {},
                           None)
    desc = Descriptor(target["mediaType"], target["digest"], target["size"])
    return SignatureMaterial(desc, referrers=(ref,), referrers_listed=True)


def _notation_probe(env: Env) -> SignatureMaterial:
    """A notation signature whose chain ends at the root in store ca:s0 (``fulcio`` content 0)."""
    if env.notation_chain is None:
        root = notation_sign.issue("Probe Root", ca=True)
        env.pems["fulcio"][0] = root.pem
        env.write("fulcio.pem")
        env.notation_chain = [notation_sign.issue("Probe Signer", issuer=root), root]
    target = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 100}
    return _notation_material(target, env.notation_chain)


def test_notation_identity_follows_the_statement_the_repository_selects(env: Env) -> None:
    """Item 1: dev/app and prod/app select different statements (dev trusts store s1, prod s0), so
    the identities differ — and the same signature is verified for one and not the other. Two
    repositories under one wildcard statement share the identity and the results."""
    root, other = notation_sign.issue("Dev Root", ca=True), notation_sign.issue("Prod Root", ca=True)
    leaf = notation_sign.issue("Dev Signer", issuer=root)
    env.pems["fulcio"] = [other.pem, root.pem]  # store s0 (prod) holds the prod root, s1 (dev) the dev root
    v = env.build(notation_env(env, TWO))
    target = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST, "size": 100}
    material = _notation_material(target, [leaf, root])
    (dev,) = v.verify(image("dev/app"), material, datetime.now(UTC))
    (prod,) = v.verify(image("prod/app"), material, datetime.now(UTC))
    assert dev.outcome is Outcome.PASSED and prod.outcome is Outcome.FAILED
    assert v.decision_identity(image("dev/app")) != v.decision_identity(image("prod/app"))

    wildcard = env.build(notation_env(env, [statement("all", "*", "ca:s1")]))
    assert wildcard.decision_identity(image("dev/app")) == wildcard.decision_identity(image("prod/app"))
    assert wildcard.verify(image("dev/app"), material, NOW)[0].outcome == wildcard.verify(
        image("prod/app"), material, NOW)[0].outcome
    # No statement for the repository: the result names it, so the identity does too.
    none = env.build(notation_env(env, [statement("prod", PROD)]))
    assert none.decision_identity(image("dev/app")) != none.decision_identity(image("test/app"))
    assert none.decision_identity(image("dev/app")) != none.decision_identity(image("prod/app"))


def test_attestation_identity_names_the_repository(env: Env) -> None:
    """A payload naming another repository is noted in the reason: the repository is named."""
    v = env.build(ATTEST)
    assert v.decision_identity(image("dev/app")) != v.decision_identity(image("prod/app"))


# -- trust loaded lazily: the Sigstore public-good root -------------------------------------------------


@pytest.fixture
def public_good(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[bytes | None], None]]:
    yield lambda raw: _public_good(monkeypatch, raw)


PUBLIC_KEY = {"cosign": {"key": "k.pub"}}  # the log required, no rekorPubKey/trustedRoot: public-good Rekor
PUBLIC_KEYLESS = {"cosign": {"keyless": {"identities": [IDENT]}}}


def test_public_good_root_is_named_by_its_content(env: Env, public_good: Callable[[bytes | None], None]) -> None:
    """A TUF update of the public-good root changes the identity of every verifier that checks each
    signature against it; a root that cannot be loaded leaves nothing cacheable."""
    first = [env.build(d).decision_identity(image()) for d in (PUBLIC_KEY, PUBLIC_KEYLESS)]
    public_good(env.pems["root"][1])
    second = [env.build(d).decision_identity(image()) for d in (PUBLIC_KEY, PUBLIC_KEYLESS)]
    assert first[0] != second[0] and first[1] != second[1]
    public_good(None)
    assert [env.build(d).decision_identity(image()) for d in (PUBLIC_KEY, PUBLIC_KEYLESS)] == [None, None]


def _bundle_result(tlog: Outcome) -> SignatureResult:
    return SignatureResult(kind="sigstore-bundle", verifier="v", outcome=Outcome.PASSED, reason="ok",
                           checks=(Check(CheckName.INTEGRITY, Outcome.PASSED, "ok"), Check(CheckName.TLOG, tlog, "")))


def test_key_verifier_ignoring_the_log_does_not_pin_the_public_good_root(
        env: Env, public_good: Callable[[bytes | None], None]) -> None:
    """With ignoreTlog the public-good root serves key-signed bundles only: the identity does not
    load it (an air-gapped, key-only policy never reaches TUF for a cache key), and a bundle whose
    log entry was checked against it is not reused; one verified without the log is."""
    doc = {"cosign": {"key": "k.pub", "ignoreTlog": True}}
    v = env.build(doc)
    public_good(None)  # not loadable: the identity does not need it
    assert v.decision_identity(image()) is not None
    assert not v.results_cacheable((_bundle_result(Outcome.PASSED),))
    assert v.results_cacheable((_bundle_result(Outcome.SKIPPED),))
    pinned = env.build(_with(doc, "cosign.trustedRoot", "root.json"))
    assert pinned.results_cacheable((_bundle_result(Outcome.PASSED),))


def test_the_logic_version_and_sigaudit_version_are_part_of_every_identity(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    v = env.build(KEY)
    first = v.decision_identity(image())
    monkeypatch.setattr(base, "IDENTITY_VERSION", base.IDENTITY_VERSION + 1)
    assert v.decision_identity(image()) != first
    monkeypatch.undo()
    monkeypatch.setattr(base, "__version__", "99.0.0")
    assert v.decision_identity(image()) != first


def test_identity_is_stable_across_builds(env: Env) -> None:
    """The same policy and files give the same identity in another process (no object ids, no
    dict order, no clock)."""
    for doc in (KEY, KEYLESS, ROOTS, ATTEST, notation_env(env, TWO)):
        assert env.build(doc).decision_identity(image()) == env.build(doc).decision_identity(image())


def test_results_with_errors_or_network_answers_are_not_cached(env: Env) -> None:
    """Unchanged rule, restated: notation results that relied on a CRL/OCSP answer are not reused
    (the identity cannot pin a network answer)."""
    v = env.build(notation_env(env, TWO))
    ok = SignatureResult(kind="notation", verifier="n", outcome=Outcome.PASSED, reason="ok",
                         details={"revocation": [{"method": "none", "status": "non-revokable"}]})
    crl = dataclasses.replace(ok, details={"revocation": [{"method": "crl", "status": "good"}]})
    assert v.results_cacheable((ok,)) and not v.results_cacheable((crl,))


def test_policy_digest_input_names_the_configured_log_trust(env: Env) -> None:
    """The key verifier's trust fingerprint (hashed into the policy digest a scan reports) changes
    with the rekorPubKey and trustedRoot content too, not only the cache key."""
    before = env.build(KEY).trust_fingerprint
    env.write("rekor.pub", 1)
    after_rekor = env.build(KEY).trust_fingerprint
    env.write("root.json", 1)
    assert len({before, after_rekor, env.build(KEY).trust_fingerprint}) == 3
