"""Every field of the upstream resources an importer reads is mapped, refused, or reported per verdict.

The schemas are the upstream CRDs kept in tests/data/upstream-crds (see its PROVENANCE.md). For each
importer the test walks every field of every served version and checks that the importer's field table
(scanner/policy/fields.py) declares it; a field added upstream fails here until someone decides what it
means for an audit. Then it sets each refused and reported field, one at a time, in an otherwise valid
resource and imports it for real: a refused field must refuse the rule (its images are `error`), and a
reported field must be a note on the rule (shown with every verdict). What the mapped fields do is
proven by the importers' behaviour tests (tests/unit/policy/test_kyverno.py, test_imports.py, ...).
Unknown fields (a typo, a newer upstream version) are refused.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.errors import ConfigError
from scanner.policy import kritis, kyverno_ivp
from scanner.policy.fields import FieldTable, Handling
from scanner.policy.imports import CIP_FIELDS, TRUSTROOT_FIELDS, merge
from scanner.policy.kyverno import FIELDS as KYVERNO_FIELDS
from scanner.policy.loader import CompiledRule, Policy, PolicyLoader
from tests.vectors import VECTORS

CRDS = Path(__file__).resolve().parents[2] / "data" / "upstream-crds"
ALICE = (VECTORS / "cosign/legacy-oci-connaisseur/keys/alice.pub.pem").read_text()


# -- schemas ----------------------------------------------------------------------------------------


def _crd_schemas(name: str) -> list[dict[str, Any]]:
    path = CRDS / name
    if name.endswith(".schema.json"):
        return list(json.loads(path.read_text())["versions"].values())
    text = path.read_text()
    if name == "kritis-image-security-policy-crd.yaml":
        # Upstream lacks the `versions:` key (the file is not valid YAML): put it back to read it.
        group = "  group: kritis.grafeas.io\n"
        text = text.replace(group + "  - name:", group + "  versions:\n  - name:")
    crd = yaml.safe_load(text)
    return [v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v.get("served")]


def schema_paths(node: Mapping[str, Any], path: str = "") -> dict[str, Mapping[str, Any]]:
    """Every field path of an openAPIV3Schema, as the field tables write them."""
    out: dict[str, Mapping[str, Any]] = {}
    items = node.get("items") if node.get("type") == "array" else None
    if isinstance(items, Mapping) and items.get("properties"):
        for k, child in items["properties"].items():
            out[f"{path}[].{k}"] = child
            out.update(schema_paths(child, f"{path}[].{k}"))
    for k, child in (node.get("properties") or {}).items():
        p = f"{path}.{k}" if path else k
        out[p] = child
        out.update(schema_paths(child, p))
    return out


def _ancestors(path: str) -> Iterator[str]:
    segs = path.split(".")
    for i in range(len(segs) - 1, 0, -1):
        yield ".".join(segs[:i]).removesuffix("[]")


def _is_leaf(table: FieldTable, path: str) -> bool:
    return not any(k.startswith(path + ".") or k.startswith(path + "[].") for k in table)


def undeclared(table: FieldTable, paths: Iterator[str] | list[str]) -> list[str]:
    return sorted(
        p for p in paths if p not in table and not any(a in table and _is_leaf(table, a) for a in _ancestors(p))
    )


# (schema files, table, the resource kind's base document, extra fields the table may declare)
KRITIS_GO_TYPES = {
    # grafeas/kritis pkg/kritis/apis/kritis/v1beta1/*.go at 3348562c: fields the CRDs do not list.
    "AttestationAuthority": {"spec.publicKeys", "spec.publicKeys[].keyId", "spec.publicKeys[].keyType",
                             "spec.publicKeys[].asciiArmoredPgpPublicKey", "spec.publicKeys[].pkixPublicKey",
                             "spec.publicKeys[].pkixPublicKey.publicKeyPem",
                             "spec.publicKeys[].pkixPublicKey.signatureAlgorithm",
                             "spec.publicKeyId"},  # the last one: ACK's fork
    "GenericAttestationPolicy": {"spec.admissionAllowlistPatterns", "spec.admissionAllowlistPatterns[].namePattern",
                                 "spec.admissionWhitelistPatterns", "spec.admissionWhitelistPatterns[].namePattern"},
    "ImageSecurityPolicy": {"spec.imageAllowlist", "spec.imageWhitelist", "spec.attestationAuthorityName",
                            "spec.builtProjectIDs", "spec.privateKeySecretName"},
}
COMMON_META = {"apiVersion", "kind", "metadata", "status"}  # every resource has them; CRDs list some

SCHEMAS = [
    ("kyverno ClusterPolicy", ["kyverno.io_clusterpolicies.schema.json"], KYVERNO_FIELDS, set()),
    ("kyverno Policy", ["kyverno.io_policies.schema.json"], KYVERNO_FIELDS, set()),
    ("kyverno ImageValidatingPolicy", ["policies.kyverno.io_imagevalidatingpolicies.schema.json"],
     kyverno_ivp.FIELDS, set()),
    ("kyverno PolicyException", ["kyverno.io_policyexceptions.schema.json"], kyverno_ivp.EXCEPTION_FIELDS, set()),
    ("kyverno CEL PolicyException", ["policies.kyverno.io_policyexceptions.schema.json"],
     kyverno_ivp.CEL_EXCEPTION_FIELDS, set()),
    ("ClusterImagePolicy", ["policy-controller-300-clusterimagepolicy.yaml"], CIP_FIELDS, set()),
    ("TrustRoot", ["policy-controller-300-trustroot.yaml"], TRUSTROOT_FIELDS, set()),
    ("kritis AttestationAuthority", ["kritis-attestation-authority-crd.yaml"], kritis.FIELDS["AttestationAuthority"],
     KRITIS_GO_TYPES["AttestationAuthority"]),
    ("kritis GenericAttestationPolicy", ["kritis-generic-attestation-policy-crd.yaml"],
     kritis.FIELDS["GenericAttestationPolicy"], KRITIS_GO_TYPES["GenericAttestationPolicy"]),
    ("kritis ImageSecurityPolicy", ["kritis-image-security-policy-crd.yaml"], kritis.FIELDS["ImageSecurityPolicy"],
     KRITIS_GO_TYPES["ImageSecurityPolicy"]),
]


def _all_paths(files: list[str]) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for f in files:
        for schema in _crd_schemas(f):
            out.update(schema_paths(schema))
    return out


@pytest.mark.parametrize(("what", "files", "table", "extra"), SCHEMAS, ids=[s[0] for s in SCHEMAS])
def test_every_upstream_field_is_declared(what: str, files: list[str], table: FieldTable, extra: set[str]) -> None:
    paths = _all_paths(files)
    assert len(paths) >= 2, f"no fields read from {files}"
    assert undeclared(table, list(paths)) == [], f"{what}: fields of the upstream schema without a declaration"
    # And the table names nothing that does not exist (a typo would leave the real field undeclared).
    known = set(paths) | extra | COMMON_META
    stray = sorted(k for k in table if k not in known and not any(a in known and _is_leaf(table, a)
                                                                  for a in _ancestors(k)))
    assert stray == [], f"{what}: declared fields that the upstream schema does not have"


# -- each declaration holds at run time -------------------------------------------------------------


def _sample(node: Mapping[str, Any]) -> Any:
    kind = node.get("type")
    if kind == "string":
        return "x-sample"
    if kind == "boolean":
        return True
    if kind == "integer":
        return 1
    if kind == "array":
        items = node.get("items") or {}
        return [_sample(items) if items.get("type") not in (None, "object") else {"k-sample": "v-sample"}]
    return {"k-sample": "v-sample"}


def _inject(doc: dict[str, Any], path: str, value: Any) -> None:
    cur: Any = doc
    segs = path.split(".")
    for seg in segs[:-1]:
        key = seg.removesuffix("[]")
        if seg.endswith("[]"):
            lst = cur.setdefault(key, [{}])
            if not lst:
                lst.append({})
            cur = lst[0]
        else:
            cur = cur.setdefault(key, {})
            if not isinstance(cur, dict):  # a scalar in the base document: replace it
                raise AssertionError(f"cannot set {path}: {seg} is not an object in the base document")
    cur[segs[-1]] = value


def _import(source: str, docs: list[dict[str, Any]], tmp_path: Path) -> Policy:
    f = tmp_path / "in.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    return merge(None, [f"{source}:{f}"], loader=PolicyLoader(), kubeconfig=None, context=None)


def kyverno_doc(kind: str = "ClusterPolicy") -> dict[str, Any]:
    meta = {"name": "p", **({"namespace": "team-a"} if kind == "Policy" else {})}
    return {"apiVersion": "kyverno.io/v1", "kind": kind, "metadata": meta, "spec": {"rules": [{
        "name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "verifyImages": [{"imageReferences": ["r.io/*"], "attestors": [{"entries": [
            {"keys": {"publicKeys": ALICE, "rekor": {"ignoreTlog": True}}}]}]}]}]}}


def ivp_doc() -> dict[str, Any]:
    return {"apiVersion": "policies.kyverno.io/v1", "kind": "ImageValidatingPolicy", "metadata": {"name": "ivp"},
            "spec": {"validationActions": ["Deny"], "matchImageReferences": [{"glob": "r.io/*"}],
                     "attestors": [{"name": "alice", "cosign": {"key": {"data": ALICE},
                                                                "ctlog": {"insecureIgnoreTlog": True}}}],
                     "validations": [{"expression": "images.containers.map(image, verifyImageSignatures(image, "
                                                    "[attestors.alice])).all(e, e > 0)"}]}}


def exception_docs(group: str) -> list[dict[str, Any]]:
    """The base policies (a ClusterPolicy and an ImageValidatingPolicy) and an exception of ``group``
    that waives one of them in its own namespace."""
    if group == "kyverno.io":
        ex: dict[str, Any] = {"apiVersion": "kyverno.io/v2", "kind": "PolicyException",
                              "metadata": {"name": "ex", "namespace": "team-a"},
                              "spec": {"exceptions": [{"policyName": "p", "ruleNames": ["r"]}],
                                       "match": {"any": [{"resources": {"kinds": ["Pod"],
                                                                        "namespaces": ["team-a"]}}]}}}
    else:
        ex = {"apiVersion": "policies.kyverno.io/v1", "kind": "PolicyException",
              "metadata": {"name": "ex", "namespace": "team-a"},
              "spec": {"policyRefs": [{"name": "ivp", "kind": "ImageValidatingPolicy"}]}}
    return [kyverno_doc(), ivp_doc(), ex]


def cip_doc() -> dict[str, Any]:
    return {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy", "metadata": {"name": "c"},
            "spec": {"images": [{"glob": "r.io/**"}], "authorities": [{"name": "a", "key": {"data": ALICE}}]}}


def kritis_docs() -> list[dict[str, Any]]:
    meta = {"namespace": "prod"}
    return [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
         "metadata": {**meta, "name": "qa"},
         "spec": {"noteReference": "projects/p/notes/qa",
                  "publicKeys": [{"keyType": "PKIX", "keyId": "k", "pkixPublicKey": {"publicKeyPem": ALICE}}]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
         "metadata": {**meta, "name": "gap"}, "spec": {"attestationAuthorityNames": ["qa"]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "ImageSecurityPolicy",
         "metadata": {"namespace": "staging", "name": "isp"}, "spec": {"attestationAuthorityName": "qa"}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
         "metadata": {"namespace": "staging", "name": "qa"},
         "spec": {"noteReference": "projects/p/notes/qa",
                  "publicKeys": [{"keyType": "PKIX", "keyId": "k", "pkixPublicKey": {"publicKeyPem": ALICE}}]}},
    ]


Case = tuple[str, str, Callable[[dict[str, Any]], tuple[str, list[dict[str, Any]], str]]]


def _kyverno(kind: str) -> Callable[[str, Any], tuple[str, list[dict[str, Any]], str]]:
    def build(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
        doc = kyverno_doc(kind)
        _inject(doc, path, value)
        return "kyverno", [doc], ("team-a/p/r" if kind == "Policy" else "p/r")
    return build


def _ivp(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
    doc = ivp_doc()
    _inject(doc, path, value)
    return "kyverno", [doc], "ImageValidatingPolicy/ivp"


def _exception(group: str) -> Callable[[str, Any], tuple[str, list[dict[str, Any]], str]]:
    def build(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
        docs = exception_docs(group)
        _inject(docs[-1], path, value)
        return "kyverno", docs, "p/r" if group == "kyverno.io" else "ImageValidatingPolicy/ivp"
    return build


def _cip(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
    doc = cip_doc()
    _inject(doc, path, value)
    return "clusterimagepolicy", [doc], "c"


def _trustroot(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
    doc = cip_doc()
    doc["spec"]["authorities"] = [{"name": "a", "keyless": {
        "trustRootRef": "tr", "identities": [{"issuer": "i", "subject": "s"}]}}]
    tr = {"apiVersion": "policy.sigstore.dev/v1alpha1", "kind": "TrustRoot", "metadata": {"name": "tr"}, "spec": {}}
    _inject(tr, path, value)
    return "clusterimagepolicy", [doc, tr], "c"


def _kritis(kind: str) -> Callable[[str, Any], tuple[str, list[dict[str, Any]], str]]:
    def build(path: str, value: Any) -> tuple[str, list[dict[str, Any]], str]:
        docs = kritis_docs()
        target = next(d for d in docs if d["kind"] == kind)
        _inject(target, path, value)
        return "kritis", docs, "kritis:staging/isp" if kind == "ImageSecurityPolicy" else "kritis:prod/gap"
    return build


EXCEPTIONS = ("kyverno PolicyException", "kyverno CEL PolicyException")
BUILDERS = {
    "kyverno ClusterPolicy": _kyverno("ClusterPolicy"),
    "kyverno Policy": _kyverno("Policy"),
    "kyverno ImageValidatingPolicy": _ivp,
    "kyverno PolicyException": _exception("kyverno.io"),
    "kyverno CEL PolicyException": _exception("policies.kyverno.io"),
    "ClusterImagePolicy": _cip,
    "TrustRoot": _trustroot,
    "kritis AttestationAuthority": _kritis("AttestationAuthority"),
    "kritis GenericAttestationPolicy": _kritis("GenericAttestationPolicy"),
    "kritis ImageSecurityPolicy": _kritis("ImageSecurityPolicy"),
}


def _cases() -> Iterator[Any]:
    for what, files, table, _extra in SCHEMAS:
        paths = _all_paths(files)
        for path, field in sorted(table.items()):
            if path not in paths or not _is_leaf(table, path):
                continue
            if path in COMMON_META:
                continue
            if field.handling is Handling.MAPPED:
                continue  # proven by the importers' behaviour tests
            yield pytest.param(what, path, field.handling, _sample(paths[path]), id=f"{what}:{path}")


@pytest.mark.parametrize(("what", "path", "handling", "value"), list(_cases()))
def test_each_declaration_holds_when_the_field_is_set(
    what: str, path: str, handling: Handling, value: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    source, docs, rule_name = BUILDERS[what](path, copy.deepcopy(value))
    if what in EXCEPTIONS:
        # An exception is refused whole (exit 2, naming it): it never waives more than it can be evaluated to.
        assert handling is Handling.REFUSED
        with pytest.raises(ConfigError, match=re.escape(path)):
            _import(source, docs, tmp_path)
        return
    pol = _import(source, docs, tmp_path)
    rule = _rule(pol, rule_name)
    if handling is Handling.REFUSED:
        assert any(path in r for r in rule.refused), rule.refused
        assert rule.verifiers == ()
    else:
        assert any(path in n for n in rule.notes), rule.notes
        assert not any(path in r for r in rule.refused)


def _rule(pol: Policy, name: str) -> CompiledRule:
    by = {r.name: r for r in pol.rules}
    assert name in by, sorted(by)
    return by[name]


@pytest.mark.parametrize("what", sorted(BUILDERS))
def test_an_unknown_field_refuses_the_rule(what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    if what in EXCEPTIONS:
        source, docs, _ = BUILDERS[what]("spec.waiveEverything", {"k": "v"})
        with pytest.raises(ConfigError, match=r"spec\.waiveEverything: unknown field"):
            _import(source, docs, tmp_path)
        return
    where = {"kyverno ImageValidatingPolicy": "spec.attestors[].cosign.keyless.requireRekorV3",
             "kyverno ClusterPolicy": "spec.rules[].verifyImages[].attestors[].entries[].keys.mustVerifyTwice",
             "kyverno Policy": "spec.rules[].verifyImages[].requireProvenance",
             "ClusterImagePolicy": "spec.authorities[].keyless.requireRekorV2",
             "TrustRoot": "spec.sigstoreKeysV2",
             "kritis AttestationAuthority": "spec.requiredSignatures",
             "kritis GenericAttestationPolicy": "spec.requireAllOf",
             "kritis ImageSecurityPolicy": "spec.requireSLSA"}[what]
    source, docs, rule_name = BUILDERS[what](where, {"k": "v"})
    rule = _rule(_import(source, docs, tmp_path), rule_name)
    assert any(where in r and "unknown field" in r for r in rule.refused), rule.refused
    assert rule.verifiers == ()


def test_the_base_documents_are_not_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: the documents the cases start from import cleanly (so a refusal above is the field's)."""
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:1")
    for kind in ("ClusterPolicy", "Policy"):
        (rule,) = _import("kyverno", [kyverno_doc(kind)], tmp_path).rules
        assert rule.refused == () and rule.notes == () and len(rule.verifiers) == 1
    (rule,) = _import("kyverno", [ivp_doc()], tmp_path).rules
    assert rule.refused == () and rule.notes == () and len(rule.verifiers) == 1
    for group in ("kyverno.io", "policies.kyverno.io"):
        pol = _import("kyverno", exception_docs(group), tmp_path)
        waived = ["p/r" if group == "kyverno.io" else "ImageValidatingPolicy/ivp"]
        assert [r.name for r in pol.rules if r.waivers] == waived
    (rule,) = _import("clusterimagepolicy", [cip_doc()], tmp_path).rules
    assert rule.refused == () and rule.notes == () and len(rule.verifiers) == 1
    pol = _import("kritis", kritis_docs(), tmp_path)
    assert all(r.refused == () and r.notes == () and len(r.verifiers) == 1 for r in pol.rules), pol.rules
