"""Every scan option exists in both faces (``sigaudit scan`` and ``sigaudit serve``), with the same
default and the same ``SIGAUDIT_<OPTION>`` variable, and reaches :class:`scanner.scan.ScanOptions`:
a scan option cannot again be added to one face and forgotten in the other (issue #18)."""

from __future__ import annotations

import dataclasses
import os

import click
import pytest

from scanner.cli import main
from scanner.options import scan_options_from
from scanner.scan import ScanOptions

FIELDS = [f.name for f in dataclasses.fields(ScanOptions)]


def _command(name: str) -> click.Command:
    ctx = click.Context(main)
    command = main.get_command(ctx, name)
    assert command is not None
    return command


@pytest.fixture(autouse=True)
def _no_sigaudit_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("SIGAUDIT_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("face", ["scan", "serve"])
def test_every_scan_option_is_an_option_of_the_face_with_the_use_cases_default(face: str) -> None:
    assert set(FIELDS) <= {p.name for p in _command(face).params}
    assert scan_options_from(_command(face).make_context(face, []).params) == ScanOptions()


def test_the_same_environment_gives_both_faces_the_same_scan_options(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"SIGAUDIT_REGISTRY_BUDGET": "7", "SIGAUDIT_DEADLINE": "10m", "SIGAUDIT_CACHE": "false",
           "SIGAUDIT_CLUSTER": "prod", "SIGAUDIT_CONCURRENCY": "3", "SIGAUDIT_PULL_SECRETS": "true",
           "SIGAUDIT_POLICY": "p.yaml", "SIGAUDIT_REGISTRY_CONCURRENCY": "2", "SIGAUDIT_PAGE_SIZE": "50",
           "SIGAUDIT_NAMESPACE": "a b", "SIGAUDIT_EXCLUDE_NAMESPACE": "kube-*"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    got = {face: scan_options_from(_command(face).make_context(face, []).params) for face in ("scan", "serve")}
    assert got["scan"] == got["serve"]
    assert got["serve"] == ScanOptions(cluster="prod", policy_path="p.yaml", registry_budget=7, deadline=600.0,
                                       cache=False, concurrency=3, pull_secrets=True, registry_concurrency=2,
                                       page_size=50, namespaces=("a", "b"), exclude_namespaces=("kube-*",))


@pytest.mark.parametrize("face", ["scan", "serve"])
def test_click_s_parameter_named_variables_still_work(face: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGAUDIT_POLICY_PATH", "old.yaml")
    monkeypatch.setenv("SIGAUDIT_NAMESPACES", "x")
    options = scan_options_from(_command(face).make_context(face, []).params)
    assert (options.policy_path, options.namespaces) == ("old.yaml", ("x",))


@pytest.mark.parametrize("face", ["scan", "serve"])
def test_retention_is_a_scan_option_of_both_faces(face: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from scanner.scan import Retention

    monkeypatch.setenv("SIGAUDIT_RETENTION", "1y2w")
    options = scan_options_from(_command(face).make_context(face, []).params)
    assert options.retention == Retention(keep=timedelta(days=365 + 14))


@pytest.mark.parametrize("bad", ["90", "90 d", "d", "-5d", "0d", "30m", "101y", "1.5d"])
def test_a_retention_that_is_not_an_age_is_a_usage_error(bad: str) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["scan", "--no-store", "--retention", bad])
    assert result.exit_code == 2 and "retention" in result.output.lower(), result.output


@pytest.mark.parametrize("face", ["scan", "serve"])
@pytest.mark.parametrize(("given", "want"), [("50Gi", 50 * 2**30), ("500Mi", 500 * 2**20), ("2T", 2 * 10**12),
                                             ("1GB", 10**9), ("67108864", 2**26)])
def test_db_capacity_is_a_scan_option_of_both_faces(face: str, given: str, want: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGAUDIT_DB_CAPACITY", given)
    assert scan_options_from(_command(face).make_context(face, []).params).db_capacity == want


@pytest.mark.parametrize("bad", ["50 Gi", "Gi", "-5Gi", "1.5Gi", "10Mi", "0", "50Gx"])
def test_a_db_capacity_that_is_not_a_size_is_a_usage_error(bad: str) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["scan", "--db-capacity", bad])
    assert result.exit_code == 2 and "db-capacity" in result.output.lower(), result.output


def test_db_capacity_without_the_database_is_a_usage_error() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["scan", "--no-store", "--db-capacity", "1Gi"])
    assert result.exit_code == 2 and "--db-capacity" in result.output, result.output


def test_the_default_workers_never_cap_the_default_registry_concurrency() -> None:
    """An image's registry requests are sequential, so fewer images at once than requests per registry
    would leave the per-registry concurrency (tuned against a remote registry, README "Performance")
    unreachable with one registry."""
    assert ScanOptions().concurrency >= ScanOptions().registry_concurrency


@pytest.mark.parametrize(("option", "bad"), [
    ("--db-capacity", "9" * 5000), ("--db-capacity", "\uff15\uff10Gi"), ("--db-capacity", "\u0665\u0660Gi"),
    ("--retention", "9" * 5000 + "d"), ("--retention", "\u0663\u0660d"), ("--retention", "\uff19\uff10d"),
])
def test_a_size_or_age_in_other_digits_or_thousands_of_them_is_a_usage_error(option: str, bad: str) -> None:
    # int() reads any script's digits, and past 4,300 of them raised ValueError: an unexpected failure
    # (exit 3) where a usage error belongs, or a value no Kubernetes quantity spells.
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["scan", option, bad])
    assert result.exit_code == 2 and option[2:] in result.output.lower(), result.output
