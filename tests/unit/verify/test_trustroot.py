"""The Sigstore public-good root when the TUF refresh fails.

TUF refuses cached metadata past its expiry so that an attacker who blocks the repository cannot
keep a client on an old root (a "freeze"): one that still trusts a Fulcio CA or a Rekor key that a
TUF update has since retired. Falling back to sigstore-python's cache must keep that rule; only an
explicit offline setting (air-gapped clusters) uses the cache as it is. The refresh failure is
real (no repository is reachable: the TUF client's own network call is replaced by a failure);
the cache is sigstore-python's, in a temporary home.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
from scanner.verify.trustroot import public_good_trust


@pytest.fixture
def tuf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from sigstore._internal.tuf import DEFAULT_TUF_URL, _get_dirs
    from sigstore.errors import TUFError
    from sigstore.models import ClientTrustConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    real = ClientTrustConfig.production.__func__  # type: ignore[attr-defined]

    def production(cls: Any, offline: bool = False) -> Any:
        if not offline:
            raise TUFError("Failed to refresh TUF metadata")  # the repository is blocked
        return real(cls, offline=True)

    monkeypatch.setattr(ClientTrustConfig, "production", classmethod(production))
    metadata_dir, _ = _get_dirs(DEFAULT_TUF_URL)
    metadata_dir.mkdir(parents=True, exist_ok=True)
    return metadata_dir


def _timestamp(metadata_dir: Path, expires: datetime) -> None:
    (metadata_dir / "timestamp.json").write_text(json.dumps(
        {"signed": {"_type": "timestamp", "expires": expires.strftime("%Y-%m-%dT%H:%M:%SZ"), "version": 1}}))


def test_a_cache_never_refreshed_is_not_used_when_the_refresh_fails(tuf_home: Path) -> None:
    with pytest.raises(ConfigError, match=r"never refreshed.*SIGAUDIT_SIGSTORE_OFFLINE=1"):
        public_good_trust(offline=False)


def test_an_expired_cache_is_not_used_when_the_refresh_fails(tuf_home: Path) -> None:
    _timestamp(tuf_home, datetime.now(UTC) - timedelta(hours=1))
    with pytest.raises(ConfigError, match="TUF metadata expired at"):
        public_good_trust(offline=False)


def test_a_current_cache_is_used_when_the_refresh_fails(tuf_home: Path) -> None:
    _timestamp(tuf_home, datetime.now(UTC) + timedelta(days=1))
    assert public_good_trust(offline=False).root._inner.tlogs


def test_offline_by_choice_uses_the_cache_as_it_is(tuf_home: Path) -> None:
    assert public_good_trust(offline=True).root._inner.tlogs
