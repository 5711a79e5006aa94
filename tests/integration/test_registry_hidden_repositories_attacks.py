"""The 404 → next credential retry, attacked (review of fix/creds2) on the real docker-registry behind
the hostile proxy: the next source's failure after a not-found, a redirect after it, many hidden
secrets against --registry-budget and the scan deadline, and `required: false` with a refused source."""

from __future__ import annotations

import time

import pytest

from tests.harness.hostile_registry import HostileRegistry, Redirect, Rule, Status, Truncate
from tests.integration.test_registry_hidden_repositories import (
    HIDDEN,
    TENANTS,
    Hiding,
    _basic,
    _by_ns,
    _pod_of,
    _scan,
    hiding,  # noqa: F401
)

pytestmark = pytest.mark.integration
SIG = r"^/v2/team/app/manifests/sha256-[0-9a-f]+\.sig"


def _two(h: Hiding, ns: str = "team-a", **kw: object):
    return _scan(h, [_pod_of(h, ns, ["alice-cred", "bob-cred"])],
                 {(ns, "alice-cred"): ("alice", TENANTS["alice"]), (ns, "bob-cred"): ("bob", TENANTS["bob"])}, **kw)


@pytest.mark.parametrize("fault", [Status(500), Status(503), Truncate(0.3), Status(401), Status(403)])
def test_after_a_not_found_the_next_sources_failure_is_never_unsigned(hiding: Hiding, fault: object) -> None:  # noqa: F811
    h = hiding
    h.front.add(Rule("GET", SIG, fault, authorization=_basic("bob", TENANTS["bob"])))  # type: ignore[arg-type]
    status, reasons = _by_ns(_two(h))["team-a"]
    assert status == "error", reasons  # bob's answer is no answer: never alice's "unsigned"


def test_a_redirect_after_a_not_found_never_carries_the_next_credential(hiding: Hiding) -> None:  # noqa: F811
    h = hiding
    with HostileRegistry(upstream=None) as elsewhere:
        h.front.add(Rule("*", SIG, Redirect(elsewhere.url), authorization=_basic("bob", TENANTS["bob"])))
        status, _reasons = _by_ns(_two(h))["team-a"]
        seen = elsewhere.seen("")
        assert seen, "never redirected"
        assert all("authorization" not in s.headers for s in seen), [s.headers for s in seen]
        assert status != "verified"


def test_many_hidden_secrets_stay_within_the_budget(hiding: Hiding) -> None:  # noqa: F811
    h = hiding
    n = 40
    secrets = {("team-a", f"s{i}"): (f"u{i}", f"p{i}") for i in range(n)}
    for i in range(n):
        h.front.add(Rule("*", r"^/v2/team/app/", Status(404, {"Content-Type": "application/json"}, HIDDEN),
                         authorization=_basic(f"u{i}", f"p{i}")))
    before = len(h.front.requests)
    result = _scan(h, [_pod_of(h, "team-a", [f"s{i}" for i in range(n)])], secrets, manifest_budget=10)
    status, reasons = _by_ns(result)["team-a"]
    gets = [s for s in h.front.requests[before:] if s.method == "GET" and "/manifests/" in s.path
            and "authorization" in s.headers]  # the anonymous challenge (401) is no pull
    assert len(gets) <= 10
    assert status == "error" and "budget" in reasons, reasons


def test_many_hidden_secrets_stop_at_the_deadline(hiding: Hiding) -> None:  # noqa: F811
    from scanner.pipeline import run_scan
    from scanner.registry.auth import CredentialStore
    from scanner.registry.client import RegistryClient
    from tests.integration.test_registry_hidden_repositories import _dockerconfigjson

    h = hiding
    n = 300
    store = CredentialStore()
    for i in range(n):
        h.front.add(Rule("*", r"^/v2/team/app/", Status(404, {"Content-Type": "application/json"}, HIDDEN),
                         authorization=_basic(f"u{i}", f"p{i}")))
        store.add_pull_secret("team-a", f"s{i}", _dockerconfigjson(h.host, f"u{i}", f"p{i}"))
    pods = [_pod_of(h, "team-a", [f"s{i}" for i in range(n)])]
    t0 = time.monotonic()
    with RegistryClient(credentials=store, insecure_registries=h.policy.insecure_registries) as client:
        result = run_scan(h.policy, pods, client=client, cluster="hidden", workers=2,  # type: ignore[arg-type]
                          deadline=time.monotonic() + 2.0)
    took = time.monotonic() - t0
    status, reasons = _by_ns(result)["team-a"]
    assert took < 6, took
    assert status == "error" and "deadline" in reasons, reasons


@pytest.mark.parametrize("refusal", [401, 403])
def test_required_false_a_refused_source_never_makes_a_bad_signature_unsigned(
        hiding: Hiding, tmp_path, refusal: int) -> None:  # noqa: F811
    """required: false (Kyverno's): unsigned is allowed, a bad signature is not. The image carries a
    signature the policy's key does not verify (bob can read it); alice's account is hidden from the
    repository (404) and bob is refused (401/403) on the signature tag: nobody who could see it
    answered, so the scan cannot tell "unsigned" — it must not report the image compliant."""
    import dataclasses

    from scanner.policy.loader import load_policy
    from tests.harness.cosign_sign import KeyPair

    h = hiding
    other = KeyPair.ecdsa()
    (tmp_path / "other.pub").write_text(other.public_pem)
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                 f"  insecureRegistries: ['{h.host}']\n"
                 f"  rules:\n    - {{name: r, images: ['{h.host}/*'], "
                 "verifiers: [{cosign: {key: other.pub, ignoreTlog: true}}]}\n")
    policy = load_policy(p)
    policy = dataclasses.replace(policy, rules=tuple(dataclasses.replace(r, required=False) for r in policy.rules))
    h = dataclasses.replace(h, policy=policy)
    truth = _by_ns(_two(h))["team-a"]
    assert truth[0] == "invalid", truth  # what bob sees: a signature of another key
    h.front.add(Rule("GET", SIG, Status(refusal), authorization=_basic("bob", TENANTS["bob"])))
    for ns in ("team-b", "team-c"):  # a fresh client each: alice first, then bob (and bob first)
        result = _two(h, ns)
        v = next(v for v in result.verdicts)
        assert not v.compliant, v.reasons


def test_a_signature_the_next_source_sees_is_still_about_the_running_digest(hiding: Hiding, tmp_path) -> None:  # noqa: F811
    """alice is hidden from the repository; bob sees a `.sig` at the running digest's tag, signed with
    the trusted key but for another digest (a signature moved from another image): never verified."""
    import dataclasses

    from scanner.policy.loader import load_policy
    from tests.harness import oci
    from tests.harness.cosign_sign import KeyPair, sign_image

    h = hiding
    key = KeyPair.ecdsa()
    auth = oci.RegistryAuth("bob", TENANTS["bob"])
    upstream = h.front.upstream
    assert upstream is not None
    running = oci.make_image(upstream, "team/app", "2", auth=auth)
    sign_image(upstream, h.host, "team/app", running, key, payload_digest=h.signed, auth=auth)
    (tmp_path / "k2.pub").write_text(key.public_pem)
    p = tmp_path / "p.yaml"
    p.write_text("apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
                 f"  insecureRegistries: ['{h.host}']\n"
                 f"  rules:\n    - {{name: r, images: ['{h.host}/*'], "
                 "verifiers: [{cosign: {key: k2.pub, ignoreTlog: true}}]}\n")
    h = dataclasses.replace(h, policy=load_policy(p), signed=running)
    status, reasons = _by_ns(_two(h))["team-a"]
    assert status == "invalid", reasons
