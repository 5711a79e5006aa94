"""``sigaudit report``: write a stored scan (or the fleet) as HTML, JSON, CSV, or policy-report objects
(OpenReports / PolicyReport YAML, for GitOps and offline use).

Exit codes, as for ``sigaudit scan``: 0 written, 2 usage error, 3 failure (database unreachable or
not migrated, no such scan, output not writable). Never 1: a report of a non-compliant scan is a
successful report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from scanner.errors import StoreError

EXIT_USAGE, EXIT_FAILED = 2, 3


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"sigaudit: error: {message}", err=True)
    sys.exit(code)


def _scan_id(store: object, scan: str, cluster: str | None) -> int:
    from scanner.store import Store

    assert isinstance(store, Store)
    if scan == "latest":
        found = store.latest_scan_id(cluster, include_partial=True)
        if found is None:
            where = f"of cluster {cluster!r} " if cluster else ""
            _fail(f"there is no finished scan {where}in {store.url}", EXIT_FAILED)
        return found
    try:
        wanted = int(scan)
    except ValueError:
        _fail(f"--scan must be a scan id or 'latest', not {scan!r}", EXIT_USAGE)
    summary = store.scan_summary(wanted)  # raises StoreError when missing
    if cluster is not None and summary.cluster != cluster:
        _fail(f"scan {wanted} belongs to cluster {summary.cluster!r}, not {cluster!r}", EXIT_USAGE)
    return wanted


@click.command(context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL (default: SQLite in $SIGAUDIT_DATA_DIR).")
@click.option("--scan", "scan", default="latest", help="Scan id, or 'latest' (of --cluster when given).")
@click.option("--cluster", default=None, help="Cluster whose latest scan to report.")
@click.option("--fleet", is_flag=True, help="One HTML report across every cluster (latest scan of each).")
@click.option("--format", "fmt", type=click.Choice(["html", "json", "csv", "openreports", "policyreport"]),
              default="html", help="openreports / policyreport: the scan's policy-report objects as multi-document "
                                   "YAML (what `--reports` applies).")
@click.option("--out", "out", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              help="Output file ('-' for stdout).")
def command(db_url: str | None, scan: str, cluster: str | None, fleet: bool, fmt: str, out: str) -> None:
    """Write the report of a stored scan: HTML for people, JSON and CSV for pipelines and spreadsheets."""
    if fleet and fmt != "html":
        _fail("--fleet writes HTML only (use --format json or csv per scan)", EXIT_USAGE)
    if fleet and scan != "latest":
        _fail("--fleet reports the latest scan of every cluster; --scan does not apply", EXIT_USAGE)
    from scanner import store as store_mod
    from scanner.reports import render
    from scanner.store.engine import parse_url

    try:
        url = db_url or store_mod.default_db_url()
        if url.startswith("sqlite"):
            path = parse_url(url).database
            if path and path != ":memory:" and not Path(path).exists():
                _fail(f"there is no database at {path} (run a scan first, or pass --db)", EXIT_FAILED)
        store = store_mod.open_store(url)
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    try:
        store.check_schema()
        if fleet:
            text = render.render_fleet_html(store)
        else:
            scan_id = _scan_id(store, scan, cluster)
            if fmt in ("openreports", "policyreport"):
                from scanner.clusterreports import FLAVORS, build_reports, to_yaml

                text = to_yaml(build_reports(store.load_scan(scan_id), FLAVORS[fmt]))
            else:
                text = {"html": render.render_html, "json": render.render_json, "csv": render.render_csv}[fmt](
                    store, scan_id)
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    finally:
        store.close()
    if out == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(out).write_text(text, encoding="utf-8", newline="")
    except OSError as exc:
        _fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_FAILED)
    click.echo(f"sigaudit: {'fleet ' if fleet else ''}{fmt} report written to {out}", err=True)
