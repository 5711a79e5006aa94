"""``sigaudit report`` against a real SQLite store: formats, scan selection, fleet, and exit codes
(2 usage, 3 failure) that never blur with the scan's own codes."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.models import Status
from scanner.reports import render
from scanner.store import open_store, upgrade
from tests.harness.verdicts import T0, container, result, verdict

pytestmark = pytest.mark.integration


@pytest.fixture
def db(tmp_path: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'sigaudit.db'}"
    upgrade(url)
    web = [container("shop", "web-1"), container("shop", "web-2")]
    first = result([verdict("a", Status.VERIFIED, web), verdict("b", Status.UNSIGNED, [container("pay", "api-1")])],
                   scan_id=None, at=T0)
    second = result([verdict("a", Status.UNSIGNED, web), verdict("b", Status.VERIFIED, [container("pay", "api-1")]),
                     verdict("c", Status.INVALID, [container("pay", "=evil-1")])], scan_id=None,
                    at=T0 + timedelta(days=1))
    other = replace(first, cluster="edge", started_at=T0 + timedelta(hours=5))
    ids = {}
    with open_store(url) as store:
        for name, r in (("first", first), ("second", second), ("edge", other)):
            sid = store.begin_scan(r.cluster, r.started_at, r.policy_digest, "0.1.0")
            store.finish_scan(sid, r)
            ids[name] = sid
    return {"url": url, "ids": ids, "tmp": tmp_path}


def run(*args: str) -> Any:
    from scanner.cli import main

    return CliRunner().invoke(main, ["report", *args], catch_exceptions=False)


def test_report_is_registered_on_the_sigaudit_command() -> None:
    import click

    from scanner.cli import main
    from scanner.reports import cli as report_cli

    # Loaded on demand (the report module is not imported by a plain scan).
    assert "report" in main.list_commands(click.Context(main))
    assert main.get_command(click.Context(main), "report") is report_cli.command


def test_latest_scan_of_a_cluster_in_each_format(db: dict[str, Any]) -> None:
    out = db["tmp"] / "r.html"
    res = run("--db", db["url"], "--cluster", "prod", "--out", str(out))
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert f"#{db['ids']['second']}</dd>" in html
    assert f"Compared with scan #{db['ids']['first']}" in html
    assert 'data-metric="signature-disappeared">1<' in html and 'data-metric="fixed">1<' in html
    assert 'data-metric="non-compliant">2<' in html

    res = run("--db", db["url"], "--cluster", "prod", "--format", "csv", "--out", "-")
    assert res.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 4 and {r["scan_id"] for r in rows} == {str(db["ids"]["second"])}
    assert "'=evil-1" in [r["pod"] for r in rows]

    res = run("--db", db["url"], "--scan", str(db["ids"]["first"]), "--format", "json")
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1 and doc["scan"]["id"] == db["ids"]["first"]
    with open_store(db["url"]) as store:
        assert res.stdout == render.render_json(store, db["ids"]["first"])


@pytest.mark.parametrize(("fmt", "kind"), [("openreports", "Report"), ("policyreport", "PolicyReport")])
def test_a_stored_scan_as_policy_report_objects(db: dict[str, Any], fmt: str, kind: str) -> None:
    import yaml

    res = run("--db", db["url"], "--scan", str(db["ids"]["second"]), "--format", fmt)
    assert res.exit_code == 0, res.output
    docs = list(yaml.safe_load_all(res.stdout))
    assert [(d["kind"], d["metadata"]["namespace"]) for d in docs] == [(kind, "pay"), (kind, "shop")]
    results = {d["metadata"]["namespace"]: [r["result"] for r in d["results"]] for d in docs}
    assert sorted(results["pay"]) == ["fail", "pass"] and results["shop"] == ["fail"]
    assert {r["properties"]["scan_id"] for d in docs for r in d["results"]} == {str(db["ids"]["second"])}


def test_fleet_has_a_row_per_cluster(db: dict[str, Any]) -> None:
    res = run("--db", db["url"], "--fleet")
    assert res.exit_code == 0
    assert res.stdout.count("<tr data-cluster=") == 2
    assert 'data-cluster="edge"' in res.stdout and 'data-cluster="prod"' in res.stdout


@pytest.mark.parametrize("args, code, message", [
    (["--scan", "999"], 3, "there is no scan 999"),
    (["--scan", "abc"], 2, "--scan must be a scan id or 'latest'"),
    (["--cluster", "nowhere"], 3, "no finished scan of cluster 'nowhere'"),
    (["--fleet", "--format", "csv"], 2, "--fleet writes HTML only"),
    (["--fleet", "--scan", "1"], 2, "--scan does not apply"),
    (["--format", "pdf"], 2, "Invalid value for '--format'"),
])
def test_errors_exit_2_for_usage_and_3_for_failures(db: dict[str, Any], args: list[str], code: int,
                                                     message: str) -> None:
    res = run("--db", db["url"], *args)
    assert res.exit_code == code
    assert message in res.output


def test_scan_of_another_cluster_is_a_usage_error(db: dict[str, Any]) -> None:
    res = run("--db", db["url"], "--scan", str(db["ids"]["edge"]), "--cluster", "prod")
    assert res.exit_code == 2 and "belongs to cluster 'edge'" in res.output


def test_missing_database_is_a_failure_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    res = run("--db", f"sqlite:///{path}")
    assert res.exit_code == 3 and "there is no database" in res.output
    assert not path.exists()


def test_unmigrated_database_is_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    res = run("--db", f"sqlite:///{path}")
    assert res.exit_code == 3


def test_unwritable_output_is_a_failure(db: dict[str, Any]) -> None:
    res = run("--db", db["url"], "--out", str(db["tmp"] / "no" / "such" / "dir" / "r.html"))
    assert res.exit_code == 3 and "cannot write" in res.output
