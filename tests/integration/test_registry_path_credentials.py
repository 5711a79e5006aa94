"""Path-scoped pull secret keys: one secret holding ``host/team-a`` (alice) and ``host/team-b`` (bob).

The kubelet pulls ``host/team-a/app`` with alice's account and ``host/team-b/app`` with bob's (it
matches a key by host and path prefix, most specific first). sigaudit once dropped the path of a key,
so both entries became one ``host`` entry and the last won: team-a's image was read with bob's account.
The real docker-registry (htpasswd: alice and bob) sits behind the hostile proxy, which hides each
team's repository from the other account (404 NAME_UNKNOWN, as GHCR, ECR and Harbor answer).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tests.harness import oci
from tests.harness.cosign_sign import KeyPair, sign_image
from tests.harness.demo import _pod
from tests.harness.hostile_registry import HostileRegistry, Rule, Status

pytestmark = pytest.mark.integration

TENANTS = {"alice": "alice-Pa55-4d1e", "bob": "bob-Pa55-77a0"}
HIDDEN = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}'


def _basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{TENANTS[user]}".encode()).decode()


def _entry(user: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{TENANTS[user]}".encode()).decode()}


def test_each_teams_image_is_read_with_its_own_path_scoped_entry(registry_factory, tmp_path: Path) -> None:
    from scanner.pipeline import run_scan
    from scanner.policy.loader import load_policy
    from scanner.registry.auth import CredentialStore
    from scanner.registry.client import RegistryClient

    reg = registry_factory(auth="htpasswd", users=TENANTS)
    key = KeyPair.ecdsa()
    digests = {}
    for team, user in (("team-a", "alice"), ("team-b", "bob")):
        auth = oci.RegistryAuth(user, TENANTS[user])
        digests[team] = oci.make_image(reg.url, f"{team}/app", "1", auth=auth)
        sign_image(reg.url, reg.host, f"{team}/app", digests[team], key, auth=auth)
    with HostileRegistry(upstream=reg.url, forward_auth=True) as front:
        hidden = Status(404, {"Content-Type": "application/json"}, HIDDEN)
        front.add(Rule("*", r"^/v2/team-b/", hidden, authorization=_basic("alice")))
        front.add(Rule("*", r"^/v2/team-a/", hidden, authorization=_basic("bob")))
        (tmp_path / "k.pub").write_text(key.public_pem)
        policy = tmp_path / "policy.yaml"
        policy.write_text(
            "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
            f"  insecureRegistries: ['{front.host}']\n"
            f"  rules:\n    - {{name: r, images: ['{front.host}/*'], "
            "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
        )
        store = CredentialStore()
        # team-b's entry last: the entry that won when the path was dropped
        secret = {"auths": {f"{front.host}/team-a": _entry("alice"), f"https://{front.host}/v2/team-b/": _entry("bob")}}
        store.add_pull_secret("apps", "regcred", json.dumps(secret).encode())
        pods = [
            _pod("apps", f"p-{team}", [("c", f"{front.host}/{team}/app:1", f"{front.host}/{team}/app@{d}")],
                 pull_secrets=["regcred"])
            for team, d in digests.items()
        ]
        loaded = load_policy(policy)
        with RegistryClient(credentials=store, insecure_registries=loaded.insecure_registries) as client:
            result = run_scan(loaded, pods, client=client, cluster="paths", workers=2)  # type: ignore[arg-type]
        got = {v.image.reference.repository: (v.status.value, " | ".join(v.reasons)) for v in result.verdicts}
        assert got["team-a/app"][0] == "verified", got
        assert got["team-b/app"][0] == "verified", got
        assert "registry credentials: pull secret apps/regcred" in got["team-a/app"][1]
        # each account only ever asked for its own team's repository
        assert not [s for s in front.seen(r"^/v2/team-") if s.fault == "Status"], "an account read the other team's"


@pytest.mark.parametrize("glob", ["*" * 300 + "x", "[z-a]ocalhost"])
def test_a_pathological_or_odd_glob_key_neither_hangs_nor_crashes_the_scan(registry, tmp_path: Path, glob: str) -> None:
    """The real CLI, the real docker-registry: a docker config key whose host glob once hung the scan in
    a backtracking regular expression (``*…*x`` against ``localhost``: no deadline could fire, the GIL
    was held) or crashed it (``[z-a]``: re.error). The key matches nothing; the image is verified."""
    import subprocess
    import sys

    key = KeyPair.ecdsa()
    digest = oci.make_image(registry.url, "odd/app", "1")
    sign_image(registry.url, registry.host, "odd/app", digest, key)
    host = f"localhost:{registry.port}"
    (tmp_path / "k.pub").write_text(key.public_pem)
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "apiVersion: sigaudit.io/v1alpha1\nkind: AuditPolicy\nspec:\n"
        f"  insecureRegistries: ['{host}']\n"
        f"  rules:\n    - {{name: r, images: ['{host}/*'], "
        "verifiers: [{cosign: {key: k.pub, ignoreTlog: true}}]}\n"
    )
    pods = tmp_path / "pods.json"
    pods.write_text(json.dumps({"kind": "List", "items": [
        _pod("a", "p", [("c", f"{host}/odd/app:1", f"{host}/odd/app@{digest}")])]}))
    cfg = tmp_path / "docker"
    cfg.mkdir()
    (cfg / "config.json").write_text(json.dumps({"auths": {f"{glob}:{registry.port}": _entry("alice")}}))
    r = subprocess.run(
        [sys.executable, "-m", "scanner.cli", "scan", "--pods-file", str(pods), "--policy", str(policy),
         "--no-store", "-o", "json", "--no-progress", "--docker-config", str(cfg / "config.json")],
        capture_output=True, text=True, timeout=90,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    img = json.loads(r.stdout)["images"][0]
    assert img["status"] == "verified", img["reasons"]
    assert "Traceback" not in r.stderr
