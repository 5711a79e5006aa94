"""scanner.verify.kms against an attacker: what a key that could not be fetched says about itself."""

from __future__ import annotations

import pytest

from scanner.verify.kms import KmsKeyUnavailable, fetch_public_key_pem


def test_vault_credentials_in_vault_addr_are_never_repeated(monkeypatch) -> None:
    """The message becomes the reason of every image the key judges (JSON, reports, the database)."""
    monkeypatch.setenv("VAULT_ADDR", "https://admin:hunter2@127.0.0.1:9")
    monkeypatch.setenv("VAULT_TOKEN", "s.token")
    with pytest.raises(KmsKeyUnavailable, match="VAULT_ADDR carries credentials") as refused:
        fetch_public_key_pem("hashivault://attestor")
    assert "hunter2" not in str(refused.value) and "admin" not in str(refused.value)
