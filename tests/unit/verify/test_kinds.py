"""Verifier kinds are plug-ins (issue #18): each kind (``scanner/verify/kinds/<kind>.py``) exports its
``Spec`` and ``build(spec, trust)``, registered in ONE table; the policy schema's verifier entry is
assembled from that table and the loader builds every verifier through it, so a new kind is one module
plus one line. The ``static`` kind is the worked example (registered here, not in the product)."""

from __future__ import annotations

import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from scanner.errors import ConfigError
from scanner.models import Descriptor, ImageReference, Outcome, RunningImage, SignatureMaterial
from scanner.policy import schema
from scanner.policy.loader import PolicyLoader, parse_policy_document
from scanner.verify.kinds import KINDS, static
from scanner.verify.static import StaticVerifier

DIGEST = "sha256:" + "a" * 64
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_policy_entry_is_assembled_from_the_table() -> None:
    assert [k.name for k in KINDS] == ["cosign", "notation", "attestation"]
    assert list(schema.VerifierSpec.model_fields) == [k.name for k in KINDS]
    for kind in KINDS:
        assert kind.spec in typing.get_args(schema.VerifierSpec.model_fields[kind.name].annotation)
    with pytest.raises(ValidationError, match="exactly one of: cosign, notation, attestation"):
        schema.VerifierSpec()


def test_a_new_kind_is_its_module_and_one_line_in_the_table(tmp_path: Path) -> None:
    entry_model = schema.verifier_entry_model((*KINDS, static.KIND))  # the one line
    image = RunningImage(ImageReference("r.example", "app", "1", DIGEST), ())
    material = SignatureMaterial(Descriptor("", DIGEST, 0))
    for action, outcome in (("pass", Outcome.PASSED), ("fail", Outcome.FAILED)):
        entry = entry_model.model_validate({"static": {"action": action}})
        verifier = PolicyLoader().build_verifier(entry, tmp_path, "spec.rules.0.verifiers.0", "r")
        assert isinstance(verifier, StaticVerifier)
        (result,) = verifier.verify(image, material, NOW)
        assert result.outcome is outcome
    # The kind's Spec is as strict as the others' and the entry still names exactly one kind.
    for bad in ({"static": {"action": "maybe"}}, {"static": {"action": "pass", "extra": 1}}, {"static": {}},
                {"static": {"action": "pass"}, "cosign": {"key": "k.pub"}}, {}):
        with pytest.raises(ValidationError):
            entry_model.model_validate(bad)
    with pytest.raises(ValidationError, match="exactly one of: cosign, notation, attestation, static"):
        entry_model.model_validate({})
    # The existing kinds are untouched by the addition.
    assert entry_model.model_validate({"cosign": {"key": "k.pub"}}).entry()[0].name == "cosign"


def test_a_kind_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        schema.verifier_entry_model((*KINDS, KINDS[0]))


def test_a_policy_file_cannot_name_an_unregistered_kind() -> None:
    # Fail closed: `static: pass` would make images compliant with no signature; the product's table
    # does not register it, so a policy file naming it is refused at load (exit 2), never ignored.
    doc = b"""apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  rules:
    - name: r
      images: ["*"]
      verifiers:
        - static: {action: pass}
"""
    with pytest.raises(ConfigError, match="unknown field") as err:
        parse_policy_document(doc, "p.yaml")
    assert err.value.field == "spec.rules.0.verifiers.0.static"
