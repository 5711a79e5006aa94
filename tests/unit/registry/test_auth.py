"""Registry credentials stay with their owner: a pod gets its own pull secrets and the scanner's own
credentials, in the kubelet's order, never another namespace's."""

from __future__ import annotations

import base64
import json

from scanner.registry.auth import CredentialStore, parse_docker_config

HOST = "registry.example:5000"


def _config(user: str, password: str, host: str = HOST) -> bytes:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}).encode()


def _store() -> CredentialStore:
    store = CredentialStore(parse_docker_config(_config("scanner", "own"), "config.json"))
    store.add_pull_secret("team-a", "regcred", _config("alice", "a"))
    store.add_pull_secret("team-a", "other", _config("carol", "c", "elsewhere.example"))
    store.add_pull_secret("team-b", "regcred", _config("bob", "b"))
    store.add_pull_secret("team-c", "copy", _config("alice", "a"))
    return store


def test_a_pod_gets_its_own_secrets_then_the_scanners_never_another_namespaces() -> None:
    store = _store()
    users = [c.username for c in store.candidates(HOST, (("team-a", "other"), ("team-a", "regcred")))]
    assert users == ["alice", "scanner"]
    assert [c.username for c in store.candidates(HOST, (("team-b", "regcred"),))] == ["bob", "scanner"]
    assert [c.username for c in store.candidates(HOST, ())] == ["scanner"]  # no secret: never team-a's
    assert store.candidates("elsewhere.example", (("team-b", "regcred"),)) == ()  # anonymous
    assert store.candidates(HOST, (("team-b", "missing"),)) == store.candidates(HOST, ())


def test_equal_credentials_in_two_namespaces_are_one_credential_set() -> None:
    store = _store()
    assert store.candidates(HOST, (("team-a", "regcred"),)) == store.candidates(HOST, (("team-c", "copy"),))
    assert store.candidates(HOST, (("team-a", "regcred"),)) != store.candidates(HOST, (("team-b", "regcred"),))


def test_describe_names_secrets_never_their_contents() -> None:
    store = _store()
    text = store.describe(HOST, (("team-a", "other"), ("team-a", "regcred")))
    assert text == "pull secret team-a/regcred, the scanner's docker config"
    assert "alice" not in text and CredentialStore().describe(HOST) == "no credentials (anonymous)"
