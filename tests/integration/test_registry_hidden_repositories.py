"""A registry that hides what an account may not see: the pod's next credential is tried.

GHCR, ECR and Harbor answer 404 NAME_UNKNOWN / MANIFEST_UNKNOWN — not 401/403 — to an account that
may not read a repository. The kubelet then pulls with the pod's next pull secret; sigaudit must too,
or an image whose signatures the second secret can read is reported "unsigned" from the first
secret's not-found. The real docker-registry (htpasswd: alice and bob) sits behind the hostile
proxy, which forwards every request with its Authorization and answers alice's requests for the
repository with the 404 NAME_UNKNOWN a hiding registry gives.

Also here: the summary counts a digest judged apart under two credential sets as one image (issue:
``summary.images`` double counted it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry, Rule, Status

pytestmark = pytest.mark.integration

TENANTS = {"alice": "alice-Pa55-4d1e", "bob": "bob-Pa55-77a0"}
HIDDEN = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}'


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _dockerconfigjson(host: str, user: str, password: str) -> bytes:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}).encode()


@dataclass
class Hiding:
    front: HostileRegistry
    host: str
    policy: object
    signed: str


@pytest.fixture
def hiding(registry_factory, tmp_path: Path) -> Iterator[Hiding]:
    from scanner.policy.loader import load_policy

    reg = registry_factory(auth="htpasswd", users=TENANTS)
    auth = oci.RegistryAuth("bob", TENANTS["bob"])
    key = KeyPair.ecdsa()
    signed = oci.make_image(reg.url, "team/app", "1", auth=auth)
    sign_image(reg.url, reg.host, "team/app", signed, key, auth=auth)
    with HostileRegistry(upstream=reg.url, forward_auth=True) as front:
        # alice's account may not see team/app: the registry hides it (every method, every path)
        front.add(Rule("*", r"^/v2/team/app/", Status(404, {"Content-Type": "application/json"}, HIDDEN),
                       authorization=_basic("alice", TENANTS["alice"])))
        (tmp_path / "k.pub").write_text(key.public_pem)
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{front.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{front.host}/*'], "
            "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        )
        yield Hiding(front, front.host, load_policy(policy), signed)


def _scan(h: Hiding, pods: list[dict], secrets: dict[tuple[str, str], tuple[str, str]], **kw: object):
    from scanner.pipeline import run_scan
    from scanner.registry.auth import CredentialStore
    from scanner.registry.client import RegistryClient

    store = CredentialStore()
    for (ns, name), (user, password) in secrets.items():
        store.add_pull_secret(ns, name, _dockerconfigjson(h.host, user, password))
    with RegistryClient(credentials=store, insecure_registries=h.policy.insecure_registries, **kw) as client:
        return run_scan(h.policy, pods, client=client, cluster="hidden", workers=2)  # type: ignore[arg-type]


def _pod_of(h: Hiding, ns: str, secrets: list[str]) -> dict:
    image = f"{h.host}/team/app"
    return _pod(ns, f"p-{ns}", [("c", f"{image}:1", f"{image}@{h.signed}")], pull_secrets=secrets)


def _by_ns(result) -> dict[str, tuple[str, str]]:
    return {c.namespace: (v.status.value, " | ".join(v.reasons)) for v in result.verdicts for c in v.image.containers}


def test_a_repository_hidden_from_the_first_pull_secret_is_read_with_the_next(hiding: Hiding) -> None:
    h = hiding
    result = _scan(h, [_pod_of(h, "team-a", ["alice-cred", "bob-cred"])],
                   {("team-a", "alice-cred"): ("alice", TENANTS["alice"]),
                    ("team-a", "bob-cred"): ("bob", TENANTS["bob"])})
    status, reasons = _by_ns(result)["team-a"]
    assert status == "verified", reasons  # never "unsigned" from alice's not-found
    assert "registry credentials: pull secret team-a/bob-cred" in reasons
    assert h.front.seen(r"^/v2/team/app/", None), "the hiding front saw no request"
    hidden = [s for s in h.front.seen(r"^/v2/team/app/") if s.fault == "Status"]
    assert hidden, "alice's credential was never tried first"


def test_a_stale_second_secret_never_lets_the_first_secrets_not_found_stand(hiding: Hiding) -> None:
    """alice cannot see the repository (404), bob-old's password is wrong (401): the registry hides
    what an account may not see, so nobody who might see the image's signatures answered. Whether it
    is signed cannot be told: `error` naming both secrets (never "unsigned", which `required: false`
    allows)."""
    h = hiding
    result = _scan(h, [_pod_of(h, "team-c", ["alice-cred", "bob-old"])],
                   {("team-c", "alice-cred"): ("alice", TENANTS["alice"]),
                    ("team-c", "bob-old"): ("bob", "not-the-password")})
    status, reasons = _by_ns(result)["team-c"]
    assert status == "error", reasons
    assert "not found with pull secret team-c/alice-cred" in reasons, reasons
    assert "access refused to pull secret team-c/bob-old (401)" in reasons, reasons
    assert "not-the-password" not in reasons


def test_a_digest_judged_under_two_credential_sets_is_one_image_in_the_summary(hiding: Hiding) -> None:
    from scanner.document import summary

    h = hiding
    result = _scan(h, [_pod_of(h, "team-a", ["bob-cred"]), _pod_of(h, "team-b", [])],
                   {("team-a", "bob-cred"): ("bob", TENANTS["bob"])})
    assert len(result.verdicts) == 2  # judged apart: team-b has no credentials
    s = summary(result)
    assert (s["images"], s["containers"], s["compliant"], s["non_compliant"]) == (1, 2, 0, 1), s
