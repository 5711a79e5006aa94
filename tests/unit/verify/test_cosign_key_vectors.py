"""Public cosign vectors (connaisseur, real cosign .sig manifests) through the key verifier + policy engine.

Used as they are from tests/data/vectors/cosign; connaisseur's `threshold`/`required` map to the rule's
`count` over one verifier per key (required signers: a rule over just those keys, all of them needed).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from scanner.models import (
    ContainerRef,
    ContainerType,
    CosignLayer,
    Descriptor,
    ImageReference,
    RunningImage,
    SignatureMaterial,
    Status,
    Workload,
)
from scanner.policy.engine import evaluate
from scanner.policy.loader import CompiledRule, Policy
from scanner.verify.cosign import CosignKeyVerifier
from scanner.verify.keys import parse_public_key
from tests.vectors import VECTORS as ALL_VECTORS

VECTORS = ALL_VECTORS / "cosign"
CASES = json.loads((VECTORS / "cases.json").read_text())["legacy_oci"]["cases"]
KEY_CASES = [c for c in CASES if "keyless" not in (c.get("policy") or {})]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def material_for(case: dict) -> SignatureMaterial:
    manifest_path = VECTORS / case["signature_manifest"] if case.get("signature_manifest") else None
    layers = []
    if manifest_path and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        for layer in manifest["layers"]:
            blob = VECTORS / "legacy-oci-connaisseur/registry/blobs" / f"{layer['digest']}.json"
            layers.append(CosignLayer(blob.read_bytes(), layer["mediaType"], layer.get("annotations", {}),
                                      layer["digest"]))
    return SignatureMaterial(image=Descriptor("", case["image_digest"], 0), cosign_layers=tuple(layers))


def policy_for(rule: CompiledRule) -> Policy:
    return Policy((rule,), (), (), timedelta(days=30), frozenset(), 50, "sha256:test")


@pytest.mark.parametrize("case", KEY_CASES, ids=[c["id"] for c in KEY_CASES])
def test_connaisseur_key_vector(case: dict) -> None:
    keys = {name: parse_public_key((VECTORS / path).read_bytes()) for name, path in case["keys"].items()}
    pol = case["policy"]
    required = pol.get("required")
    names = required or ([pol["trust_root"]] if pol["trust_root"] != "*" else list(keys))
    verifiers = tuple(CosignKeyVerifier(keys[n], key_label=n, ignore_tlog=True) for n in names)
    count = len(required) if required else min(pol.get("threshold", 1), len(verifiers))
    if pol.get("threshold", 1) > len(verifiers):
        # More signers demanded than keys trusted: our policy file refuses such a rule outright.
        from pydantic import ValidationError

        from scanner.policy.schema import Rule

        assert case["expected"] == "fail"
        with pytest.raises(ValidationError, match="exceeds"):
            Rule.model_validate({"name": "r", "images": ["*"], "count": pol["threshold"],
                                 "verifiers": [{"cosign": {"key": k, "ignoreTlog": True}} for k in names]})
        return
    rule = CompiledRule("vector", ("*",), ("*",), verifiers, count=count)
    ref = ImageReference("index.docker.io", "securesystemsengineering/testimage", None, case["image_digest"])
    image = RunningImage(ref, (ContainerRef("ns", "p", "c", ContainerType.CONTAINER, "x", None, Workload("Pod", "p")),))
    material = material_for(case)
    results = [r for v in verifiers for r in v.verify(image, material, NOW)]
    verdict = evaluate(image, rule, results, (), policy_for(rule), NOW, "ns")
    expected = Status.VERIFIED if case["expected"] == "pass" else verdict.status
    assert (verdict.status is Status.VERIFIED) == (case["expected"] == "pass"), (case["reason"], verdict.reasons)
    assert verdict.status is expected
    assert verdict.reasons, "every verdict carries its reasons"


def test_each_connaisseur_signer_verifies_only_its_own_layer() -> None:
    case = next(c for c in CASES if c["id"] == "key-multisig-all-three")
    material = material_for(case)
    ref = ImageReference("docker.io", "x/y", None, case["image_digest"])
    image = RunningImage(ref, ())
    for name, path in case["keys"].items():
        v = CosignKeyVerifier(parse_public_key((VECTORS / path).read_bytes()), key_label=name, ignore_tlog=True)
        outcomes = [r.outcome.value for r in v.verify(image, material, NOW)]
        assert outcomes.count("passed") == 1, (name, outcomes)


def test_tlog_required_without_bundle_is_error_never_verified() -> None:
    case = next(c for c in CASES if c["id"] == "key-single-alice")
    key = parse_public_key((VECTORS / case["keys"]["alice"]).read_bytes())
    v = CosignKeyVerifier(key, key_label="alice", ignore_tlog=False)
    rule = CompiledRule("r", ("*",), ("*",), (v,))
    image = RunningImage(ImageReference("docker.io", "x/y", None, case["image_digest"]), ())
    results = v.verify(image, material_for(case), NOW)
    verdict = evaluate(image, rule, results, (), policy_for(rule), NOW, "ns")
    assert verdict.status is Status.ERROR
    assert any("transparency log" in r for r in verdict.reasons)
