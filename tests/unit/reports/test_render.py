"""Rendering: hostile strings from the cluster and registries stay text, the HTML is self-contained
(no script, no fetch), CSV is one row per container and formula-safe, JSON is the scan document."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from scanner.clock import fixed_clock
from scanner.document import scan_document
from scanner.models import ContainerType, ExemptionKind, ExemptionRef, Status
from scanner.reports import render, view
from tests.harness.verdicts import GEN, T0, container, result, signature, verdict

XSS_NS = '"><img src=x onerror=alert(1)>'
SCRIPT = "<script>alert('pwned')</script>"


class TagCollector(HTMLParser):
    """Every element and attribute the browser would build from the document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend((tag, k, v or "") for k, v in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> TagCollector:
    p = TagCollector()
    p.feed(html)
    p.close()
    return p


def hostile_scan():
    evil = container(XSS_NS, f"pod-{SCRIPT}", f"c{SCRIPT}", kind=f"Kind{SCRIPT}", workload=XSS_NS)
    sig = signature(False, signer=f"CN={SCRIPT}", reason=f"bad {SCRIPT}",
                    details={"user_metadata": {"annotation": SCRIPT, "io.x/evil": XSS_NS},
                             "chain_sha256": [SCRIPT]})
    return result([
        verdict("evil", Status.INVALID, [evil], reasons=(f"reason {SCRIPT}", XSS_NS), sigs=[sig],
                repo=f"team/{XSS_NS}"),
        verdict("pause", Status.EXEMPT, [container("kube-system", "pause-1")],
                reasons=(f"exempt until 2027-01-01T00:00:00+00:00: {SCRIPT}, approved by {XSS_NS}",),
                exemptions=[ExemptionRef(ExemptionKind.POLICY, SCRIPT, datetime(2027, 1, 1, tzinfo=UTC), XSS_NS)]),
    ], cluster=f"prod{SCRIPT}")


def test_hostile_strings_are_escaped_everywhere_in_the_html() -> None:
    html = render.html_for_result(hostile_scan(), None, clock=fixed_clock(GEN))
    doc = parse(html)
    assert "script" not in doc.tags and "img" not in doc.tags
    assert not [a for a in doc.attrs if a[1].lower().startswith("on")]
    assert "<script" not in html and "<img" not in html
    # ... and still readable as text in the right places
    text = "".join(doc.text)
    assert SCRIPT in text and XSS_NS in text
    assert html.count("&lt;script&gt;") >= 8
    # The namespace shows up inside a quoted attribute too (data-namespace): escaped quotes there.
    assert f'data-namespace="{XSS_NS}"' not in html
    assert 'data-namespace="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"' in html


def test_hostile_strings_are_escaped_in_the_fleet_report(tmp_path) -> None:
    from scanner.store import open_store, upgrade

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    with open_store(url) as store:
        r = replace(hostile_scan(), sigaudit_version="0.1.0<script>")
        sid = store.begin_scan(r.cluster, r.started_at, r.policy_digest, r.sigaudit_version)
        store.finish_scan(sid, r)
        html = render.render_fleet_html(store, clock=fixed_clock(GEN))
    doc = parse(html)
    assert "script" not in doc.tags and "img" not in doc.tags
    assert "prod&lt;script&gt;" in html and "0.1.0&lt;script&gt;" in html
    assert '<td class="num" data-metric="non-compliant">1</td>' in html


def test_html_is_self_contained_and_scriptless() -> None:
    html = render.html_for_result(hostile_scan(), None, clock=fixed_clock(GEN))
    doc = parse(html)
    assert {"script", "link", "iframe", "object", "embed", "img", "base", "form"}.isdisjoint(doc.tags)
    for tag, name, value in doc.attrs:
        if name in ("href", "src", "action", "srcset"):
            assert value.startswith("#"), (tag, name, value)  # in-page anchors only
        if name == "xmlns":
            assert value == "http://www.w3.org/2000/svg"
    csp = [v for t, k, v in doc.attrs if t == "meta" and k == "content" and "default-src" in v]
    assert csp == ["default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"]
    assert "url(" not in html and "@import" not in html
    assert "svg" in doc.tags and "style" in doc.tags


def test_templates_autoescape_and_refuse_undefined_names() -> None:
    env = render.environment()
    tmpl = env.from_string("{{ x }}")
    assert tmpl.render(x="<b>") == "&lt;b&gt;"
    assert env.select_template(["report.html.j2"]).environment.autoescape("report.html.j2")  # type: ignore[operator]
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()


def test_rendering_is_deterministic_for_a_fixed_clock() -> None:
    r = hostile_scan()
    shuffled = replace(r, verdicts=tuple(reversed(r.verdicts)))
    clock = fixed_clock(GEN)
    assert render.html_for_result(r, None, clock=clock) == render.html_for_result(shuffled, None, clock=clock)


def test_html_sections_and_figures() -> None:
    r = result([
        verdict("a", Status.VERIFIED, [container("shop", "web-1")]),
        verdict("b", Status.UNSIGNED, [container("shop", "db-0", kind="StatefulSet", workload="db"),
                                       container("shop", "db-0", "init", ctype=ContainerType.INIT,
                                                 kind="StatefulSet", workload="db")]),
        verdict("c", Status.VERIFIED, [container("pay", "api-1")], expiring=True, not_after=T0 + timedelta(days=3)),
    ])
    html = render.html_for_result(r, None, clock=fixed_clock(GEN))
    for section in ("summary", "trend", "changes", "non-compliant", "expiring", "exemptions", "evidence",
                    "methodology"):
        assert f'<section id="{section}"' in html
    assert '<div class="figure" data-metric="compliant">2</div>' in html
    assert '<div class="figure" data-metric="non-compliant">1</div>' in html
    assert '<div class="figure" data-metric="ratio">66.7%</div>' in html
    assert "init (initContainer)" in html
    assert "2026-11-04 12:00:00Z" in html  # expiring not_after
    assert "No previous complete scan" in html
    assert "Only one finished scan" in html


@pytest.mark.parametrize("value, expected", [
    ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
    ("+1", "'+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t'=1"), ("\r=1", "'\r'=1"),
    ("safe", "safe"), ("", ""), ("a=b", "a=b"), (None, ""), (3, "3"), ("a, -b", "a, -b"),
    ('x;=HYPERLINK("http://evil","c")', 'x;\'=HYPERLINK("http://evil","c")'),  # a ';'-locale spreadsheet splits here
    ("pod\n=1+1", "pod\n'=1+1"), ('x; "=1', 'x; "\'=1'), ("\uff1dcmd", "'\uff1dcmd"),
    # Issue #27: a leading NUL (dropped by some readers), the other full-width, small and minus forms,
    # no-break / ideographic spaces before the formula.
    ("\x00=1+1", "'\x00=1+1"), ("\x01=1", "\x01'=1"), ("\uff0b1", "'\uff0b1"), ("\uff0d1", "'\uff0d1"),
    ("\uff20SUM(A1)", "'\uff20SUM(A1)"),
    ("\ufe661", "'\ufe661"), ("\u22121+1", "'\u22121+1"), ("\u00a0=1", "\u00a0'=1"), ("\u3000=1", "\u3000'=1"),
    ("x;\x00=1", "x;'\x00=1"), ("\n=1", "'\n'=1"),
])
def test_csv_cells_cannot_become_formulas(value, expected) -> None:
    assert render.csv_cell(value) == expected


def test_csv_is_one_row_per_container_and_formula_safe() -> None:
    r = result([
        verdict("a", Status.VERIFIED, [container("shop", "web-1"), container("shop", "web-2")]),
        verdict("evil", Status.UNSIGNED, [container("=cmd|' /C calc'!A0", "@pod", "-c", workload="+w")],
                reasons=("=1+1", "second")),
    ])
    text = render.csv_for_result(r)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == list(render.CSV_COLUMNS)
    assert len(rows) == 3
    evil = rows[0]  # '= sorts before 's'
    assert evil["namespace"] == "'=cmd|' /C calc'!A0" and evil["pod"] == "'@pod" and evil["container"] == "'-c"
    assert evil["workload_name"] == "'+w" and evil["reasons"] == "'=1+1 | second" and evil["reason"] == "'=1+1"
    assert evil["compliant"] == "false" and evil["status"] == "unsigned"
    web = rows[1]
    assert web["signers"] == "sha256:" + "ab" * 32 and web["compliant"] == "true" and web["scan_id"] == "2"
    assert web["digest"] == view.short_digest(web["digest"]).split(":")[0] + ":" + web["digest"].split(":")[1]
    for row in rows:
        for cell in row.values():
            assert not cell.startswith(("=", "+", "-", "@"))


def _spreadsheet_cells(text: str, separator: str) -> list[str]:
    """The cells a spreadsheet whose list separator is ``separator`` makes of ``text``, as Excel and
    LibreOffice read a CSV file: a cell is quoted only when its first character is a quote (a quote
    later in a cell is literal), and an unquoted line break ends the row."""
    cells: list[str] = []
    i, n = 0, len(text)
    while i < n:
        cell = ""
        if text[i] == '"':
            i += 1
            while i < n:
                if text[i] == '"' and i + 1 < n and text[i + 1] == '"':
                    cell, i = cell + '"', i + 2
                elif text[i] == '"':
                    i += 1
                    break
                else:
                    cell, i = cell + text[i], i + 1
        while i < n and text[i] not in (separator, "\r", "\n"):
            cell, i = cell + text[i], i + 1
        cells.append(cell)
        i += 1
    return cells


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_no_spreadsheet_locale_finds_a_formula_in_the_csv(separator: str) -> None:
    """Whatever list separator the spreadsheet that opens the file uses, no cell starts with a formula:
    a tenant's image ``x;=HYPERLINK(…)`` (the API server takes it) or a pod name with a line break."""
    r = result([
        verdict("a", Status.VERIFIED, [container("shop", "web-1")]),
        verdict("evil", Status.ERROR, [container("evil", 'p"\n=HYPERLINK("http://evil")', "c",
                                                 workload="w;@SUM(1)")],
                reasons=('image x;=HYPERLINK("http://evil","click") cannot be parsed', "a\t+1", "b\r-1")),
    ])
    cells = _spreadsheet_cells(render.csv_for_result(r), separator)
    assert len(cells) > 5
    formulas = [c for c in cells if c.lstrip(' "').startswith(("=", "+", "-", "@", "\uff1d"))]
    assert not formulas, formulas


def test_csv_reason_is_the_one_that_decided_the_verdict() -> None:
    v = replace(verdict("r", Status.REVOKED, [container("shop", "api-1")],
                        reasons=("key a: does not verify", "key b: revoked")), deciding_reason=1)
    [row] = list(csv.DictReader(io.StringIO(render.csv_for_result(result([v])))))
    assert row["reason"] == "key b: revoked" and row["reasons"] == "key a: does not verify | key b: revoked"


def test_json_is_the_scan_document() -> None:
    r = hostile_scan()
    assert json.loads(render.json_for_result(r)) == json.loads(json.dumps(scan_document(r)))


def test_the_json_report_is_the_document_without_json_s_python_encoder(monkeypatch) -> None:
    """Issue 20: ``report --format json`` of a 10,000-pod scan spent a third of its wall time in
    json.dumps(indent=2), whose encoder is pure Python. The report writes the document through its
    own writer (what ``scan -o json`` writes: one image per line, issue 19), never through that one."""
    r = hostile_scan()
    want = scan_document(r)

    def python_encoder(*args, **kwargs):
        raise AssertionError("the report's JSON ran json's pure-Python (indented) encoder")

    monkeypatch.setattr(json.encoder, "_make_iterencode", python_encoder)
    text = render.json_for_result(r)
    assert text.endswith("}\n")
    assert json.dumps(json.loads(text)) == json.dumps(want)  # the same document, keys in the same order


def test_every_csv_field_is_quoted() -> None:
    """Issue #27: cells were quoted only when needed, so ``x;=1+1;y`` went out bare and a ';'-locale
    spreadsheet split it; every field, the header included, is quoted now."""
    r = result([verdict("a", Status.VERIFIED, [container("shop", "web-1")])])
    for line in render.csv_for_result(r).split("\r\n")[:-1]:
        fields = next(csv.reader([line]))
        assert line == ",".join('"' + f.replace('"', '""') + '"' for f in fields), line


def test_only_the_report_renderer_writes_csv() -> None:
    """One CSV writer (scanner.reports.render.csv_writer, which neutralises every cell): any other module that
    imports the csv module to write (the server once had its own, unprotected fallback) fails here."""
    import ast
    from pathlib import Path

    root = Path(render.__file__).resolve().parents[1]
    offenders = []
    for path in [*root.joinpath("scanner").rglob("*.py"), *root.joinpath("reports").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import | ast.ImportFrom) else []
            mod = node.module if isinstance(node, ast.ImportFrom) else None
            if ("csv" in names or mod == "csv") and path.name != "render.py":
                offenders.append(str(path.relative_to(root)))
    assert not offenders, offenders
