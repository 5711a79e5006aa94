"""Why a non-compliant image judged by an imported admission policy runs anyway (issue #25 item 5):
the importers' admission facts and the pure analysis. The finding never changes a verdict."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.clock import parse_kube_time
from scanner.errors import ConfigError
from scanner.inventory.references import parse_reference
from scanner.models import (
    AdmissionCause,
    ContainerRef,
    ContainerType,
    Outcome,
    RunningImage,
    SignatureFailure,
    SignatureResult,
    Status,
    Verdict,
    Workload,
)
from scanner.policy.admission import (
    AdmissionFilter,
    AdmissionMode,
    AdmissionPolicy,
    AdmissionScope,
    Controller,
    WebhookConfig,
    explain,
)
from scanner.policy.imports import merge, webhooks_from
from scanner.policy.loader import PolicyLoader
from scanner.policy.schema import Revocation
from tests.harness.cosign_sign import KeyPair

T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEY = KeyPair.ecdsa()
DIGEST = "sha256:" + "a" * 64


def container(ns: str = "apps", pod: str = "web-1", created: datetime | None = T0, kind: str = "Deployment"
              ) -> ContainerRef:
    return ContainerRef(ns, pod, "c", ContainerType.CONTAINER, "r.io/app:1", None, Workload(kind, "web"),
                        pod_created_at=created)


def verdict(*containers: ContainerRef, status: Status = Status.UNSIGNED,
            signatures: tuple[SignatureResult, ...] = (), source: str = "kyverno:ClusterPolicy/p",
            rule: str = "p/r", warn_only: bool = False) -> Verdict:
    image = RunningImage(parse_reference("r.io/app:1").with_digest(DIGEST), containers or (container(),))
    return Verdict(image, status, ("no signature",), rule, source, signatures, warn_only=warn_only)


def policy(**kw: Any) -> AdmissionPolicy:
    base: dict[str, Any] = {"source": "kyverno", "controller": Controller.KYVERNO, "kind": "ClusterPolicy",
                            "name": "p", "created_at": T0 - timedelta(days=30)}
    return AdmissionPolicy(**(base | kw))


def one(v: Verdict, pol: AdmissionPolicy, **kw: Any) -> Verdict:
    (out,) = explain([v], {(v.policy_source or "", v.rule or ""): pol}, **kw)
    return out


def causes(v: Verdict) -> list[AdmissionCause]:
    assert v.admission is not None
    return [e.cause for e in v.admission.causes]


def test_a_pod_created_before_the_policy_is_named_with_both_times() -> None:
    v = one(verdict(container(created=T0 - timedelta(days=40))), policy())
    assert v.admission is not None
    assert v.admission.likely_cause is AdmissionCause.CREATED_BEFORE_POLICY
    facts = v.admission.causes[0].facts
    assert facts["policy_created_at"] == "2026-01-30T00:00:00Z"
    assert facts["earliest_pod_created_at"] == "2026-01-20T00:00:00Z"
    assert facts["pods"] == "apps/web-1"
    assert v.admission.would_admit_now is False and v.admission.policy == "ClusterPolicy/p"


def test_a_pod_created_after_the_policy_is_not_explained_by_it() -> None:
    v = one(verdict(container(created=T0)), policy())
    assert causes(v) == [AdmissionCause.UNEXPLAINED]


def test_audit_warn_and_disabled_modes_are_causes_and_overrides_apply_per_namespace() -> None:
    assert causes(one(verdict(), policy(mode=AdmissionMode.AUDIT))) == [AdmissionCause.AUDIT_MODE]
    assert causes(one(verdict(), policy(mode=AdmissionMode.WARN))) == [AdmissionCause.WARN_MODE]
    assert causes(one(verdict(), policy(mode=AdmissionMode.OFF))) == [AdmissionCause.ADMISSION_DISABLED]
    pol = policy(mode=AdmissionMode.ENFORCE, mode_overrides=((AdmissionMode.AUDIT, ("legacy*",)),))
    assert causes(one(verdict(container(ns="legacy-1")), pol)) == [AdmissionCause.AUDIT_MODE]
    assert causes(one(verdict(container(ns="apps")), pol)) == [AdmissionCause.UNEXPLAINED]


def test_scope_kind_and_unevaluated_excludes() -> None:
    only_deploy = policy(scope=AdmissionScope(match_kinds=("Deployment",)))
    assert causes(one(verdict(container(kind="DaemonSet")), only_deploy)) == [AdmissionCause.KIND_NOT_MATCHED]
    assert causes(one(verdict(container(kind="Deployment")), only_deploy)) == [AdmissionCause.UNEXPLAINED]
    pods = policy(scope=AdmissionScope(match_kinds=("Pod",)))
    assert causes(one(verdict(container(kind="DaemonSet")), pods)) == [AdmissionCause.UNEXPLAINED]
    excl = policy(scope=AdmissionScope(excludes=(AdmissionFilter("namespaces=['legacy'] subjects=[...]",
                                                                 namespaces=("legacy",)),)))
    v = one(verdict(container(ns="legacy")), excl)
    assert causes(v) == [AdmissionCause.EXCLUDED_AT_ADMISSION]
    assert v.admission is not None and "subjects" in v.admission.causes[0].facts["filters"]
    assert causes(one(verdict(container(ns="apps")), excl)) == [AdmissionCause.UNEXPLAINED]


def test_signature_changes_since_admission() -> None:
    lapsed = SignatureResult("cosign", "k", Outcome.FAILED, "expired", SignatureFailure.EXPIRED,
                             not_after=T0 + timedelta(days=3))
    v = one(verdict(container(created=T0), status=Status.EXPIRED, signatures=(lapsed,)), policy())
    assert causes(v) == [AdmissionCause.EXPIRED_SINCE]
    # a pod admitted after the signature lapsed: not this cause
    v = one(verdict(container(created=T0 + timedelta(days=5)), status=Status.EXPIRED, signatures=(lapsed,)),
            policy())
    assert causes(v) == [AdmissionCause.UNEXPLAINED]
    revoked = SignatureResult("cosign", "k", Outcome.FAILED, "revoked", SignatureFailure.REVOKED,
                              key_sha256="ab" * 32)
    rev = Revocation.model_validate({"keySha256": "ab" * 32, "revokedAt": T0 + timedelta(days=1), "reason": "x"})
    v = one(verdict(container(created=T0), status=Status.REVOKED, signatures=(revoked,)), policy(), revocations=[rev])
    assert causes(v) == [AdmissionCause.REVOKED_SINCE]
    early = Revocation.model_validate({"keySha256": "ab" * 32, "revokedAt": T0 - timedelta(days=1), "reason": "x"})
    v = one(verdict(container(created=T0), status=Status.REVOKED, signatures=(revoked,)), policy(),
            revocations=[early])
    assert causes(v) == [AdmissionCause.UNEXPLAINED]


def test_a_signature_removed_after_an_earlier_verified_scan() -> None:
    seen = {DIGEST: T0 + timedelta(days=2)}
    v = one(verdict(), policy(), verified_before=seen)
    assert causes(v) == [AdmissionCause.SIGNATURE_REMOVED]
    assert v.admission is not None and v.admission.causes[0].facts["last_verified_scan_at"] == "2026-03-03T00:00:00Z"
    # only an unsigned image: a wrong signature now is not "removed"
    assert causes(one(verdict(status=Status.INVALID), policy(), verified_before=seen)) == [AdmissionCause.UNEXPLAINED]


def test_webhooks_failing_open_only_of_the_policy_s_controller() -> None:
    hooks = [WebhookConfig(Controller.POLICY_CONTROLLER, "policy.sigstore.dev", "policy.sigstore.dev", "Ignore"),
             WebhookConfig(Controller.KYVERNO, "kyverno-resource-validating-webhook-cfg", "validate.kyverno.svc-fail",
                           "Fail"),
             # Kyverno's webhook for its failurePolicy: Ignore policies only
             WebhookConfig(Controller.KYVERNO, "kyverno-resource-validating-webhook-cfg",
                           "validate.kyverno.svc-ignore", "Ignore")]
    assert causes(one(verdict(), policy(), webhooks=hooks)) == [AdmissionCause.UNEXPLAINED]
    v = one(verdict(), policy(failure_policy="Ignore"), webhooks=hooks)
    assert causes(v) == [AdmissionCause.WEBHOOK_FAILS_OPEN]
    assert v.admission is not None
    assert v.admission.causes[0].facts["webhooks"] == (
        "kyverno-resource-validating-webhook-cfg/validate.kyverno.svc-ignore, ClusterPolicy/p failurePolicy")
    # the webhook every Fail policy goes through, set to Ignore by hand (or forceFailurePolicyIgnore)
    hooks[1] = WebhookConfig(Controller.KYVERNO, "kyverno-resource-validating-webhook-cfg",
                             "validate.kyverno.svc-fail", "Ignore")
    v = one(verdict(), policy(), webhooks=hooks)
    assert causes(v) == [AdmissionCause.WEBHOOK_FAILS_OPEN]
    assert v.admission is not None
    assert v.admission.causes[0].facts["webhooks"] == (
        "kyverno-resource-validating-webhook-cfg/validate.kyverno.svc-fail")
    cip = policy(source="clusterimagepolicy", controller=Controller.POLICY_CONTROLLER, kind="ClusterImagePolicy")
    assert causes(one(verdict(), cip, webhooks=hooks)) == [AdmissionCause.WEBHOOK_FAILS_OPEN]


def test_webhook_configurations_are_attributed_to_their_controller_and_hostile_shapes_skipped() -> None:
    items = [
        {"metadata": {"name": "kyverno-resource-validating-webhook-cfg"},
         "webhooks": [{"name": "validate.kyverno.svc-fail", "failurePolicy": "Ignore"},
                      {"name": "validate.kyverno.svc-ignore"}]},
        {"metadata": {"name": "policy.sigstore.dev"}, "webhooks": [{"name": "policy.sigstore.dev",
                                                                    "failurePolicy": "Fail"}]},
        {"metadata": {"name": "other"}, "webhooks": [{"name": "x.example.com", "failurePolicy": "Ignore"}]},
        {"metadata": "x", "webhooks": "y"}, "z", {"webhooks": [1, {"name": ["a"], "failurePolicy": {"a": 1}}]},
    ]
    assert webhooks_from(items) == (
        WebhookConfig(Controller.KYVERNO, "kyverno-resource-validating-webhook-cfg", "validate.kyverno.svc-fail",
                      "Ignore"),
        WebhookConfig(Controller.KYVERNO, "kyverno-resource-validating-webhook-cfg", "validate.kyverno.svc-ignore",
                      "Fail"),
        WebhookConfig(Controller.POLICY_CONTROLLER, "policy.sigstore.dev", "policy.sigstore.dev", "Fail"),
    )


def test_several_causes_strongest_first() -> None:
    v = one(verdict(container(created=T0 - timedelta(days=40))),
            policy(mode=AdmissionMode.AUDIT, failure_policy="Ignore"))
    assert causes(v) == [AdmissionCause.AUDIT_MODE, AdmissionCause.CREATED_BEFORE_POLICY,
                         AdmissionCause.WEBHOOK_FAILS_OPEN]


def test_the_finding_never_changes_status_or_compliance_and_skips_compliant_and_native_verdicts() -> None:
    pol = policy(mode=AdmissionMode.AUDIT)
    for status in (Status.UNSIGNED, Status.INVALID, Status.ERROR):
        for warn in (False, True):
            v = verdict(status=status, warn_only=warn)
            out = one(v, pol)
            assert (out.status, out.compliant, out.reasons, out.warn_only) == (v.status, v.compliant, v.reasons, warn)
            if v.compliant:  # a warn-only violation is not counted non-compliant: nothing to explain
                assert out.admission is None
                continue
            assert out.admission is not None
            assert out.admission.would_admit_now is (None if status is Status.ERROR else False)
    for status in (Status.VERIFIED, Status.EXEMPT, Status.NO_POLICY):
        assert one(verdict(status=status), pol).admission is None
    native = verdict(source="policy.yaml", rule="r")
    assert explain([native], {("kyverno:ClusterPolicy/p", "p/r"): pol})[0].admission is None


def test_kube_times() -> None:
    assert parse_kube_time("2026-03-01T00:00:00Z") == T0
    assert parse_kube_time("2026-03-01T01:00:00+01:00") == T0
    for bad in (None, 3, "", "2026-03-01", "2026-03-01T00:00:00", "yesterday", "x" * 100):
        assert parse_kube_time(bad) is None


# ----------------------------------------------------------------------------------------------
# importers


def load(tmp_path: Path, kind: str, *docs: dict[str, Any]) -> Any:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"{kind}:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


def kyverno_doc(spec: dict[str, Any], rule: dict[str, Any] | None = None, vi: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    r = {"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}, **(rule or {}),
         "verifyImages": [{"imageReferences": ["r.io/*"], **(vi or {}),
                           "attestors": [{"entries": [{"keys": {"publicKeys": KEY.public_pem,
                                                                "rekor": {"ignoreTlog": True}}}]}]}]}
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy",
            "metadata": {"name": "p", "creationTimestamp": "2026-01-30T00:00:00Z"},
            "spec": {**spec, "rules": [r]}}


def test_kyverno_admission_facts(tmp_path: Path) -> None:
    (rule,) = load(tmp_path, "kyverno", kyverno_doc({})).rules
    a = rule.admission
    assert a is not None
    assert (a.kind, a.name, a.created_at, a.mode, a.scope.match_kinds) == (
        "ClusterPolicy", "p", T0 - timedelta(days=30), AdmissionMode.AUDIT, ("Pod",))  # Kyverno's default: Audit
    (rule,) = load(tmp_path, "kyverno", kyverno_doc({"validationFailureAction": "Enforce", "failurePolicy": "Ignore",
                                                     "validationFailureActionOverrides": [
                                                         {"action": "Audit", "namespaces": ["legacy"]}]})).rules
    assert rule.admission is not None
    assert (rule.admission.mode, rule.admission.failure_policy, rule.admission.mode_overrides) == (
        AdmissionMode.ENFORCE, "Ignore", ((AdmissionMode.AUDIT, ("legacy",)),))
    (rule,) = load(tmp_path, "kyverno", kyverno_doc({"validationFailureAction": "Enforce"},
                                                    vi={"failureAction": "Audit"})).rules
    assert rule.admission is not None and rule.admission.mode is AdmissionMode.AUDIT
    (rule,) = load(tmp_path, "kyverno", kyverno_doc({"validationFailureAction": "Enforce", "admission": False})).rules
    assert rule.admission is not None and rule.admission.mode is AdmissionMode.OFF
    excl = {"exclude": {"any": [{"resources": {"namespaces": ["legacy"]},
                                 "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"}]},
                                {"resources": {"namespaces": ["kube-system"]}}]}}
    (rule,) = load(tmp_path, "kyverno", kyverno_doc({"validationFailureAction": "Enforce"}, rule=excl)).rules
    assert rule.admission is not None
    (f,) = rule.admission.scope.excludes  # the clean filter is applied by the audit too: not listed
    assert f.namespaces == ("legacy",) and "deployer" in f.description
    assert rule.exclude_namespaces == ("kube-system",)


def test_hostile_kyverno_shapes_do_not_crash_the_admission_facts(tmp_path: Path) -> None:
    doc = kyverno_doc({"validationFailureAction": ["x"], "validationFailureActionOverrides": "legacy",
                       "webhookConfiguration": "x", "failurePolicy": {"a": 1}})
    doc["metadata"]["creationTimestamp"] = {"a": 1}
    (rule,) = load(tmp_path, "kyverno", doc).rules
    assert rule.admission is not None and rule.admission.created_at is None
    assert rule.admission.mode is AdmissionMode.AUDIT and rule.admission.mode_overrides == ()


@pytest.mark.parametrize("change", [{"spec": "x"}, {"metadata": "x"}, {"spec": ["x"]}])
def test_a_kyverno_or_cip_object_without_mapping_spec_or_metadata_is_refused_never_a_crash(
        tmp_path: Path, change: dict[str, Any]) -> None:
    # was AttributeError: 'str' object has no attribute 'get' (exit 3)
    cip = {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy", "metadata": {"name": "c"},
           "spec": {"images": [{"glob": "r.io/**"}], "authorities": [{"static": {"action": "pass"}}]}}
    for kind, doc in (("kyverno", kyverno_doc({})), ("clusterimagepolicy", cip)):
        with pytest.raises(ConfigError, match="not a mapping"):
            load(tmp_path, kind, doc | change)


@pytest.mark.parametrize("block", [
    {"match": {"any": [{"resources": "Pod"}]}},
    {"match": {"any": [{"resources": {"kinds": ["Pod"], "namespaces": "legacy"}}]}},
    {"match": {"any": {"resources": {"kinds": ["Pod"]}}}},
    {"exclude": {"any": [{"resources": ["x"]}]}},
    {"exclude": {"all": [{"resources": {"namespaces": "kube-system"}}]}},
    {"match": "Pod"},
])
def test_a_malformed_match_or_exclude_is_refused_never_read_letter_by_letter(tmp_path: Path,
                                                                             block: dict[str, Any]) -> None:
    # "namespaces: legacy" was read as the namespaces l, e, g, a, c, y: the rule then judged none of the
    # pods of "legacy" (looser); "resources: Pod" crashed the import (AttributeError, exit 3).
    with pytest.raises(ConfigError, match="not a"):
        load(tmp_path, "kyverno", kyverno_doc({}, rule=block))


def test_cip_and_kritis_admission_facts(tmp_path: Path) -> None:
    cip = {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy",
           "metadata": {"name": "c", "creationTimestamp": "2026-03-01T00:00:00Z"},
           "spec": {"mode": "warn", "images": [{"glob": "r.io/**"}],
                    "authorities": [{"key": {"data": KEY.public_pem}}]}}
    (rule,) = load(tmp_path, "clusterimagepolicy", cip).rules
    assert rule.admission is not None
    assert (rule.admission.controller, rule.admission.mode, rule.admission.created_at, rule.admission.display) == (
        Controller.POLICY_CONTROLLER, AdmissionMode.WARN, T0, "ClusterImagePolicy/c")


# ----------------------------------------------------------------------------------------------
# outputs: JSON, store codec, HTML section, CSV column, metric


def _explained() -> Verdict:
    hostile = "<script>alert('adm')</script>"
    pol = policy(name=f"p{hostile}", scope=AdmissionScope(excludes=(AdmissionFilter(
        f"namespaces=['legacy'] subjects={hostile} https://user:s3cret@example.com/x", namespaces=("legacy",)),)))
    v = verdict(container(ns="legacy", pod=f"web-{hostile}", created=T0 - timedelta(days=40)))
    return one(v, pol)


def test_the_finding_in_json_store_html_csv_and_metrics() -> None:
    from scanner.clock import fixed_clock
    from scanner.document import image_doc
    from scanner.metrics.export import render as metrics_text
    from scanner.models import ScanResult, ScanState
    from scanner.reports import render
    from scanner.store import codec

    v = _explained()
    assert v.admission is not None
    doc = image_doc(v)["admission"]
    assert doc["likely_cause"] == "created-before-policy" and doc["would_admit_now"] is False
    assert [e["cause"] for e in doc["evidence"]] == ["created-before-policy", "excluded-at-admission"]
    assert "s3cret" not in json.dumps(doc)  # a URL's credentials are masked in the evidence
    assert codec.admission_from_json(json.loads(json.dumps(codec.admission_to_json(v.admission)))) == v.admission
    result = ScanResult("c1", T0, T0, ScanState.COMPLETE, (v,), "sha256:p", scan_id=1)
    html = render.html_for_result(result, None, clock=fixed_clock(T0))
    section = html[html.index('<section id="admission">'):html.index('<section id="tag-references">')]
    assert "Running despite admission policy" in section and "created-before-policy" in section
    assert "<script" not in html and "&lt;script&gt;alert(&#39;adm&#39;)&lt;/script&gt;" in section
    rows = list(csv.DictReader(io.StringIO(render.csv_for_result(result))))
    assert [(r["admission_cause"], r["admission_policy"]) for r in rows] == [
        ("created-before-policy", "ClusterPolicy/p<script>alert('adm')</script>")]
    text = metrics_text(result, None).decode()
    assert 'sigaudit_admission_bypass_containers{cause="created-before-policy",cluster="c1",namespace="legacy"} 1.0' \
        in text


def test_a_damaged_admission_column_is_refused() -> None:
    from scanner.store import codec

    base = {"policy": "p", "policy_source": "s"}
    for raw in ({**base, "would_admit_now": "no", "causes": []}, {**base, "would_admit_now": False, "causes": []},
                {**base, "would_admit_now": False, "causes": [{"cause": "x", "facts": {}}]}):
        with pytest.raises((ValueError, KeyError, TypeError)):
            codec.admission_from_json(raw)


def test_a_tenant_s_audit_policy_never_explains_away_the_cluster_s_enforce_policy(tmp_path: Path) -> None:
    """Attack: a tenant adds, in its own namespace, a Kyverno Policy in Audit mode that matches its unsigned
    image and is refused (an `attestations` field: status error, worse than unsigned), so that it decides the
    verdict. The finding must still be about the cluster's Enforce policy, whose bypass nothing explains."""
    from scanner.policy.engine import evaluate_rules, match_rules

    cluster = kyverno_doc({"validationFailureAction": "Enforce"})
    tenant = kyverno_doc({"validationFailureAction": "Audit"}, vi={"attestations": [{"type": "x"}]})
    tenant["kind"], tenant["metadata"] = "Policy", {"name": "mine", "namespace": "apps",
                                                     "creationTimestamp": "2026-01-30T00:00:00Z"}
    pol = load(tmp_path, "kyverno", cluster, tenant)
    image = RunningImage(parse_reference("r.io/app:1").with_digest(DIGEST), (container(),))
    rules = match_rules(pol, image.reference, "apps")
    assert len(rules) == 2
    v = evaluate_rules(image, rules, [[[] for _ in r.verifiers] for r in rules], [], pol, T0, "apps")
    assert v.status is Status.ERROR and v.policy_source == "kyverno:Policy/apps/mine"  # the tenant's rule decides
    admission = {(r.source, r.name): r.admission for r in pol.rules if r.admission is not None}
    (out,) = explain([v], admission)
    assert out.admission is not None
    assert (out.admission.policy, out.admission.likely_cause) == ("ClusterPolicy/p", AdmissionCause.UNEXPLAINED)
    assert out.status is Status.ERROR
