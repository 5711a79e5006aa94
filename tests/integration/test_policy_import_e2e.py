"""An end-to-end scan under an imported Kyverno policy (and a ClusterImagePolicy) gives the same verdicts
as the same rules written natively, and each verdict names the policy and rule behind it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod, publish_estate, write_pods, write_policy

pytestmark = pytest.mark.integration


def scan(*args: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "scanner.cli", "scan", "--no-store", "-o", "json", "--no-progress",
                        *args], capture_output=True, text=True, timeout=180, env=os.environ.copy())
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def verdicts(doc: dict) -> dict[str, str]:
    return {i["repository"].rsplit("/", 1)[-1]: i["status"] for i in doc["images"]}


def test_imported_policies_match_native(registry, tmp_path: Path) -> None:
    est = publish_estate(registry.url, registry.host)
    native = write_policy(est, tmp_path)
    pods = write_pods(est, tmp_path / "pods.json")
    native_doc = yaml.safe_load(native.read_text())
    trusted, revoked = (tmp_path / "trusted.pub").read_text(), (tmp_path / "revoked.pub").read_text()

    # The same rule as a Kyverno ClusterPolicy: two attestor entries, any one (count: 1). The native file's
    # rules are first-match among themselves (notation-* before demo/*), but every imported rule that
    # matches must hold beside them: the Kyverno policy skips the notation images, as a cluster running
    # both kinds of signatures would.
    kyverno = {
        "apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "demo"},
        "spec": {"validationFailureAction": "Enforce", "rules": [{
            "name": "demo-images", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
            "verifyImages": [{"imageReferences": [f"{est.host}/demo/*", "127.0.0.1:9/*"],
                              "skipImageReferences": [f"{est.host}/demo/notation-*"], "attestors": [{
                "count": 1, "entries": [{"keys": {"publicKeys": trusted, "rekor": {"ignoreTlog": True}}},
                                        {"keys": {"publicKeys": revoked, "rekor": {"ignoreTlog": True}}}]}]}]}]},
    }
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump(kyverno))
    # Native file keeps what the imported rule does not say: exemptions, revocations, insecure registries,
    # and the demo's notation rule (a notation trust policy, not a cosign key).
    rest = {**native_doc, "spec": {**native_doc["spec"], "rules": [
        r for r in native_doc["spec"]["rules"] if r["name"] != "demo-images"]}}
    (tmp_path / "rest.yaml").write_text(yaml.safe_dump(rest))

    want = scan("--pods-file", str(pods), "--policy", str(native))
    got = scan("--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
               "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    assert verdicts(got) == verdicts(want) == est.expected
    by = {i["repository"].rsplit("/", 1)[-1]: i for i in got["images"]}
    assert by["signed"]["policy_source"] == "kyverno:ClusterPolicy/demo"
    assert by["signed"]["rule"] == "demo/demo-images"

    # The same as a ClusterImagePolicy: its globs are per path segment (demo/* matches demo/x only). A key
    # authority without ctlog has no transparency-log check in policy-controller (pkg/webhook/validator.go).
    # It has no skip list: its globs name the cosign-signed images (not the notation ones).
    globs = [{"glob": f"{est.host}/demo/{n}"} for n in est.expected if not n.startswith("notation-")]
    cip = {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy", "metadata": {"name": "demo"},
           "spec": {"images": [*globs, {"glob": "127.0.0.1:9/**"}], "authorities": [
               {"name": "trusted", "key": {"data": trusted}},
               {"name": "revoked", "key": {"data": revoked}}]}}
    (tmp_path / "cip.yaml").write_text(yaml.safe_dump(cip))
    got = scan("--pods-file", str(pods), "--policy", str(tmp_path / "rest.yaml"),
               "--policy-from", f"clusterimagepolicy:{tmp_path / 'cip.yaml'}")
    assert verdicts(got) == est.expected
    assert {i["policy_source"] for i in got["images"] if i["rule"] and i["rule"] != "notation-images"} == {
        "clusterimagepolicy:ClusterImagePolicy/demo"}


# -- rules apply exactly where they are written (issue #17, section C) -----------------------------


def _native(tmp_path: Path, host: str, extra: str = "") -> Path:
    p = tmp_path / "native.yaml"
    p.write_text(f"apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n  insecureRegistries: ['{host}']\n"
                 + extra)
    return p


def _key_entry(key: KeyPair) -> dict:
    return {"keys": {"publicKeys": key.public_pem, "rekor": {"ignoreTlog": True}}}


def _by_namespace(doc: dict) -> dict[str, tuple[str, str | None, str | None]]:
    out = {}
    for i in doc["images"]:
        for c in i["containers"]:
            out[c["namespace"]] = (i["status"], i["rule"], i["policy_source"])
    return out


def test_two_teams_policies_with_the_same_names_are_never_merged(registry, tmp_path: Path) -> None:
    """Kyverno Policy "team"/rule "verify" in team-a trusts key A, in team-b key B. An image signed only
    by B runs in both namespaces: team-b's pod is verified, team-a's is not (it was: the rules were
    merged by name and team-a's pod judged by team-b's key)."""
    a, b = KeyPair.ecdsa(), KeyPair.ecdsa()
    digest = oci.make_image(registry.url, "teams/app", "1.0")
    sign_image(registry.url, registry.host, "teams/app", digest, b)
    ref = f"{registry.host}/teams/app:1.0"
    iid = f"{registry.host}/teams/app@{digest}"
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": [_pod(ns, "app", [("app", ref, iid)]) for ns in ("team-a", "team-b")]}))
    docs = [{"apiVersion": "kyverno.io/v1", "kind": "Policy", "metadata": {"name": "team", "namespace": ns},
             "spec": {"rules": [{"name": "verify", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                                 "verifyImages": [{"imageReferences": [f"{registry.host}/teams/*"],
                                                   "attestors": [{"entries": [_key_entry(key)]}]}]}]}}
            for ns, key in (("team-a", a), ("team-b", b))]
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump_all(docs))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    assert _by_namespace(got) == {
        "team-a": ("invalid", "team-a/team/verify", "kyverno:Policy/team-a/team"),
        "team-b": ("verified", "team-b/team/verify", "kyverno:Policy/team-b/team"),
    }


def test_kyverno_attestor_sets_are_all_required(registry, tmp_path: Path) -> None:
    """attestors: [{count: 1, entries: [A, B]}, {entries: [C]}] means (A or B) and C: an image signed by
    A and B is not verified (it was: the import made it "any 2 of A, B, C")."""
    a, b, c = KeyPair.ecdsa(), KeyPair.ecdsa(), KeyPair.ecdsa()
    items = []
    for name, keys in (("ab", (a, b)), ("ac", (a, c)), ("bc", (b, c)), ("c", (c,))):
        digest = oci.make_image(registry.url, f"sets/{name}", "1.0")
        sign_image(registry.url, registry.host, f"sets/{name}", digest, *keys)
        items.append(_pod("prod", name, [("app", f"{registry.host}/sets/{name}:1.0",
                                          f"{registry.host}/sets/{name}@{digest}")]))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": items}))
    doc = {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": "sets"},
           "spec": {"rules": [{"name": "r", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                               "verifyImages": [{"imageReferences": [f"{registry.host}/sets/*"], "attestors": [
                                   {"count": 1, "entries": [_key_entry(a), _key_entry(b)]},
                                   {"entries": [_key_entry(c)]}]}]}]}}
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump(doc))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    assert verdicts(got) == {"ab": "invalid", "ac": "verified", "bc": "verified", "c": "invalid"}


def test_unresolved_image_in_an_exempt_and_a_plain_namespace(tmp_path: Path) -> None:
    """An image whose digest is unknown runs in kube-system (exempted) and default (not): whatever the
    pod order, default's container is an error and kube-system's is exempt (it was decided by the
    namespace of the first container)."""
    ref = "127.0.0.1:9/infra/agent:1.0"  # nothing listens on port 9: the tag cannot be resolved
    policy = _native(tmp_path, "127.0.0.1:9", "  exemptions:\n    - {images: ['127.0.0.1:9/infra/*'], "
                     "namespaces: [kube-system], reason: SEC-1, until: '2099-01-01T00:00:00Z'}\n")
    for order in (("kube-system", "default"), ("default", "kube-system")):
        pods = tmp_path / "pods.json"
        pods.write_text(json.dumps({"items": [_pod(ns, "agent", [("agent", ref, None)]) for ns in order]}))
        got = scan("--pods-file", str(pods), "--policy", str(policy))
        assert {ns: v[0] for ns, v in _by_namespace(got).items()} == {"kube-system": "exempt", "default": "error"}


# -- every policy that matches an image must hold, as in the admission controllers ----------------


def _signed_images(registry, tmp_path: Path, a: KeyPair, b: KeyPair) -> Path:
    """both/a (signed by A), both/b (by B), both/ab (by A and B), in namespace prod."""
    items = []
    for name, keys in (("a", (a,)), ("b", (b,)), ("ab", (a, b))):
        digest = oci.make_image(registry.url, f"both/{name}", "1.0")
        sign_image(registry.url, registry.host, f"both/{name}", digest, *keys)
        items.append(_pod("prod", name, [("app", f"{registry.host}/both/{name}:1.0",
                                          f"{registry.host}/both/{name}@{digest}")]))
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"items": items}))
    return pods


def _kyverno_policy(name: str, host: str, key: KeyPair) -> dict:
    return {"apiVersion": "kyverno.io/v1", "kind": "ClusterPolicy", "metadata": {"name": name},
            "spec": {"validationFailureAction": "Enforce", "rules": [{
                "name": "verify", "match": {"any": [{"resources": {"kinds": ["Pod"]}}]},
                "verifyImages": [{"imageReferences": [f"{host}/both/*"],
                                  "attestors": [{"entries": [_key_entry(key)]}]}],
            }]}}


def _cip(name: str, host: str, key: KeyPair, mode: str | None = None) -> dict:
    spec: dict = {"images": [{"glob": f"{host}/both/*"}],
                  "authorities": [{"name": "k", "key": {"data": key.public_pem}}]}
    if mode:
        spec["mode"] = mode
    return {"apiVersion": "policy.sigstore.dev/v1beta1", "kind": "ClusterImagePolicy", "metadata": {"name": name},
            "spec": spec}


def _images(doc: dict) -> dict[str, dict]:
    return {i["repository"].rsplit("/", 1)[-1]: i for i in doc["images"]}


def test_every_matching_kyverno_policy_must_hold(registry, tmp_path: Path) -> None:
    """Two ClusterPolicies match both/*: key-a trusts A, key-b trusts B. Kyverno applies every matching
    rule of every policy, so an image signed by A alone is refused by key-b; sigaudit called it verified
    (the first matching rule applied, the second was never checked)."""
    a, b = KeyPair.ecdsa(), KeyPair.ecdsa()
    pods = _signed_images(registry, tmp_path, a, b)
    (tmp_path / "kyverno.yaml").write_text(yaml.safe_dump_all(
        [_kyverno_policy("key-a", registry.host, a), _kyverno_policy("key-b", registry.host, b)]))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"kyverno:{tmp_path / 'kyverno.yaml'}")
    by = _images(got)
    assert {n: (i["status"], i["compliant"]) for n, i in by.items()} == {
        "a": ("invalid", False), "b": ("invalid", False), "ab": ("verified", True)}
    # The verdict names the policy that refused it, its headline is that policy's reason, and every
    # policy's reasons are kept.
    assert (by["a"]["rule"], by["a"]["policy_source"]) == ("key-b/verify", "kyverno:ClusterPolicy/key-b")
    assert (by["b"]["rule"], by["b"]["policy_source"]) == ("key-a/verify", "kyverno:ClusterPolicy/key-a")
    headline = by["a"]["reasons"][by["a"]["deciding_reason"]]
    assert "key-b/verify" in headline
    assert any("key-a/verify" in r for r in by["a"]["reasons"])
    assert all(any(rule in r for r in by["ab"]["reasons"]) for rule in ("key-a/verify", "key-b/verify"))
    assert got["summary"]["compliant"] == 1 and got["summary"]["images"] == 3

    # The same two policies from two sources, and a Kyverno policy beside a native rule: every source holds.
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(_kyverno_policy("key-a", registry.host, a)))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(_kyverno_policy("key-b", registry.host, b)))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"kyverno:{tmp_path / 'a.yaml'}", "--policy-from", f"kyverno:{tmp_path / 'b.yaml'}")
    assert verdicts(got) == {"a": "invalid", "b": "invalid", "ab": "verified"}
    (tmp_path / "a.pub").write_text(a.public_pem)
    rule = (f"  rules:\n    - name: native-a\n      images: ['{registry.host}/both/*']\n"
            "      verifiers: [{cosign: {key: a.pub, ignoreTlog: true}}]\n")
    native = _native(tmp_path, registry.host, rule)
    got = scan("--pods-file", str(pods), "--policy", str(native), "--policy-from", f"kyverno:{tmp_path / 'b.yaml'}")
    assert verdicts(got) == {"a": "invalid", "b": "invalid", "ab": "verified"}
    assert _images(got)["a"]["policy_source"] == "kyverno:ClusterPolicy/key-b"
    assert _images(got)["b"]["policy_source"] == str(native)


def test_every_matching_cluster_image_policy_must_hold(registry, tmp_path: Path) -> None:
    """policy-controller: "When more than one policy has a matching image pattern, the image must match at
    least one signature from each ClusterImagePolicy." A warn-mode policy stays non-blocking, and an
    exemption waives every matching policy's verdict."""
    a, b = KeyPair.ecdsa(), KeyPair.ecdsa()
    pods = _signed_images(registry, tmp_path, a, b)
    (tmp_path / "cip.yaml").write_text(yaml.safe_dump_all(
        [_cip("key-a", registry.host, a), _cip("key-b", registry.host, b)]))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"clusterimagepolicy:{tmp_path / 'cip.yaml'}")
    by = _images(got)
    assert {n: (i["status"], i["compliant"]) for n, i in by.items()} == {
        "a": ("invalid", False), "b": ("invalid", False), "ab": ("verified", True)}
    assert by["a"]["policy_source"] == "clusterimagepolicy:ClusterImagePolicy/key-b"

    # key-b in mode: warn: its failure is reported, not counted; key-a (enforce) still decides compliance.
    (tmp_path / "cip.yaml").write_text(yaml.safe_dump_all(
        [_cip("key-a", registry.host, a), _cip("key-b", registry.host, b, mode="warn")]))
    got = scan("--pods-file", str(pods), "--policy", str(_native(tmp_path, registry.host)),
               "--policy-from", f"clusterimagepolicy:{tmp_path / 'cip.yaml'}")
    by = _images(got)
    assert {n: (i["status"], i["compliant"], i["warn_only"]) for n, i in by.items()} == {
        "a": ("invalid", True, True), "b": ("invalid", False, False), "ab": ("verified", True, False)}
    assert by["b"]["policy_source"] == "clusterimagepolicy:ClusterImagePolicy/key-a"

    # An exemption waives the verdicts of every policy that matches the image, and keeps their reasons.
    native = _native(tmp_path, registry.host, f"  exemptions:\n    - {{images: ['{registry.host}/both/a'], "
                     "reason: SEC-9, until: '2099-01-01T00:00:00Z'}\n")
    (tmp_path / "cip.yaml").write_text(yaml.safe_dump_all(
        [_cip("key-a", registry.host, a), _cip("key-b", registry.host, b)]))
    got = scan("--pods-file", str(pods), "--policy", str(native),
               "--policy-from", f"clusterimagepolicy:{tmp_path / 'cip.yaml'}")
    by = _images(got)
    assert (by["a"]["status"], by["a"]["compliant"]) == ("exempt", True)
    assert "without the exemption: invalid" in by["a"]["reasons"]
    assert any("key-b" in r for r in by["a"]["reasons"])
    assert verdicts(got) == {"a": "exempt", "b": "invalid", "ab": "verified"}


def test_a_kritis_allowlist_waives_only_its_own_policy(registry, tmp_path: Path, monkeypatch) -> None:
    """A GenericAttestationPolicy is a namespaced resource: its admissionAllowlistPatterns (here
    "<registry>/both/*": kritis' trailing `*` does not cross `/`) let kritis admit those images in that
    namespace, but never waive the cluster's other policies. It used to
    become a policy-wide exemption, so every image of the namespace was `exempt` whatever the native
    rule (or a Kyverno ClusterPolicy) said."""
    a, b = KeyPair.ecdsa(), KeyPair.ecdsa()
    pods = _signed_images(registry, tmp_path, a, b)
    kritis = [
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "AttestationAuthority",
         "metadata": {"name": "qa", "namespace": "prod"},
         "spec": {"noteReference": "projects/p/notes/qa",
                  "publicKeys": [{"keyType": "PKIX", "keyId": "qa",
                                  "pkixPublicKey": {"publicKeyPem": b.public_pem}}]}},
        {"apiVersion": "kritis.grafeas.io/v1beta1", "kind": "GenericAttestationPolicy",
         "metadata": {"name": "anything-goes", "namespace": "prod"},
         "spec": {"attestationAuthorityNames": ["qa"],
                  "admissionAllowlistPatterns": [{"namePattern": f"{registry.host}/both/*"}]}},
    ]
    (tmp_path / "kritis.yaml").write_text(yaml.safe_dump_all(kritis))
    (tmp_path / "a.pub").write_text(a.public_pem)
    native = _native(tmp_path, registry.host, f"  rules:\n    - name: native-a\n      images: ['{registry.host}/*']\n"
                     "      verifiers: [{cosign: {key: a.pub, ignoreTlog: true}}]\n")
    monkeypatch.setenv("SIGAUDIT_GRAFEAS_URL", "http://127.0.0.1:9")  # nothing listens: the waived rule's error
    got = scan("--pods-file", str(pods), "--policy", str(native), "--policy-from", f"kritis:{tmp_path / 'kritis.yaml'}")
    by = _images(got)
    assert {n: i["status"] for n, i in by.items()} == {"a": "exempt", "b": "invalid", "ab": "exempt"}
    assert by["b"]["policy_source"] == str(native)
    assert any("kritis admission allowlist" in r for r in by["a"]["reasons"])
