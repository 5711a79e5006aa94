"""Kyverno ImageValidatingPolicy and PolicyException imports (issue #25 item 3): the documented shapes map
exactly, anything else is refused, and an exception waives only what it names, in its own namespace."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.errors import ConfigError
from scanner.inventory.references import parse_reference
from scanner.models import ContainerRef, ContainerType, ExemptionKind, RunningImage, Status, Workload
from scanner.policy.engine import evaluate, match_rules
from scanner.policy.imports import merge
from scanner.policy.kyverno_ivp import Condition, Requirement, _parse_validation, compile_glob
from scanner.policy.loader import Policy, PolicyLoader
from scanner.policy.schema import CosignVerifierSpec, VerifierSpec
from tests.harness.cosign_sign import KeyPair

DATA = Path(__file__).resolve().parents[2] / "data" / "kyverno-ivp"
KEYS = [KeyPair.ecdsa() for _ in range(3)]
D1 = "sha256:" + "a" * 64
SIG = "images.containers.map(image, verifyImageSignatures(image, [{}])).all(e, e {})"
NOW = datetime(2026, 12, 7, tzinfo=UTC)
REF = parse_reference(f"r.io/a@{D1}")


def attestor(name: str, k: KeyPair) -> dict[str, Any]:
    return {"name": name, "cosign": {"key": {"data": k.public_pem}, "ctlog": {"insecureIgnoreTlog": True}}}


def ivp(*validations: str, name: str = "ivp", actions: tuple[str, ...] = ("Deny",), **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"validationActions": list(actions), "matchImageReferences": [{"glob": "r.io/*"}],
                         "attestors": [attestor(f"k{i}", k) for i, k in enumerate(KEYS)],
                         "validations": [{"expression": v} for v in validations]}
    s.update(spec)
    return {"apiVersion": "policies.kyverno.io/v1", "kind": "ImageValidatingPolicy", "metadata": {"name": name},
            "spec": s}


def load(tmp_path: Path, *docs: dict[str, Any]) -> Policy:
    f = tmp_path / "k.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"kyverno:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


# -- matchImageReferences ----------------------------------------------------------------------------


@pytest.mark.parametrize(("glob", "image", "hit"), [
    ("ghcr.io/*", "ghcr.io/org/app:1", True),  # gobwas without separators: * crosses slashes
    ("ghcr.io/org/app:?", "ghcr.io/org/app:1", True),
    ("ghcr.io/{org,team}/*", "ghcr.io/team/x", True),
    ("ghcr.io/{org,team}/*", "ghcr.io/other/x", False),
    ("ghcr.io/[!o]*", "ghcr.io/org/x", False),
    ("ghcr.io/[a-c]*", "ghcr.io/build/x", True),
    ("ghcr.io/app\\*", "ghcr.io/app*", True),
    ("ghcr.io/app\\*", "ghcr.io/apps", False),
    ("ghcr.io/{org,team/{a,b}}/x", "ghcr.io/team/b/x", True),
    ("ghcr.io/{org,team/{a,b}}/x", "ghcr.io/team/c/x", False),
    ("*", "", True),
    ("a*b*c", "aXbYc", True),
    ("a*b*c", "aXbYcZ", False),
])
def test_globs_follow_gobwas(glob: str, image: str, hit: bool) -> None:
    assert compile_glob(glob)(image) is hit


def test_a_glob_of_many_stars_matches_in_linear_time() -> None:
    """A regular expression made from ``*a*a*a*a*a*b`` backtracks for minutes on a 200-character name (the
    first version did: the policy held the scan past its deadline)."""
    import time

    start = time.monotonic()
    assert not compile_glob("*a" * 40 + "b")("a" * 250)
    assert compile_glob("*a" * 40 + "*")("a" * 250)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize("glob", ["a{b,c", "a[bc", "a\\", "{a,b}{c,d}{e,f}{g,h}{i,j}{k,l}{m,n}{o,p}{q,r}"])
def test_globs_gobwas_rejects_or_too_large_are_refused(glob: str) -> None:
    with pytest.raises(ValueError):
        compile_glob(glob)


@pytest.mark.parametrize("glob", ["nginx*", "library/nginx*", "docker.io/library/nginx:1.27*", "*@sha256:*"])
def test_a_glob_matches_every_spelling_a_pod_spec_may_use(glob: str, tmp_path: Path) -> None:
    """The pod spec's spelling is unknown to an audit: the rule applies wherever Kyverno's could."""
    pol = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), matchImageReferences=[{"glob": glob}]))
    ref = parse_reference(f"nginx:1.27@{D1}")
    assert match_rules(pol, ref, "ns") == pol.rules
    assert match_rules(pol, parse_reference(f"quay.io/x/y:1@{D1}"), "ns") == () or glob.startswith("*")


def test_no_match_image_references_means_every_image(tmp_path: Path) -> None:
    pol = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), matchImageReferences=[]))
    assert match_rules(pol, parse_reference(f"quay.io/x/y@{D1}"), "ns") == pol.rules


# -- validations -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("expr", "want"), [
    (SIG.format("attestors.k0", "> 0"), Requirement(("k0",), 1)),
    (SIG.format("attestors.k0, attestors.k1, attestors.k2", ">= 2"), Requirement(("k0", "k1", "k2"), 2)),
    (SIG.format("attestors.k0, attestors.k1", "> 1"), Requirement(("k0", "k1"), 2)),
    (SIG.format("attestors.k0, attestors.k1", "== 2"), Requirement(("k0", "k1"), 2)),
    ("images.containers.all(img, verifyImageSignatures(img, [attestors.k1]) > 0)", Requirement(("k1",), 1)),
    ("images.containers.map(i, verifyAttestationSignatures(i, attestations.slsa, [attestors.k0])).all(e, e > 0)",
     Requirement(("k0",), 1, "slsa")),
    ("images.containers.map(image, extractPayload(image, attestations.slsa).predicate.builder.id == 'b')"
     ".all(e, e)", Condition("slsa", "statement.predicate.builder.id == 'b'")),
])
def test_the_documented_shapes_map_exactly(expr: str, want: Requirement | Condition) -> None:
    assert _parse_validation(expr) == want


@pytest.mark.parametrize("expr", [
    SIG.format("attestors.k0, attestors.k1", "== 1"),  # exactly one: a second valid signature would deny
    SIG.format("attestors.k0", ">= 0"),  # verifies nothing
    SIG.format("attestors.k0", "> 1"),  # can never hold
    SIG.format("attestors.k0, attestors.k0", "> 0"),
    SIG.format("attestors.k0", "> 0") + " || true",
    "true",
    "images.containers.map(image, verifyImageSignatures(image, [attestors.k0])).exists(e, e > 0)",
    "images.custom.map(image, verifyImageSignatures(image, [attestors.k0])).all(e, e > 0)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == object.metadata.name).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == variables.v).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == image).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == now).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a).all(e, e) || "
    "images.containers.map(image, true).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == extractPayload(image, "
    "attestations.y).a).all(e, e)",
    "images.containers.map(image, extractPayload(image, attestations.x).a == 'extractPayload(image, "
    "attestations.x)').all(e, e)",
])
def test_any_other_expression_is_refused(expr: str) -> None:
    with pytest.raises(ValueError):
        _parse_validation(expr)


def test_an_unmappable_validation_refuses_the_import_naming_policy_and_expression(tmp_path: Path) -> None:
    expr = SIG.format("attestors.k0", "> 0") + " || object.metadata.name == 'x'"
    with pytest.raises(ConfigError, match=r"ImageValidatingPolicy/strict: spec\.validations\[1\]\.expression.*"
                                          r"object\.metadata\.name"):
        load(tmp_path, ivp(SIG.format("attestors.k1", "> 0"), expr, name="strict"))


def test_n_of_m_and_several_validations_become_requirement_sets(tmp_path: Path) -> None:
    (rule,) = load(tmp_path, ivp(SIG.format("attestors.k0, attestors.k1, attestors.k2", ">= 2"),
                                 SIG.format("attestors.k2", "> 0"))).rules
    assert rule.refused == ()
    assert len(rule.verifiers) == 3  # one verifier per attestor, shared by the sets
    assert rule.sets == ((2, (0, 1, 2)), (1, (2,)))


def test_attestation_validations_carry_their_payload_conditions(tmp_path: Path) -> None:
    doc = ivp("images.containers.map(image, verifyAttestationSignatures(image, attestations.slsa, "
              "[attestors.k0])).all(e, e > 0)",
              "images.containers.map(image, extractPayload(image, attestations.slsa).predicate.x == 1).all(e, e)",
              attestations=[{"name": "slsa", "intoto": {"type": "https://slsa.dev/provenance/v1"}}])
    (rule,) = load(tmp_path, doc).rules
    assert rule.refused == () and rule.sets == ((1, (0,)),)
    (v,) = rule.verifiers

    def native(conditions: list[str]) -> str:
        spec = CosignVerifierSpec.model_validate({"key": KEYS[0].public_pem, "ignoreTlog": True, "attestations": [
            {"predicateType": "https://slsa.dev/provenance/v1", "conditions": conditions}]})
        built = PolicyLoader().build_verifier(VerifierSpec(cosign=spec), tmp_path, "native", "native")
        return built.decision_identity(REF)

    # The same decision as the native verifier with that condition over the statement, not another one.
    assert v.decision_identity(REF) == native(["statement.predicate.x == 1"])
    assert v.decision_identity(REF) != native([])


def test_an_attestation_that_is_also_a_referrer_is_refused(tmp_path: Path) -> None:
    doc = ivp("images.containers.map(image, verifyAttestationSignatures(image, attestations.a, "
              "[attestors.k0])).all(e, e > 0)",
              attestations=[{"name": "a", "intoto": {"type": "t"}, "referrer": {"type": "sbom/cyclone-dx"}}])
    (rule,) = load(tmp_path, doc).rules
    assert rule.verifiers == () and any("referrer" in r for r in rule.refused)


def test_a_payload_condition_without_its_verification_is_refused(tmp_path: Path) -> None:
    doc = ivp(SIG.format("attestors.k0", "> 0"),
              "images.containers.map(image, extractPayload(image, attestations.slsa).predicate.x == 1).all(e, e)",
              attestations=[{"name": "slsa", "intoto": {"type": "https://slsa.dev/provenance/v1"}}])
    (rule,) = load(tmp_path, doc).rules
    assert rule.verifiers == () and any("no validation verifies" in r for r in rule.refused)


def test_the_upstream_samples(tmp_path: Path) -> None:
    docs = [yaml.safe_load((DATA / f).read_text()) for f in ("notary-sample-policy.yaml",
                                                              "cosign-keyless-slsa-policy.yaml")]
    notary, cosign = load(tmp_path, *docs).rules
    # Notary-signed SBOM referrers are not verified by sigaudit: refused, never dropped.
    assert notary.verifiers == () and any("referrer" in r for r in notary.refused)
    assert cosign.refused == () and cosign.sets == ((1, (0,)),)
    assert any("ctlog.url" in n for n in cosign.notes)


@pytest.mark.parametrize(("actions", "mode"), [(("Deny",), "enforce"), (("Audit",), "enforce"),
                                               (("Audit", "Warn"), "enforce"), (("Warn",), "warn"),
                                               (("warn",), "enforce"), ((), "enforce")])
def test_validation_actions_give_the_mode(actions: tuple[str, ...], mode: str, tmp_path: Path) -> None:
    (rule,) = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), actions=actions)).rules
    assert rule.mode == mode


@pytest.mark.parametrize(("attestor", "why"), [
    ({"cosign": {"key": {"data": "/etc/passwd"}}}, "inline PEM"),
    ({"cosign": {"key": {"data": "https://attacker.example/key.pub"}}}, "inline PEM"),
    ({"cosign": {"key": {"kms": "file:///etc/passwd"}}}, "not a KMS reference"),
    ({"cosign": {"key": {"data": KEYS[0].public_pem + KEYS[1].public_pem}}}, "2 PEM blocks"),
    ({"cosign": {"keyless": {"identities": []}}}, "without identities"),
    ({"cosign": {"keyless": {"identities": [{"subject": "s"}], "roots": "/etc/ssl/cert.pem"}}}, "inline PEM"),
    ({"cosign": {"keyless": {"identities": [{"subject": "s"}], "additionalExtensions": {"bogus": "x"}}}},
     "unknown certificate extension"),
    ({"notary": {"certs": {"value": "/etc/ssl/certs/ca.pem"}}}, "inline PEM"),
])
def test_trust_material_is_inline_and_pinned(attestor: dict[str, Any], why: str, tmp_path: Path) -> None:
    doc = ivp(SIG.format("attestors.x", "> 0"))
    doc["spec"]["attestors"] = [{"name": "x", **attestor}]
    (rule,) = load(tmp_path, doc).rules
    assert rule.verifiers == () and any(why in r for r in rule.refused), rule.refused


# -- PolicyException ---------------------------------------------------------------------------------


def kyverno_policy() -> dict[str, Any]:
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"}, "spec": {"rules": [
        {"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
         "verifyImages": [{"imageReferences": ["r.io/*"], "attestors": [{"entries": [
             {"keys": {"publicKeys": KEYS[0].public_pem, "rekor": {"ignoreTlog": True}}}]}]}]},
        {"name": "other", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
         "verifyImages": [{"imageReferences": ["r.io/*"], "attestors": [{"entries": [
             {"keys": {"publicKeys": KEYS[1].public_pem, "rekor": {"ignoreTlog": True}}}]}]}]}]}}


def polex(ns: str = "team-a", *, rules: tuple[str, ...] = ("r",), **match: Any) -> dict[str, Any]:
    res = {"kinds": ["Pod"], **match}
    return {"apiVersion": "kyverno.io/v2", "kind": "PolicyException",
            "metadata": {"name": "legacy", "namespace": ns,
                         "annotations": {"policies.kyverno.io/description": "vendor image, ticket SEC-1"}},
            "spec": {"exceptions": [{"policyName": "p", "ruleNames": list(rules)}],
                     "match": {"any": [{"resources": res}]}}}


def waived(pol: Policy, rule: str, ns: str) -> bool:
    r = next(x for x in pol.rules if x.name == rule)
    return any(w.namespaces and any(__import__("fnmatch").fnmatchcase(ns, g) for g in w.namespaces)
               for w in r.waivers)


def test_an_exception_waives_its_rule_in_its_own_namespace_only(tmp_path: Path) -> None:
    pol = load(tmp_path, kyverno_policy(), polex(namespaces=["*"]))
    assert waived(pol, "p/r", "team-a")
    assert not waived(pol, "p/r", "team-b")  # "*" never reaches past the exception's own namespace
    assert not waived(pol, "p/other", "team-a")  # only the rules it names


def test_an_exception_gives_an_exempt_verdict_naming_it(tmp_path: Path) -> None:
    pol = load(tmp_path, kyverno_policy(), polex(rules=("*",)))
    rule = next(r for r in pol.rules if r.name == "p/r")
    c = ContainerRef("team-a", "pod", "app", ContainerType.CONTAINER, "r.io/app:1", None, Workload("Pod", "pod"))
    image = RunningImage(parse_reference(f"r.io/app@{D1}"), (c,))
    v = evaluate(image, rule, [], [], pol, NOW, "team-a", per_verifier=[[]])
    assert v.status is Status.EXEMPT
    (ref,) = v.exemptions
    assert ref.kind is ExemptionKind.WAIVER and ref.rule == "p/r" and ref.applied
    assert "PolicyException team-a/legacy" in ref.reason and "SEC-1" in ref.reason
    assert evaluate(image, rule, [], [], pol, NOW, "team-b", per_verifier=[[]]).status is Status.UNSIGNED


@pytest.mark.parametrize("match", [{"namespaces": ["team-b"]}, {"kinds": ["Deployment"]},
                                   {"operations": ["UPDATE"]}])
def test_an_exception_whose_filter_misses_the_running_pods_waives_nothing(match: dict[str, Any],
                                                                          tmp_path: Path) -> None:
    pol = load(tmp_path, kyverno_policy(), polex(**match))
    assert not any(r.waivers for r in pol.rules)
    assert any("covers no running pod" in w for w in pol.warnings)


@pytest.mark.parametrize(("change", "field"), [
    (lambda ex: ex["spec"]["match"]["any"][0]["resources"].update(names=["legacy-*"]), "resources.names"),
    (lambda ex: ex["spec"]["match"]["any"][0]["resources"].update(selector={"matchLabels": {"a": "b"}}),
     "resources.selector"),
    (lambda ex: ex["spec"].update(conditions={"any": [{"key": "x", "operator": "Equals", "value": "y"}]}),
     "spec.conditions"),
    (lambda ex: ex["spec"]["match"]["any"][0].update(subjects=[{"kind": "User", "name": "u"}]), "subjects"),
])
def test_an_exception_that_cannot_be_evaluated_exactly_is_refused(change: Any, field: str, tmp_path: Path) -> None:
    ex = polex()
    change(ex)
    with pytest.raises(ConfigError, match=rf"PolicyException team-a/legacy.*{field}"):
        load(tmp_path, kyverno_policy(), ex)


def test_an_exception_without_background_is_not_applied_by_an_audit(tmp_path: Path) -> None:
    ex = polex()
    ex["spec"]["background"] = False
    pol = load(tmp_path, kyverno_policy(), ex)
    assert not any(r.waivers for r in pol.rules)


def test_a_cel_exception_waives_its_image_validating_policy(tmp_path: Path) -> None:
    ex = yaml.safe_load((DATA / "cel-exception.yaml").read_text())
    with pytest.raises(ConfigError, match=r"no metadata\.namespace"):
        load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), name="ivpol-sample"), ex)
    ex["metadata"]["namespace"] = "team-a"
    with pytest.raises(ConfigError, match=r"spec\.matchConditions"):  # the upstream sample: CEL over the pod
        load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), name="ivpol-sample"), ex)
    del ex["spec"]["matchConditions"]
    ex["spec"]["policyRefs"][0]["kind"] = "ValidatingPolicy"  # Kyverno compares name and kind
    pol = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), name="ivpol-sample"), ex)
    assert not any(r.waivers for r in pol.rules)
    del ex["spec"]["policyRefs"][0]["kind"]
    pol = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), name="ivpol-sample"), ex)
    assert not any(r.waivers for r in pol.rules)
    ex["spec"]["policyRefs"][0]["kind"] = "ImageValidatingPolicy"
    ex["spec"]["expiresAt"] = "2027-01-01T00:00:00Z"
    ex["spec"]["images"] = ["r.io/legacy*"]
    pol = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), name="ivpol-sample"), kyverno_policy(), ex)
    rule = next(r for r in pol.rules if r.name == "ImageValidatingPolicy/ivpol-sample")
    (w,) = rule.waivers
    assert w.namespaces == ["team-a"] and w.until == datetime(2027, 1, 1, tzinfo=UTC)
    assert w.matcher is not None
    assert w.matcher(parse_reference(f"r.io/legacy-app@{D1}"), "")
    assert not w.matcher(parse_reference(f"r.io/app@{D1}"), "")
    assert not any(r.waivers for r in pol.rules if r.name != rule.name)


# -- admission (issue #25 item 5: why a running image slipped past the policy) ----------------------


@pytest.mark.parametrize(("actions", "mode"), [(("Deny",), "enforce"), (("Audit",), "audit"),
                                               (("Warn", "Audit"), "audit"), (("Warn",), "warn")])
def test_the_admission_description_of_an_ivp(actions: tuple[str, ...], mode: str, tmp_path: Path) -> None:
    doc = ivp(SIG.format("attestors.k0", "> 0"), actions=actions, failurePolicy="Ignore",
              matchConstraints={"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                                   "resources": ["pods"]}],
                                "namespaceSelector": {"matchLabels": {"tier": "prod"}}})
    doc["metadata"]["creationTimestamp"] = "2026-11-01T10:00:00Z"
    (rule,) = load(tmp_path, doc).rules
    adm = rule.admission
    assert adm is not None
    assert (adm.kind, adm.name, adm.mode.value, adm.failure_policy) == ("ImageValidatingPolicy", "ivp", mode, "Ignore")
    assert adm.created_at == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert adm.scope.match_kinds == ("Pod",)
    assert [f.description for f in adm.scope.narrowing] == ["namespaceSelector={'matchLabels': {'tier': 'prod'}}"]
    doc["spec"]["evaluation"] = {"admission": {"enabled": False}}
    (rule,) = load(tmp_path, doc).rules
    assert rule.admission is not None and rule.admission.mode.value == "off"


# -- malformed documents: refused (exit 2) naming the field, never a crash ---------------------------


@pytest.mark.parametrize(("where", "value", "path"), [
    (("metadata",), "str", "metadata"),
    (("spec",), ["a"], "spec"),
    (("spec", "attestors"), 5, "spec.attestors"),
    (("spec", "attestors", 0), "a", "spec.attestors[0]"),
    (("spec", "attestors", 0, "cosign", "key"), True, "spec.attestors[0].cosign.key"),
    (("spec", "validations", 0), "expr", "spec.validations[0]"),
    (("spec", "validations", 0, "expression"), ["x"], "spec.validations[0].expression"),
    (("spec", "matchImageReferences"), {"glob": "x"}, "spec.matchImageReferences"),
    (("spec", "validationActions"), "Deny", "spec.validationActions"),
])
def test_a_malformed_policy_is_refused_naming_the_field(where: tuple[Any, ...], value: Any, path: str,
                                                        tmp_path: Path) -> None:
    doc = ivp(SIG.format("attestors.k0", "> 0"))
    cur: Any = doc
    for k in where[:-1]:
        cur = cur[k]
    cur[where[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(f"{path} is a {type(value).__name__}")):
        load(tmp_path, doc)


@pytest.mark.parametrize(("where", "value", "path"), [
    (("metadata",), ["a"], "metadata"),
    (("spec", "match"), "str", "spec.match"),
    (("spec", "match", "any"), 5, "spec.match.any"),
    (("spec", "exceptions", 0, "ruleNames"), True, "spec.exceptions[0].ruleNames"),
    (("spec", "match", "any", 0, "resources", "namespaces"), "team-a", "spec.match.any[0].resources.namespaces"),
])
def test_a_malformed_exception_is_refused_naming_the_field(where: tuple[Any, ...], value: Any, path: str,
                                                           tmp_path: Path) -> None:
    ex = polex()
    cur: Any = ex
    for k in where[:-1]:
        cur = cur[k]
    cur[where[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(f"{path} is a {type(value).__name__}")):
        load(tmp_path, kyverno_policy(), ex)


def test_an_ivp_created_after_the_pod_or_in_audit_mode_explains_the_running_image(tmp_path: Path) -> None:
    """The imported IVP's admission facts drive the admission finding (scanner/policy/admission.py)."""
    from scanner.models import AdmissionCause, Verdict
    from scanner.policy.admission import explain

    doc = ivp(SIG.format("attestors.k0", "> 0"))
    doc["metadata"]["creationTimestamp"] = "2026-11-01T10:00:00Z"
    (rule,) = load(tmp_path, doc).rules
    assert rule.admission is not None
    c = ContainerRef("team-a", "pod", "app", ContainerType.CONTAINER, "r.io/app:1", None, Workload("Pod", "pod"),
                     pod_created_at=datetime(2026, 10, 1, tzinfo=UTC))
    v = Verdict(RunningImage(parse_reference(f"r.io/app@{D1}"), (c,)), Status.UNSIGNED, ("no signature",),
                rule.name, rule.source)
    (out,) = explain([v], {(rule.source, rule.name): rule.admission})
    assert out.admission is not None and out.admission.likely_cause is AdmissionCause.CREATED_BEFORE_POLICY
    assert out.admission.policy == "ImageValidatingPolicy/ivp"
    (rule,) = load(tmp_path, ivp(SIG.format("attestors.k0", "> 0"), actions=("Audit",))).rules
    assert rule.admission is not None
    (out,) = explain([v], {(rule.source, rule.name): rule.admission})
    assert out.admission is not None and out.admission.likely_cause is AdmissionCause.AUDIT_MODE
