"""Database URLs: the default location, the PostgreSQL driver, and passwords kept out of messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.errors import ConfigError, StoreError
from scanner.store import default_db_url, display_url, mask_password, open_store
from scanner.store.engine import describe_db_error, parse_url


def test_sigaudit_db_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGAUDIT_DB", "postgresql://u@h/db")
    monkeypatch.setenv("SIGAUDIT_DATA_DIR", "/nonexistent")
    assert default_db_url() == "postgresql://u@h/db"


def test_data_dir_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIGAUDIT_DB", raising=False)
    monkeypatch.setenv("SIGAUDIT_DATA_DIR", str(tmp_path / "a" / "b"))
    assert default_db_url() == f"sqlite:///{tmp_path}/a/b/sigaudit.db"
    assert (tmp_path / "a" / "b").is_dir()


def test_xdg_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SIGAUDIT_DB", raising=False)
    monkeypatch.delenv("SIGAUDIT_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_url() == f"sqlite:///{tmp_path}/xdg/sigaudit/sigaudit.db"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_url() == f"sqlite:///{tmp_path}/home/.local/share/sigaudit/sigaudit.db"
    assert (tmp_path / "home" / ".local" / "share" / "sigaudit").is_dir()


@pytest.mark.parametrize("url", ["postgresql://u:p@h:5432/d", "postgres://u:p@h/d",
                                 "postgresql+psycopg://u:p@h/d"])
def test_postgresql_means_psycopg3(url: str) -> None:
    assert parse_url(url).drivername == "postgresql+psycopg"


def test_sqlite_url_is_kept() -> None:
    assert parse_url("sqlite:////tmp/x.db").drivername == "sqlite"


@pytest.mark.parametrize("url", ["mysql://u:p@h/d", "not a url"])
def test_unsupported_urls_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_url(url)
    assert ":p@" not in str(err.value)


def test_passwords_are_masked() -> None:
    assert mask_password("failed for postgresql://bob:s3cr%40t@db:5432/x") == \
        "failed for postgresql://bob:***@db:5432/x"
    assert "s3cret" not in display_url("postgresql+psycopg://bob:s3cret@db/x")
    err = describe_db_error("cannot connect to", "postgresql://bob:s3cret@db/x",
                            RuntimeError("password s3cret rejected"))
    assert "s3cret" not in str(err) and "***" in str(err)


def test_sqlite_in_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store(f"sqlite:///{tmp_path}/missing/dir/sigaudit.db")


def test_a_password_given_as_a_query_parameter_is_masked() -> None:
    # libpq reads ?password= like the userinfo's password; messages must hide both.
    url = "postgresql://bob@db/x?password=Qu3ryS3cret&sslmode=require"
    assert "Qu3ryS3cret" not in display_url(url) and "sslmode=require" in display_url(url)
    err = describe_db_error("cannot connect to", url, RuntimeError("password Qu3ryS3cret rejected"))
    assert "Qu3ryS3cret" not in str(err) and "password=***" in str(err)


def test_an_unencoded_at_sign_in_the_password_is_masked_whole() -> None:
    with pytest.raises(ConfigError) as err:
        parse_url("postgresql://bob:p@ss:W0rd@db:5432/x")
    assert "ss:W0rd" not in str(err.value)
    assert mask_password("failed for postgresql://bob:p@ss:W0rd@db/x") == "failed for postgresql://bob:***@db/x"
