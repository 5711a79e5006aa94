"""Kyverno, ClusterImagePolicy and notation policies map onto native rules; unsupported fields are
reported per rule."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from scanner.errors import ConfigError
from scanner.inventory.references import parse_reference
from scanner.policy.engine import match_rule
from scanner.policy.imports import _docs, cip_glob_matcher, merge
from scanner.policy.loader import PolicyLoader
from scanner.verify.keys import key_sha256, parse_public_key
from tests.vectors import VECTORS

DATA = Path(__file__).resolve().parents[2] / "data" / "policies"
ALICE = VECTORS / "cosign/legacy-oci-connaisseur/keys/alice.pub.pem"


def load(*specs: str, key_fetcher=None):
    return merge(None, specs, loader=PolicyLoader(key_fetcher=key_fetcher), kubeconfig=None, context=None)


def test_wallarm_kms_url_key_is_fetched_once_and_mapped() -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        # Hand-made stand-in for the network: tests never reach repo.wallarm.com.
        fetched.append(url)
        return ALICE.read_bytes()

    pol = load(f"kyverno:{DATA / 'kyverno-wallarm.yaml'}", key_fetcher=fetch)
    assert fetched == ["https://repo.wallarm.com/cosign.pub"]
    (rule,) = pol.rules
    assert rule.name == "verify-wallarm-images/verify-wallarm-images"
    assert rule.source == "kyverno:ClusterPolicy/verify-wallarm-images"
    assert rule.images == ("docker.io/wallarm/ingress*", "docker.io/wallarm/sidecar*")
    assert rule.count == 1 and rule.required
    assert match_rule(pol, parse_reference("wallarm/ingress-controller:4.8.0"), "default") is rule
    assert match_rule(pol, parse_reference("wallarm/node:4.8.0"), "default") is None
    # Kyverno requires the transparency log unless rekor.ignoreTlog: the verifier must not skip it.
    assert "sha256" in rule.verifiers[0].name


def test_inline_key_count_namespaces_excludes_and_skips() -> None:
    pol = load(f"kyverno:{DATA / 'kyverno-inline-key.yaml'}")
    (rule,) = pol.rules
    assert rule.count == 1 and rule.namespaces == ("prod-*",) and rule.exclude_namespaces == ("prod-sandbox",)
    assert rule.verifiers[0].name.endswith(key_sha256(parse_public_key(ALICE.read_bytes()))[:12])
    img = parse_reference("ghcr.io/kyverno/test-verify-image:signed")
    assert match_rule(pol, img, "prod-eu") is rule
    assert match_rule(pol, img, "prod-sandbox") is None
    assert match_rule(pol, img, "dev") is None
    assert match_rule(pol, parse_reference("ghcr.io/kyverno/test-verify-image:skip-me"), "prod-eu") is None


def test_unsupported_fields_are_reported_per_rule(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
        "spec": {"rules": [{
            "name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"], "selector": {"matchLabels": {"a": "b"}}}}]},
            "preconditions": {"all": []},
            "verifyImages": [{"imageReferences": ["r.io/*"], "attestations": [{"type": "x"}],
                              "attestors": [{"entries": [{"keys": {"publicKeys": ALICE.read_text(),
                                                                   "rekor": {"ignoreTlog": True}}}]}]}]}]},
    }
    f = tmp_path / "p.json"
    f.write_text(json.dumps(doc))
    pol = load(f"kyverno:{f}")
    text = " | ".join(pol.warnings)
    assert "rule p/r" in text and "selector" in text and "preconditions" in text and "attestations" in text
    # Left out, a selector or a precondition only widens the rule: reported on every verdict.
    assert any("selector" in n for n in pol.rules[0].notes) and any("preconditions" in n for n in pol.rules[0].notes)
    # Left out, attestation conditions would loosen it: the rule is refused, never approximated.
    assert any("attestations" in n for n in pol.rules[0].refused) and pol.rules[0].verifiers == ()


def test_required_false_and_multiple_entries_default_to_all() -> None:
    pem = ALICE.read_text()
    docs = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"}, "spec": {"rules": [{
        "name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
        "verifyImages": [{"imageReferences": ["r.io/*"], "required": False, "attestors": [{"entries": [
            {"keys": {"publicKeys": pem, "rekor": {"ignoreTlog": True}}},
            {"keys": {"publicKeys": pem, "rekor": {"ignoreTlog": False}}}]}]}]}]}}
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(docs, fh)
    pol = load(f"kyverno:{fh.name}")
    assert pol.rules[0].requirement_sets == ((2, (0, 1)),) and pol.rules[0].required is False


def test_cip_glob_semantics() -> None:
    m = cip_glob_matcher(["ghcr.io/sigstore/*"])
    assert m(parse_reference("ghcr.io/sigstore/cosign:v2"))
    assert not m(parse_reference("ghcr.io/sigstore/a/b:v2"))  # * stays within one path segment
    assert cip_glob_matcher(["ghcr.io/sigstore/**"])(parse_reference("ghcr.io/sigstore/a/b:v2"))
    assert cip_glob_matcher(["nginx"])(parse_reference("docker.io/library/nginx:1.25"))
    assert cip_glob_matcher(["index.docker.io/library/nginx*"])(parse_reference("nginx:1.25"))
    assert cip_glob_matcher(["**"])(parse_reference("quay.io/x/y:z"))
    assert cip_glob_matcher(["ghcr.io/sigstore/cosign:v?"])(parse_reference("ghcr.io/sigstore/cosign:v2"))
    assert not cip_glob_matcher(["ghcr.io/sigstore/cosign:v?"])(parse_reference("ghcr.io/sigstore/cosign:v22"))
    assert cip_glob_matcher(["localhost:5000/*"])(parse_reference("localhost:5000/app:1"))
    assert not cip_glob_matcher(["localhost"])(parse_reference("localhost:5000/app:1"))


def test_cip_globs_match_in_linear_time() -> None:
    """A regular expression made from ``**a**a**a**a**ab`` backtracked for 30 s on one 150-character name
    (per image and rule: a policy held the scan past its deadline)."""
    import time

    ref = parse_reference("r.io/" + "a" * 200 + ":1")
    start = time.monotonic()
    assert not cip_glob_matcher(["r.io/" + "**a" * 30 + "b"])(ref)
    assert not cip_glob_matcher(["r.io/" + "*a" * 30 + "b"])(ref)
    assert cip_glob_matcher(["r.io/" + "**a" * 30])(ref)
    assert time.monotonic() - start < 1.0


def test_cip_authorities_static_and_warn_mode() -> None:
    pol = load(f"clusterimagepolicy:{DATA / 'cip-keyless.yaml'}")
    by = {r.name: r for r in pol.rules}
    assert set(by) == {"image-policy-keyless", "allow-pause", "warn-only"}
    assert by["warn-only"].mode == "warn"
    assert by["allow-pause"].verifiers[0].name.startswith("static pass")
    assert match_rule(pol, parse_reference("registry.k8s.io/pause:3.9"), "kube-system").name == "allow-pause"
    assert match_rule(pol, parse_reference("ghcr.io/sigstore/cosign:v2"), "x").name == "image-policy-keyless"
    assert any("not contacted" in n for n in by["image-policy-keyless"].notes)


def test_native_rules_come_first_and_native_exemptions_apply(tmp_path: Path) -> None:
    from scanner.policy.sources import load_policies

    (tmp_path / "k.pub").write_text(ALICE.read_text())
    native = tmp_path / "p.yaml"
    native.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  rules:\n"
                      "    - {name: native, images: ['ghcr.io/kyverno/test-verify-image:native*'],"
                      " verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
                      "  exemptions:\n    - {images: ['ghcr.io/*'], reason: r, until: '2099-01-01T00:00:00Z'}\n")
    pol = load_policies(str(native), [f"kyverno:{DATA / 'kyverno-inline-key.yaml'}"])
    assert [r.name for r in pol.rules] == ["native", "check-image/check-image"]
    assert len(pol.exemptions) == 1 and len(pol.sources) == 2


def test_bad_sources_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="use kyverno:FILE"):
        load("opa:x")
    with pytest.raises(ConfigError, match="cannot read"):
        load(f"kyverno:{tmp_path / 'missing.yaml'}")
    (tmp_path / "bad.yaml").write_text("a: [")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load(f"kyverno:{tmp_path / 'bad.yaml'}")
    with pytest.raises(ConfigError, match="trustpolicy"):
        load(f"notation:{tmp_path}")


def test_policy_without_verify_images_is_reported(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: kyverno.io/v1\nkind: ClusterPolicy\nmetadata: {name: x}\nspec:\n  rules:\n"
                 "  - name: r\n    validate: {message: m}\n")
    pol = load(f"kyverno:{f}")
    assert pol.rules == () and any("no image verification rules" in w for w in pol.warnings)


UPSTREAM = DATA / "upstream"


def test_upstream_kyverno_sample_maps_to_one_key_rule() -> None:
    pol = load(f"kyverno:{UPSTREAM / 'kyverno-policies-verify-image.yaml'}")
    (rule,) = pol.rules
    assert (rule.name, rule.source) == ("verify-image/verify-image", "kyverno:ClusterPolicy/verify-image")
    assert rule.images == ("ghcr.io/kyverno/test-verify-image*",) and rule.count == 1 and rule.required
    assert rule.verifiers[0].name.startswith("cosign key ECDSA secp256r1")
    assert match_rule(pol, parse_reference("ghcr.io/kyverno/test-verify-image:signed"), "any") is rule
    assert pol.warnings == ()  # mutateDigest is an admission concern, not an unsupported audit field


def test_upstream_policy_controller_sample_maps_to_one_keyless_rule() -> None:
    pol = load(f"clusterimagepolicy:{UPSTREAM / 'policy-controller-signed-by-github-actions.yaml'}")
    (rule,) = pol.rules
    assert rule.name == "image-is-signed-by-github-actions" and rule.mode == "enforce"
    assert "subject https://github.com/sigstore/policy-controller/" in rule.verifiers[0].name
    assert "issuer https://token.actions.githubusercontent.com" in rule.verifiers[0].name
    assert match_rule(pol, parse_reference("quay.io/any/thing:1"), "x") is rule  # glob "**"


# -- the documents every importer reads (_docs): hostile files are refused, never a crash or a held scan --

IVP_HEAD = "apiVersion: policies.kyverno.io/v1\nkind: ImageValidatingPolicy\nmetadata: {name: x}\n"


def laughs(levels: int) -> str:
    """A "billion laughs": each level names the one before nine times (9**levels values in ~60*levels bytes)."""
    out = 'x-0: &l0 ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, levels):
        out += f"x-{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
    return out + f"spec: {{matchConstraints: {{namespaceSelector: {{matchLabels: *l{levels - 1}}}}}}}\n"


def test_yaml_aliases_that_expand_past_the_size_limit_are_refused_quickly() -> None:
    data = (IVP_HEAD + laughs(9)).encode()  # 387 million values in under 1 kB
    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand"):
        _docs(data, "kyverno:f.yaml")
    assert time.monotonic() - start < 60  # the walk stops at the limit (seconds), not at 387 million


def test_aliases_that_stay_small_are_read() -> None:
    (doc,) = _docs((IVP_HEAD + laughs(3)).encode(), "kyverno:f.yaml")
    assert len(doc["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"]) == 9


def test_nesting_deeper_than_the_parser_is_refused_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        _docs(("[" * 5000 + "]" * 5000).encode(), "kyverno:f.yaml")


class _Cluster:
    """A ClusterReader (scanner/policy/cluster.py) answering from memory: the importers' seam."""

    def __init__(self, docs: list[dict], secret: dict) -> None:
        self.docs, self.secret = docs, secret
        self.asked: list[tuple[str, str]] = []

    def policy_documents(self, kind: str) -> list[dict]:
        return [dict(d) for d in self.docs] if kind == "kyverno" else []

    def secret_data(self, namespace: str, name: str) -> dict:
        self.asked.append((namespace, name))
        return self.secret

    def validating_webhook_configurations(self) -> list:
        return []


@pytest.mark.parametrize("value", [
    "//79/Q==",  # the bytes ff fe fd: a DER key or any binary Secret, not text
    "not base64!",  # no API server stores it, a reader may still hand it over
    12,  # not even a string
])
def test_a_secret_key_that_is_not_text_refuses_the_rule_and_does_not_crash(value: object) -> None:
    import base64

    policy = {
        "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "p"},
        "spec": {"rules": [{"name": "r", "verifyImages": [{
            "imageReferences": ["registry.example/*"],
            "attestors": [{"entries": [{"keys": {"secret": {"name": "k", "namespace": "ns"}}}]}],
        }]}]},
    }
    cluster = _Cluster([policy], {"ca.crt": value})
    pol = merge(None, ["kyverno:cluster"], loader=PolicyLoader(), kubeconfig=None, context=None,
                cluster=cluster)  # type: ignore[arg-type]
    assert cluster.asked == [("ns", "k")]
    (rule,) = pol.rules
    assert rule.refused and not rule.verifiers, rule  # fail closed: the rule cannot be satisfied
    good = base64.b64encode(ALICE.read_bytes()).decode()
    ok = merge(None, ["kyverno:cluster"], loader=PolicyLoader(), kubeconfig=None, context=None,
               cluster=_Cluster([policy], {"cosign.pub": good}))  # type: ignore[arg-type]
    assert not ok.rules[0].refused and ok.rules[0].verifiers
