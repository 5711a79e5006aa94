"""Registry credentials stay with their owner: a pod gets its own pull secrets and the scanner's own
credentials, in the kubelet's order, never another namespace's. A malformed docker config.json is a
configuration error (exit 2); one tenant's malformed pull secret is ignored with a warning; neither crashes."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
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


GOOD = base64.b64encode(b"user:pa55").decode()


@pytest.mark.parametrize("field", ["auth", "username", "password", "identitytoken"])
@pytest.mark.parametrize("value", [12345, ["dXNlcjpw"], {"a": 1}, True, 1.5])
def test_a_non_string_field_is_a_config_error(field: str, value: Any) -> None:
    entry: dict[str, Any] = {"auth": GOOD, field: value}
    with pytest.raises(ConfigError, match=rf"auths\['r.io'\]\.{field} is a \w+, not a string") as info:
        parse_docker_config(json.dumps({"auths": {"r.io": entry}}).encode(), "config.json")
    assert "pa55" not in str(info.value) and GOOD not in str(info.value)


def test_string_fields_still_work() -> None:
    creds = parse_docker_config(json.dumps({"auths": {
        "https://r.io/v1/": {"auth": GOOD}, "q.io": {"username": "u", "password": "p"},
        "t.io": {"identitytoken": "tok"}, "skip.io": "not an object"}}).encode(), "c")
    assert (creds["r.io"].username, creds["r.io"].password) == ("user", "pa55")
    assert creds["q.io"].password == "p" and creds["t.io"].identity_token == "tok" and "skip.io" not in creds


def test_docker_config_with_a_non_string_auth_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"r.io": {"auth": 12345}}}))
    with pytest.raises(ConfigError, match=r"config\.json"):
        CredentialStore.from_docker_config(path)


def test_an_unreadable_docker_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()  # exists, cannot be read as a file
    with pytest.raises(ConfigError, match="cannot read docker config"):
        CredentialStore.from_docker_config(tmp_path / "config.json")


def test_one_tenants_malformed_pull_secret_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = CredentialStore(parse_docker_config(json.dumps({"auths": {"r.io": {"auth": GOOD}}}).encode(), "c"))
    caplog.set_level(logging.WARNING)
    store.add_pull_secret("tenant-a", "broken", json.dumps({"auths": {"r.io": {"auth": 12345}}}).encode())
    store.add_pull_secret("tenant-b", "fine", json.dumps({"auths": {"r.io": {"username": "b", "password": "x"}}})
                          .encode())
    assert any("tenant-a/broken" in r.getMessage() and "not a string" in r.getMessage() for r in caplog.records)
    # the scanner's own config only, as the kubelet would
    assert [c.username for c in store.candidates("r.io", (("tenant-a", "broken"),))] == ["user"]
    assert [c.username for c in store.candidates("r.io", (("tenant-b", "fine"),))] == ["b", "user"]
