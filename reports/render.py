"""Render a scan (or the fleet) as one self-contained HTML file, as CSV, or as the JSON document.

HTML: Jinja2 with ``PackageLoader`` (templates ship in the wheel), autoescaping for every template
and ``StrictUndefined``. The page carries its CSS inline, draws charts as inline SVG, loads nothing
(a ``Content-Security-Policy`` of ``default-src 'none'`` makes sure of it) and runs no script.

JSON is :func:`scanner.document.scan_document` (``schema_version`` 1), nothing else.
CSV is one row per container, with spreadsheet formula injection neutralised.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jinja2

from scanner import __version__
from scanner.clock import Clock, system_clock
from scanner.document import iter_scan_json
from scanner.errors import StoreError
from scanner.models import RunningImage, ScanResult
from scanner.reports import view

if TYPE_CHECKING:
    from scanner.store import Store

TREND_SCANS = view.TREND_SCANS

CSV_COLUMNS = (
    "cluster", "scan_id", "namespace", "workload_kind", "workload_name", "pod", "container", "container_type",
    "image", "digest", "status", "compliant", "reason", "reasons", "rule", "signers", "not_after", "expiring",
    "admission_cause", "admission_policy",
)
# What a spreadsheet may read as the start of a formula (OWASP "CSV Injection", ASVS 5.0 V1.2.10):
# = + - @ tab CR LF NUL, the full-width (U+FF1D/0B/0D/20), small (U+FE66/62/63/6B) and minus-sign
# (U+2212) forms that some spreadsheets fold to them, and | (DDE in older Excel).
FORMULA_CHARS = "=+-@\t\r\n\x00|\uff1d\uff0b\uff0d\uff20\ufe66\ufe62\ufe63\ufe6b\u2212"
# Before it, what a reader skips or a cell may begin with: spaces (ASCII, no-break, ideographic),
# quotes, and the control characters that are not formula characters themselves.
_SKIPPED = "[\\x01-\\x08\\x0b\\x0c\\x0e-\\x20\"'\\u00a0\\u3000\\u2000-\\u200b\\ufeff]"
# A formula character at the start of the cell or of anything a spreadsheet may take for a new cell or
# row: after ; tab CR LF (a ';'-locale reader splits an unquoted ';'; a raw line break starts a row), with
# skipped characters between.
_FORMULA_START = re.compile(
    "(?:^|(?<=[;\\t\\r\\n]))(" + _SKIPPED + "*?)(?=[" + re.escape(FORMULA_CHARS) + "])")


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("scanner.reports", "templates"),
        # Templates are named *.html.j2 / *.css: escape everything whatever its name (a CSS include has
        # no expressions, so escaping it changes nothing).
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "htm", "xml", "j2"), default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["short"] = view.short_digest
    return env


def _css() -> str:
    loader = environment().loader
    assert loader is not None
    source, _, _ = loader.get_source(environment(), "report.css")
    return source


# ----------------------------------------------------------------------------------------------
# HTML


def _history(store: Store | None, cluster: str, limit: int = TREND_SCANS) -> list[view.HistoryPoint]:
    if store is None:
        return []
    return [view.HistoryPoint(s.id, s.started_at, s.compliant, s.total) for s in store.history(cluster, limit)]


def _previous(store: Store | None, result: ScanResult) -> ScanResult | None:
    if store is None:
        return None
    if result.scan_id is not None:
        prev = store.previous_scan_id(result.scan_id)
    else:  # an unstored scan: compare with the newest stored one of the cluster
        prev = store.latest_scan_id(result.cluster)
    return store.load_scan(prev) if prev is not None else None


def report_model(result: ScanResult, store: Store | None = None, *, policy_summary: Mapping[str, Any] | None = None,
                 clock: Clock = system_clock) -> view.Report:
    """The view model of ``result``'s report, with history and changes from ``store`` when given."""
    return _model(result, _previous(store, result), store, policy_summary=policy_summary, clock=clock)


def _model(result: ScanResult, previous: ScanResult | None, store: Store | None, *,
           policy_summary: Mapping[str, Any] | None, clock: Clock) -> view.Report:
    return view.build_report(
        result,
        previous=previous,
        history=_history(store, result.cluster),
        policy_summary=policy_summary,
        generated_at=clock(),
        generator_version=__version__,
    )


def render_report(model: view.Report) -> str:
    return environment().get_template("report.html.j2").render(r=model, css=_css())


def html_for_result(result: ScanResult, store: Store | None, *, policy_summary: Mapping[str, Any] | None = None,
                    clock: Clock = system_clock) -> str:
    """The HTML report of a scan just run (the CLI's ``scan --report``)."""
    return render_report(report_model(result, store, policy_summary=policy_summary, clock=clock))


def render_html(store: Store, scan_id: int, *, policy_summary: Mapping[str, Any] | None = None,
                clock: Clock = system_clock) -> str:
    """The HTML report of stored scan ``scan_id``. Raises StoreError when there is no such scan.
    The scan and the previous one (for the changes) are read together: they share most of their rows."""
    prev = store.previous_scan_id(scan_id)
    if prev is None:
        return html_for_result(store.load_scan(scan_id), store, policy_summary=policy_summary, clock=clock)
    result, previous = store.load_scans([scan_id, prev])
    return render_report(_model(result, previous, store, policy_summary=policy_summary, clock=clock))


def render_fleet_html(store: Store, *, clock: Clock = system_clock) -> str:
    """One report across every cluster of the database: a row per cluster from its latest scan."""
    rows: list[tuple[str, Any, list[view.HistoryPoint]]] = []
    for cluster in store.clusters():
        latest = store.latest_scan_id(cluster, include_partial=True)
        summary = store.scan_summary(latest) if latest is not None else None
        rows.append((cluster, summary, _history(store, cluster, 20) if summary is not None else []))
    now = clock()
    model = view.build_fleet(rows, generated_at=now, generator_version=__version__, now=now)
    return environment().get_template("fleet.html.j2").render(f=model, css=_css())


# ----------------------------------------------------------------------------------------------
# JSON and CSV


def json_for_result(result: ScanResult) -> str:
    """The scan's document (:func:`scanner.document.scan_document`) and a newline, written by the one
    encoder of the document (``scanner.document.iter_scan_json``, what ``scan -o json`` writes): json's
    indented encoder is pure Python, a third of a 10,000-pod report's wall time."""
    return "".join(iter_scan_json(result)) + "\n"


def render_json(store: Store, scan_id: int) -> str:
    """The scan's ``schema_version`` JSON document (the same as ``sigaudit scan -o json``)."""
    return json_for_result(store.load_scan(scan_id))


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run: a formula character (= + - @, tab, CR, or their
    full-width forms) at the start of the cell gets a quote before it, and so does one after a
    semicolon, tab or line break inside the cell.

    OWASP "CSV Injection": prefixing a single quote makes Excel, LibreOffice and Sheets show text. The
    inside of a cell matters too: a spreadsheet whose list separator is ';' (most European locales)
    splits ``x;=HYPERLINK(…)`` — an image name the API server accepts from any tenant — into two cells
    whatever the quoting, and one whose record ends at a raw line break starts a row with what follows.
    """
    text = "" if value is None else str(value)
    return _FORMULA_START.sub(r"\1'", text)


def csv_writer(out: io.StringIO) -> Any:
    """The one CSV writer of sigaudit: every field quoted (a ';' or tab locale never splits a cell), CRLF
    records; write rows through :func:`csv_row` so every cell is neutralised."""
    return csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_ALL)


def csv_records(text: str) -> list[dict[str, str]]:
    """The rows of a CSV written here, by column name (verify-evidence compares them with scan.json)."""
    return list(csv.DictReader(io.StringIO(text)))


def csv_row(values: Iterable[object]) -> list[str]:
    return [csv_cell(x) for x in values]


def _iso(value: datetime | None) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


def csv_for_result(result: ScanResult) -> str:
    """One row per container, sorted by namespace, workload, pod and container."""
    rows: list[tuple[Any, ...]] = []
    for v in result.verdicts:
        img = v.image
        digest = img.digest if isinstance(img, RunningImage) else ""
        signers = "; ".join(sorted({s.signer for s in v.signatures if s.signer and s.outcome.value == "passed"}))
        reasons = " | ".join(v.reasons)
        for c in img.containers:
            rows.append((
                result.cluster, result.scan_id if result.scan_id is not None else "", c.namespace, c.workload.kind,
                c.workload.name, c.pod, c.container, c.container_type.value, c.image, digest, v.status.value,
                "true" if v.compliant else "false", v.headline, reasons, v.rule or "", signers, _iso(v.not_after),
                "true" if v.expiring else "false",
                v.admission.likely_cause.value if v.admission else "", v.admission.policy if v.admission else "",
            ))
    rows.sort(key=lambda r: (r[2], r[3], r[4], r[5], r[6], r[8]))
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(csv_row(CSV_COLUMNS))
    for r in rows:
        writer.writerow(csv_row(r))
    return out.getvalue()


def render_csv(store: Store, scan_id: int) -> str:
    return csv_for_result(store.load_scan(scan_id))


__all__ = [
    "CSV_COLUMNS",
    "StoreError",
    "csv_cell",
    "csv_for_result",
    "csv_row",
    "csv_writer",
    "html_for_result",
    "json_for_result",
    "render_csv",
    "render_fleet_html",
    "render_html",
    "render_json",
    "report_model",
]
