"""The Kyverno importer follows Kyverno's semantics and never approximates towards looser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.errors import ConfigError
from scanner.inventory.references import parse_reference
from scanner.policy.engine import match_rule, rule_satisfied
from scanner.policy.imports import merge
from scanner.policy.loader import Policy, PolicyLoader
from scanner.verify.cosign_keyless import CosignKeylessVerifier
from tests.harness.cosign_sign import KeyPair

KEYS = [KeyPair.ecdsa() for _ in range(3)]


def entry(k: KeyPair) -> dict[str, Any]:
    return {"keys": {"publicKeys": k.public_pem, "rekor": {"ignoreTlog": True}}}


def policy_doc(vi: dict[str, Any], *, kind: str = "ClusterPolicy", name: str = "p", ns: str | None = None,
               rule: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, **({"namespace": ns} if ns else {})}
    r = {"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]}, **(rule or {}),
         "verifyImages": [{"imageReferences": ["r.io/*"], **vi}]}
    return {"apiVersion": "kyverno.io/v1", "kind": kind, "metadata": meta, "spec": {"rules": [r]}}


def load(tmp_path: Path, *docs: dict[str, Any], files: int = 1) -> Policy:
    specs = []
    for i in range(files):
        f = tmp_path / f"k{i}.yaml"
        f.write_text(yaml.safe_dump_all(docs))
        specs.append(f"kyverno:{f}")
    return merge(None, specs, loader=PolicyLoader(), kubeconfig=None, context=None)


REF = parse_reference("r.io/app:1")


def test_namespaced_policies_with_the_same_names_are_two_rules(tmp_path: Path) -> None:
    a = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]}, kind="Policy", name="team", ns="team-a")
    b = policy_doc({"attestors": [{"entries": [entry(KEYS[1])]}]}, kind="Policy", name="team", ns="team-b")
    pol = load(tmp_path, a, b)
    ra, rb = pol.rules
    assert (ra.name, ra.source, ra.namespaces, ra.namespace) == (
        "team-a/team/r", "kyverno:Policy/team-a/team", ("team-a",), "team-a")
    assert (rb.name, rb.source, rb.namespaces) == ("team-b/team/r", "kyverno:Policy/team-b/team", ("team-b",))
    assert ra.identity != rb.identity
    assert match_rule(pol, REF, "team-a") is ra and match_rule(pol, REF, "team-b") is rb
    assert match_rule(pol, REF, "team-c") is None


def test_a_policy_without_namespace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no metadata\.namespace"):
        load(tmp_path, policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]}, kind="Policy"))


def test_a_namespaced_policy_matching_other_namespaces_applies_nowhere(tmp_path: Path) -> None:
    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]}, kind="Policy", ns="team-a",
                     rule={"match": {"any": [{"resources": {"kinds": ["Pod"], "namespaces": ["team-b"]}}]}})
    pol = load(tmp_path, doc)
    assert pol.rules == () and any("applies nowhere" in w for w in pol.warnings)


def test_the_same_policy_twice_is_refused_not_merged(tmp_path: Path) -> None:
    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]})
    with pytest.raises(ConfigError, match="defined twice"):
        load(tmp_path, doc, files=2)


def test_attestor_sets_map_to_requirement_sets(tmp_path: Path) -> None:
    vi = {"attestors": [{"count": 1, "entries": [entry(KEYS[0]), entry(KEYS[1])]}, {"entries": [entry(KEYS[2])]}]}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    assert rule.requirement_sets == ((1, (0, 1)), (1, (2,)))


def test_several_pems_in_one_entry_are_several_entries_all_required(tmp_path: Path) -> None:
    both = KEYS[0].public_pem + KEYS[1].public_pem
    vi = {"attestors": [{"entries": [{"keys": {"publicKeys": both, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    assert rule.requirement_sets == ((2, (0, 1)),)


@pytest.mark.parametrize(
    ("vi", "why"),
    [
        ({"attestors": [{"entries": [entry(KEYS[0]), {"keys": {"secret": {"name": "s", "namespace": "n"}}}]}]},
         "could not be read"),
        ({"attestors": [{"entries": [entry(KEYS[0]), {"attestor": {"entries": [entry(KEYS[1])]}}]}]},
         "nested attestor"),
        ({"attestors": [{"count": 3, "entries": [entry(KEYS[0]), entry(KEYS[1])]}]}, "can never be satisfied"),
        ({"attestors": [{"entries": [{"keyless": {"subject": "{{ request.object.metadata.name }}",
                                                 "issuer": "https://i"}}]}]}, "variable"),
        ({"imageReferences": ["{{ images }}"], "attestors": [{"entries": [entry(KEYS[0])]}]}, "variable"),
        ({"type": "Rego", "attestors": [{"entries": [entry(KEYS[0])]}]}, "type 'Rego'"),
        ({}, "no attestors"),
        ({"attestors": [{"entries": [{**entry(KEYS[0]), "keyless": {"subject": "s", "issuer": "i"}}]}]},
         "exactly one of keys"),
        ({"attestors": [{"entries": [{"keyless": {"subject": "s", "issuer": "i",
                                                 "additionalExtensions": {"buildTrigger": "push"}}}]}]},
         "unknown certificate extension"),
        # Kyverno knows cosign's six only: a Fulcio extension it does not read fails there, never passes.
        ({"attestors": [{"entries": [{"keyless": {"subject": "s", "issuer": "i",
                                                 "additionalExtensions": {"sourceRepositoryURI": "*"}}}]}]},
         "unknown certificate extension"),
        # Kyverno checks both spellings; keeping the last one ("*") would drop the first.
        ({"attestors": [{"entries": [{"keyless": {"subject": "s", "issuer": "i", "additionalExtensions": {
            "githubWorkflowRepository": "acme/app", "1.3.6.1.4.1.57264.1.5": "*"}}}]}]}, "twice"),
        ({"attestors": [{"entries": [{"keyless": {"subject": "s", "issuer": "i",
                                                 "additionalExtensions": ["githubWorkflowRepository"]}}]}]},
         "not a map"),
        # Signatures kept elsewhere are looked for beside the image: a bad one there is not found, and
        # required: false lets "unsigned" pass where Kyverno, reading it, fails the image.
        ({"required": False, "repository": "r.io/sigs", "attestors": [{"entries": [entry(KEYS[0])]}]},
         "another repository"),
        ({"required": False, "attestors": [{"entries": [{**entry(KEYS[0]), "repository": "r.io/sigs"}]}]},
         "another repository"),
    ],
)
def test_what_cannot_be_mapped_exactly_refuses_the_rule(tmp_path: Path, vi: dict[str, Any], why: str) -> None:
    """Each of these used to be dropped (a looser rule) or approximated; now the rule is refused."""
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    assert rule.verifiers == () and any(why in r for r in rule.refused), rule.refused
    assert not rule_satisfied(rule, [], ()).ok


def test_keyless_wildcards_and_additional_extensions_are_enforced(tmp_path: Path) -> None:
    vi = {"attestors": [{"entries": [{"keyless": {
        "subject": "https://github.com/acme/*", "issuer": "https://token.actions.githubusercontent.com",
        "additionalExtensions": {"githubWorkflowRepository": "acme/app", "1.3.6.1.4.1.57264.1.2": "push"},
        "rekor": {"ignoreTlog": True}, "ctlog": {"ignoreSCT": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    (v,) = rule.verifiers
    assert isinstance(v, CosignKeylessVerifier)
    (ident,) = v._identities
    assert ident.subject.regexp == r"https://github\.com/acme/.*"
    assert dict((n, m.regexp) for n, m in ident.extensions) == {
        "githubWorkflowRepository": "acme/app", "githubWorkflowTrigger": "push"}
    assert "githubWorkflowRepository" in v.name


def test_deprecated_single_attestor_fields_are_converted(tmp_path: Path) -> None:
    vi = {"issuer": "https://accounts.google.com", "subject": "ops@acme.io",
          "additionalExtensions": {"githubWorkflowRef": "refs/heads/main"}}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    (v,) = rule.verifiers
    (ident,) = v._identities  # type: ignore[attr-defined]
    assert ident.subject.regexp == r"ops@acme\.io" and dict((n, m.regexp) for n, m in ident.extensions) == {
        "githubWorkflowRef": "refs/heads/main"}


def test_annotations_are_required_of_the_signature(tmp_path: Path) -> None:
    vi = {"annotations": {"env": "prod"}, "attestors": [{"entries": [entry(KEYS[0])]}]}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    assert rule.verifiers[0]._annotations == {"env": "prod"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("exclude", "excluded"),
    [
        ({"any": [{"resources": {"namespaces": ["kube-system"]}}]}, ("kube-system",)),
        # A filter that also needs a label cannot be evaluated by an audit: dropped (the rule applies
        # more widely), never read as "exclude all of kube-system".
        ({"any": [{"resources": {"namespaces": ["kube-system"], "selector": {"matchLabels": {"a": "b"}}}}]}, ()),
        ({"any": [{"resources": {"namespaces": ["kube-system"]}, "subjects": [{"kind": "User", "name": "x"}]}]}, ()),
        ({"all": [{"resources": {"namespaces": ["kube-system"]}}, {"resources": {"names": ["x"]}}]}, ()),
        ({"any": [{"resources": {"namespaces": ["kube-system"], "kinds": ["Deployment"]}}]}, ()),
        # Excluding only UPDATE/DELETE requests leaves the pods' creation verified by Kyverno.
        ({"any": [{"resources": {"namespaces": ["kube-system"], "operations": ["UPDATE", "DELETE"]}}]}, ()),
        ({"any": [{"resources": {"namespaces": ["kube-system"], "operations": ["CREATE"]}}]}, ("kube-system",)),
        ({"any": [{"resources": {"namespaces": ["a"]}}], "all": [{"resources": {"namespaces": ["b"]}}]}, ()),
    ],
)
def test_exclude_filters_an_audit_cannot_evaluate_are_dropped(tmp_path: Path, exclude: dict[str, Any],
                                                               excluded: tuple[str, ...]) -> None:
    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]}, rule={"exclude": exclude})
    (rule,) = load(tmp_path, doc).rules
    assert rule.exclude_namespaces == excluded


@pytest.mark.parametrize(
    "match",
    [
        {"any": [{"resources": {"kinds": ["Pod"], "namespaces": ["prod"]}}, {"resources": {"kinds": ["Pod"]}}]},
        {"any": [{"resources": {"namespaces": ["a"]}}], "all": [{"resources": {"namespaces": ["b"]}}]},
    ],
)
def test_match_filters_that_reach_every_namespace(tmp_path: Path, match: dict[str, Any]) -> None:
    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]}, rule={"match": match})
    (rule,) = load(tmp_path, doc).rules
    assert rule.namespaces == ("*",)


def test_every_matching_rule_and_entry_applies(tmp_path: Path) -> None:
    """Kyverno applies every matching rule of every policy, and every verifyImages entry of a rule whose
    imageReferences match: each is a rule of its own that must hold (none shadows another)."""
    from scanner.policy.engine import match_rules

    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]})
    doc["spec"]["rules"][0]["verifyImages"].append(
        {"imageReferences": ["r.io/app*"], "attestors": [{"entries": [entry(KEYS[1])]}]})
    doc["spec"]["rules"].append({"name": "r2", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                 "verifyImages": [{"imageReferences": ["r.io/*"],
                                                   "attestors": [{"entries": [entry(KEYS[2])]}]}]})
    other = policy_doc({"attestors": [{"entries": [entry(KEYS[1])]}]}, name="q")
    pol = load(tmp_path, doc, other)
    assert [r.name for r in match_rules(pol, REF, "ns")] == ["p/r#0", "p/r#1", "p/r2", "q/r"]
    assert all(not r.first_match for r in pol.rules)


def test_apply_rules_one_is_audited_as_all_with_a_note(tmp_path: Path) -> None:
    """applyRules: One stops at the first rule that applied to the pod; the match blocks are only partly
    evaluable by an audit, so "first" could pick another rule than Kyverno: every rule is audited."""
    from scanner.policy.engine import match_rules

    doc = policy_doc({"attestors": [{"entries": [entry(KEYS[0])]}]})
    doc["spec"]["applyRules"] = "One"
    doc["spec"]["rules"].append({"name": "r2", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                 "verifyImages": [{"imageReferences": ["r.io/*"],
                                                   "attestors": [{"entries": [entry(KEYS[1])]}]}]})
    pol = load(tmp_path, doc)
    assert len(match_rules(pol, REF, "ns")) == 2
    assert all(any("applyRules: One" in n for n in r.notes) for r in pol.rules)
    doc["spec"]["applyRules"] = "All"
    assert not any("applyRules" in n for r in load(tmp_path, doc).rules for n in r.notes)


TENANT_ENDPOINT_REFS = [
    "awskms://evil.example:443/alias/signing",
    "awskms://169.254.169.254/1234abcd-12ab-34cd-56ef-1234567890ab",
    "azurekms://evil.example/key",
    "azurekms://team.vault.azure.net@evil.example/key",
    "azurekms://team.vault.azure.net:8443/key",
    "AWSKMS://evil.example/alias/signing",  # another spelling of the scheme: refused, never read as a file
]


@pytest.fixture
def kms_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every KMS key fetch the load makes (answered with a real key, as a reachable KMS would)."""
    from scanner.verify import kms

    calls: list[str] = []

    def fetch(ref: str) -> bytes:
        calls.append(ref)
        return KEYS[0].public_pem.encode()

    monkeypatch.setattr(kms, "fetch_public_key_pem", fetch)
    return calls


@pytest.mark.parametrize("field", ["kms", "publicKeys"])
@pytest.mark.parametrize("ref", TENANT_ENDPOINT_REFS)
def test_a_namespaced_policy_may_not_aim_the_kms_credentials_at_its_own_host(
    tmp_path: Path, kms_calls: list[str], ref: str, field: str
) -> None:
    vi = {"attestors": [{"entries": [{"keys": {field: ref, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi, kind="Policy", ns="team-a")).rules
    assert kms_calls == []  # the tenant's endpoint is never contacted
    assert rule.verifiers == () and rule.refused, rule.refused  # refused: its images are error, never pass
    assert any("KMS" in why for why in rule.refused), rule.refused


@pytest.mark.parametrize("ref", TENANT_ENDPOINT_REFS[:5])
def test_a_cluster_policy_keeps_its_kms_endpoint(tmp_path: Path, kms_calls: list[str], ref: str) -> None:
    vi = {"attestors": [{"entries": [{"keys": {"kms": ref, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi)).rules
    assert kms_calls == [ref] and not rule.refused and len(rule.verifiers) == 1


@pytest.mark.parametrize("ref", [
    "awskms:///alias/signing",
    "awskms:///arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "azurekms://team.vault.azure.net/key",
    "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
    "hashivault://evil.example:8200",  # a key name at the operator's VAULT_ADDR, never an address
])
def test_a_namespaced_policy_may_use_the_providers_own_endpoint(
    tmp_path: Path, kms_calls: list[str], ref: str
) -> None:
    vi = {"attestors": [{"entries": [{"keys": {"kms": ref, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi, kind="Policy", ns="team-a")).rules
    assert kms_calls == [ref] and not rule.refused and len(rule.verifiers) == 1


# ----------------------------------------------------------------------------------------------
# A namespaced Policy's key material comes from its own namespace only (inline PEM or its own Secret).


def _tenant_entries(tmp_path: Path, *, write: bool = True) -> dict[str, dict[str, Any]]:
    """One attestor entry per key field, naming the scanner's disk (a real, loadable key file) or a URL."""
    key_file = tmp_path / "operator-key.pem"
    if write:
        key_file.write_text(KEYS[0].public_pem)
    path, url = str(key_file), "https://tenant.example/key.pem"
    pem = KEYS[1].public_pem
    keyless = {"subject": "s", "issuer": "i"}
    return {
        "keys.publicKeys (file)": {"keys": {"publicKeys": path, "rekor": {"ignoreTlog": True}}},
        "keys.publicKeys (url)": {"keys": {"publicKeys": url, "rekor": {"ignoreTlog": True}}},
        "keys.rekor.pubkey": {"keys": {"publicKeys": pem, "rekor": {"pubkey": path}}},
        "keys.ctlog.pubkey": {"keys": {"publicKeys": pem, "rekor": {"ignoreTlog": True}, "ctlog": {"pubkey": url}}},
        "certificates.cert": {"certificates": {"cert": path, "rekor": {"ignoreTlog": True}}},
        "certificates.certChain": {"certificates": {"cert": pem, "certChain": url}},
        "keyless.roots": {"keyless": {**keyless, "roots": path}},
        "keyless.rekor.pubkey": {"keyless": {**keyless, "rekor": {"pubkey": path}}},
        "keyless.ctlog.pubkey": {"keyless": {**keyless, "ctlog": {"pubkey": url}}},
    }


TENANT_FIELDS = list(_tenant_entries(Path("/nonexistent"), write=False))


@pytest.fixture
def key_urls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def fetch(url: str) -> bytes:
        calls.append(url)
        return KEYS[0].public_pem.encode()

    monkeypatch.setattr("scanner.policy.loader._default_key_fetcher", fetch)
    return calls


@pytest.mark.parametrize("field", TENANT_FIELDS)
def test_a_namespaced_policy_may_not_name_a_key_file_or_url(tmp_path: Path, key_urls: list[str], field: str) -> None:
    vi = {"attestors": [{"entries": [_tenant_entries(tmp_path)[field]]}]}
    (rule,) = load(tmp_path, policy_doc(vi, kind="Policy", ns="team-a")).rules
    assert key_urls == []  # the tenant's host is never contacted
    assert rule.verifiers == () and any("namespaced Policy" in w for w in rule.refused), rule.refused


def test_a_namespaced_policys_deprecated_key_field_is_held_to_the_same_rule(tmp_path: Path) -> None:
    key_file = tmp_path / "operator-key.pem"
    key_file.write_text(KEYS[0].public_pem)
    (rule,) = load(tmp_path, policy_doc({"key": str(key_file)}, kind="Policy", ns="team-a")).rules
    assert rule.verifiers == () and any("not a file path" in w for w in rule.refused), rule.refused


def test_a_cluster_policy_keeps_its_key_file_and_url(tmp_path: Path, key_urls: list[str]) -> None:
    entries = _tenant_entries(tmp_path)
    for field in ("keys.publicKeys (file)", "keys.publicKeys (url)"):
        (rule,) = load(tmp_path, policy_doc({"attestors": [{"entries": [entries[field]]}]})).rules
        assert not rule.refused and len(rule.verifiers) == 1, (field, rule.refused)
    assert key_urls == ["https://tenant.example/key.pem"]


class Secrets(dict[tuple[str, str], str]):
    """The cluster's Secrets, (namespace, name) -> key value; every read recorded in ``reads``."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, str]] = []

    def read(self, ctx: Any, namespace: str, name: str, rule: str) -> str | None:
        self.reads.append((namespace, name))
        return self.get((namespace, name))


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Secrets:
    store = Secrets()
    monkeypatch.setattr("scanner.policy.kyverno._secret_value", store.read)
    return store


def _secret_rule(tmp_path: Path, secret: dict[str, str]) -> Any:
    vi = {"attestors": [{"entries": [{"keys": {"secret": secret, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi, kind="Policy", ns="team-a")).rules
    return rule


def test_a_namespaced_policy_may_not_read_a_secret_of_another_namespace(
    tmp_path: Path, secrets: Secrets
) -> None:
    secrets[("cosign-system", "signing")] = KEYS[0].public_pem
    rule = _secret_rule(tmp_path, {"name": "signing", "namespace": "cosign-system"})
    assert secrets.reads == []  # never read
    assert rule.verifiers == () and any("own namespace" in w for w in rule.refused), rule.refused


def test_a_namespaced_policy_reads_its_own_secret(tmp_path: Path, secrets: Secrets) -> None:
    secrets[("team-a", "signing")] = KEYS[0].public_pem
    for secret in ({"name": "signing"}, {"name": "signing", "namespace": "team-a"}):
        rule = _secret_rule(tmp_path, secret)
        assert not rule.refused and len(rule.verifiers) == 1, rule.refused


def test_a_namespaced_policys_secret_may_not_hold_a_key_file_or_url(
    tmp_path: Path, secrets: Secrets, key_urls: list[str]
) -> None:
    key_file = tmp_path / "operator-key.pem"
    key_file.write_text(KEYS[0].public_pem)
    for value in (str(key_file), "https://tenant.example/key.pem"):
        secrets[("team-a", "signing")] = value
        rule = _secret_rule(tmp_path, {"name": "signing"})
        assert rule.verifiers == () and any("keys.secret" in w for w in rule.refused), (value, rule.refused)
    assert key_urls == []


@pytest.mark.parametrize("kind,ns", [("ClusterPolicy", None), ("Policy", "team-a")])
@pytest.mark.parametrize("secret", ["other/name", {"namespace": "team-a"}, ["name"]])
def test_a_malformed_keys_secret_refuses_the_rule(
    tmp_path: Path, secrets: Secrets, kind: str, ns: str | None, secret: Any
) -> None:
    vi = {"attestors": [{"entries": [{"keys": {"secret": secret, "rekor": {"ignoreTlog": True}}}]}]}
    (rule,) = load(tmp_path, policy_doc(vi, kind=kind, ns=ns)).rules
    assert secrets.reads == [] and rule.verifiers == () and any("keys.secret" in w for w in rule.refused)
