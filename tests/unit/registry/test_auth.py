"""Registry credentials from docker config.json and pull secrets: a malformed file is a configuration
error (exit 2), one tenant's malformed pull secret is ignored with a warning, and neither is a crash."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
from scanner.registry.auth import CredentialStore, parse_docker_config

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
    assert store.lookup("r.io", (("tenant-a", "broken"),)).username == "user"  # the node's config, as kubelet
    assert store.lookup("r.io", (("tenant-b", "fine"),)).username == "b"
