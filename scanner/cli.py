"""The ``sigaudit`` command. The only module that exits the process.

Exit codes: 0 compliant, 1 non-compliant found, 2 usage/config error, 3 the scan failed or was partial;
141 stdout's reader went away (128 + SIGPIPE).
Every option also reads ``SIGAUDIT_<OPTION>`` from the environment. Data goes to stdout; progress
and logs to stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import gc
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

import click

from scanner import __version__
from scanner.errors import ConfigError, InventoryError, ParseError, ScanInProgress, SigauditError, StoreError
from scanner.options import age, duration, scan_options, scan_options_from

EXIT_OK, EXIT_VIOLATIONS, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
# stdout's reader went away before all of it was written (`sigaudit scan -o json | head -c 100`): what a shell
# reports for a process SIGPIPE ended (128 + 13), as `cat` or `grep` would. Never 1 ("non-compliant"), nor
# 0: the output was not delivered; not 3 either: the scan's own work was done (README "Exit codes").
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
log = logging.getLogger("sigaudit")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(
        level=max(level, logging.DEBUG), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("httpx", "httpcore", "kubernetes", "urllib3", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, level))
    # The cloud SDKs log request and reply bodies and headers at DEBUG (tokens, session tokens): never shown.
    from scanner.redact import install_log_redaction, quiet_sdk_loggers

    quiet_sdk_loggers()
    install_log_redaction()  # no log line carries a URL credential (user:password@, ?token=)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"sigaudit: error: {message}", err=True)
    sys.exit(code)


def _reader_gone() -> NoReturn:
    """stdout's reader stopped reading: no internal error, and nothing to say (its reader is gone). stdout is
    pointed at /dev/null first, so the interpreter's final flush of what is still buffered cannot raise
    again (the Python docs' "Note on SIGPIPE"); then exit :data:`EXIT_BROKEN_PIPE`, quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (AttributeError, OSError, ValueError):  # no real stdout (None, replaced, closed): nothing to flush
        pass
    sys.exit(EXIT_BROKEN_PIPE)


def _stdout_writes_whole() -> None:
    """Under ``PYTHONUNBUFFERED=1`` (the container image sets it) sys.stdout writes straight to the raw file, and
    its TextIOWrapper ignores how much a write took: a write cut short (its reader closed the pipe while it
    was blocked) silently drops the rest — no error, a truncated document and exit 0 or 1. A BufferedWriter
    between them writes everything or raises (BrokenPipeError: :func:`_reader_gone`). Line-buffered, and every
    command flushes what it wrote, so the output still goes out as it is written."""
    out = sys.stdout
    raw = getattr(out, "buffer", None)
    if not isinstance(out, io.TextIOWrapper) or not isinstance(raw, io.RawIOBase):
        return  # buffered already, or not a real file (click's test runner, pytest's capture)
    out.flush()
    # the old wrapper stays sys.__stdout__ (never collected, so never closing fd 1 behind the new one)
    sys.stdout = io.TextIOWrapper(io.BufferedWriter(raw), encoding=out.encoding, errors=out.errors,
                                  line_buffering=True)


def _flush_stdout() -> None:
    """What a command wrote reaches its reader now, inside the guard, not at the interpreter's exit (where a
    broken pipe is "Exception ignored" and exit 120)."""
    if sys.stdout is not None:
        sys.stdout.flush()


class _LazyGroup(click.Group):
    """Commands whose modules are heavy (the web server, the report renderer) are imported only when
    invoked: a CronJob's `sigaudit scan` does not pay for Starlette, uvicorn or Jinja2 at start-up.

    Also the one guard around every command (scan, serve, report, db, ...): whatever escapes a
    command ends in an exit code of the contract and one line on stderr, never in Python's exit 1
    with a traceback (1 means "non-compliant images found"). A closed stdout (its reader exited) is
    :func:`_reader_gone`, whichever command wrote to it and wherever (click's own answer, exit 1, would
    read as a verdict)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        _stdout_writes_whole()
        try:  # `sigaudit --help`/`--version` write while their options are parsed, before invoke
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            _reader_gone()

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                result = super().invoke(ctx)
            except (SystemExit, click.exceptions.Exit):
                _flush_stdout()
                raise
            _flush_stdout()
            return result
        except BrokenPipeError:
            _reader_gone()
        except click.exceptions.Exit:
            raise
        except click.Abort:
            _fail("interrupted", EXIT_FAILED)
        except click.ClickException as exc:
            if exc.exit_code != EXIT_VIOLATIONS:
                raise
            exc.show()  # click's generic errors exit 1, which here means "non-compliant": a usage error
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_FAILED)
        except ConfigError as exc:
            _fail(exc.diagnostics(), EXIT_USAGE)
        except SigauditError as exc:
            _fail(exc.diagnostics(), EXIT_FAILED)
        except Exception as exc:
            verbose = int(ctx.params.get("verbose") or 0)
            if verbose >= 2:
                click.echo(traceback.format_exc().rstrip(), err=True)
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            hint = "" if verbose >= 2 else " (-vv shows the traceback)"
            _fail(f"unexpected failure: {type(exc).__name__}: {first}{hint}", EXIT_FAILED)

    _lazy = {"serve": "scanner.server", "report": "scanner.reports.cli"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and cmd_name not in self.commands:
            try:
                module = __import__(self._lazy[cmd_name], fromlist=["command"])
            except ImportError as exc:
                return _unloadable(cmd_name, exc)
            self.add_command(module.command, cmd_name)
        return super().get_command(ctx, cmd_name)


def _unloadable(name: str, exc: ImportError) -> click.Command:
    """A command of the contract whose module cannot be imported (a broken or partial installation) still
    exists: it fails with exit 3 and says why, instead of click's "No such command" (exit 2, a usage error
    the user did not make)."""
    why = f"cannot load the {name} command: {type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"

    @click.command(name, help=why, add_help_option=False,
                   context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def unloadable() -> None:
        _fail(f"{why} (the installation is incomplete: reinstall sigaudit)", EXIT_FAILED)

    return unloadable


@click.group(
    cls=_LazyGroup,
    context_settings={"auto_envvar_prefix": "SIGAUDIT", "help_option_names": ["-h", "--help"], "show_default": True}
)
@click.version_option(__version__, prog_name="sigaudit")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def main(verbose: int) -> None:
    """Audit the signatures of the container images running in a Kubernetes cluster."""
    _setup_logging(verbose)


def _progress_printer(enabled: bool) -> Any:
    if not enabled:
        return None, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from scanner.table import PipeConsole

    console = PipeConsole(stderr=True)
    if not console.is_terminal:
        last: dict[str, int] = {}

        def plain(phase: str, done: int, total: int) -> None:
            step = max(1, total // 10)
            if done == total or done - last.get(phase, 0) >= step:
                last[phase] = done
                click.echo(f"sigaudit: {phase}: {done}/{total}", err=True)

        return plain, None
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task(phase, total=total)
        bar.update(tasks[phase], completed=done, total=total)

    return update, bar


@main.command(context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@scan_options()
@click.option("--db", "db_url", default=None, help="Database URL (default: SQLite in $SIGAUDIT_DATA_DIR).")
@click.option("--no-store", is_flag=True, help="Do not record the scan in a database.")
@click.option("-o", "--output", type=click.Choice(["table", "json", "openreports", "policyreport", "none"]),
              default="table", help="stdout: a table, the JSON document, or the verdicts as policy-report "
                                    "objects (multi-document YAML for kubectl apply / GitOps).")
@click.option("--json-out", type=click.Path(dir_okay=False), help="Also write the JSON document here.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the HTML report here.",
              envvar=["SIGAUDIT_REPORT", "SIGAUDIT_REPORT_PATH"])
@click.option("--pushgateway", default=None, help="Push metrics to this Prometheus Pushgateway URL.")
@click.option("--metrics-file", type=click.Path(dir_okay=False), help="Write metrics (text format) here.")
@click.option("--per-image-metrics", is_flag=True, help="Also export per-image series (high cardinality).")
@click.option(
    "--exit-zero-on-violations",
    is_flag=True,
    help="Exit 0 when the scan succeeded but found non-compliant images (CronJobs).",
)
@click.option("--progress/--no-progress", default=True, help="Progress on stderr.")
@click.option("--evidence", "evidence_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the scan's signed evidence pack (.tar.gz) here; needs --evidence-key and the store.")
@click.option("--evidence-key", default=None, help="The key signing the evidence pack: a PEM private key file or a "
                                                   "KMS URI (awskms://, gcpkms://, azurekms://, hashivault://).")
@click.option("--evidence-tsa-url", default=None, help="Timestamp the evidence pack's manifest signature by this "
                                                       "RFC 3161 TSA (http(s) URL).")
@click.option("--evidence-tsa-ca-cert", default=None, type=click.Path(dir_okay=False),
              help="With --evidence-tsa-url: the TSA's root certificate(s), PEM; the token is checked at build.")
def scan(**opts: Any) -> None:
    """Scan running pods once, verify their images, store and print the verdicts."""
    with one_shot_collector():
        code = run_scan_command(**opts)
    sys.exit(code)


# The cyclic collector's thresholds for one scan in its own process: a scan of 10,000 pods allocates
# millions of short-lived objects that form no cycles (pod dicts, containers, verdicts, rows); CPython's
# defaults (700, 10, 10) walked the whole heap 4-6 times, 0.3 CPU-s of a warm scan (issue 19): the older
# generations' multipliers are raised, so a full walk is rare. The young threshold stays CPython's: it
# counts objects, not bytes, and cyclic garbage waits for it. A registry's reply broken mid-body leaves
# urllib3's exceptions in a cycle with the partial body (up to the reply limit, MiB) in their frames:
# a young threshold of 50,000 let ~1 GB of them pile up over 150 such images (700: the default's ~0.2 GB).
ONE_SHOT_GC_THRESHOLDS = (700, 20, 100)


@contextlib.contextmanager
def one_shot_collector() -> Iterator[None]:
    """Fewer, larger collections while a one-shot scan runs; the previous thresholds after it. And an
    interpreter exit that does not walk the start-up heap (:func:`_collect_then_freeze`)."""
    global _EXIT_COLLECTOR_SET
    before = gc.get_threshold()
    gc.set_threshold(*ONE_SHOT_GC_THRESHOLDS)
    if not _EXIT_COLLECTOR_SET:  # once per process: a caller running many scans in process adds one handler
        _EXIT_COLLECTOR_SET = True
        atexit.register(_collect_then_freeze)
    try:
        yield
    finally:
        gc.set_threshold(*before)


_EXIT_COLLECTOR_SET = False


def _collect_then_freeze() -> None:
    """At interpreter exit (an ``atexit`` handler: after the scan's threads are joined, before the modules
    are torn down): collect every unreachable object once — the scan's cyclic garbage is finalised as it
    would have been — then freeze the survivors, so that the interpreter's own teardown no longer walks
    the whole heap (the modules, the policy, the scan's models) in the full collections it runs while
    it clears the modules: 0.09-0.20 CPU-s of a 2 CPU-s window scan, 0.03-0.05 with this (issue 19, README
    "Performance"). Nothing is skipped that a scan needs: the store is closed and every output file
    written and closed before the command returns, and what the teardown frees by reference count
    (most of it) is still freed and finalised; only cycles that first appear during the teardown
    itself are left to the operating system, as the process ends. Never ``os._exit``: the other
    ``atexit`` handlers (logging's flush, ``weakref.finalize``) and the teardown still run."""
    gc.collect()
    gc.freeze()


def run_scan_command(**opts: Any) -> int:
    """``sigaudit scan``: the options into the scan use case (:func:`scanner.scan.run_once`), its
    result out to stdout, files and metrics, and an exit code."""
    from scanner.document import write_scan_json
    from scanner.scan import load_inputs, run_once

    options = scan_options_from(opts)
    if opts["no_store"] and options.db_capacity is not None:
        _fail("--db-capacity is the database's: drop --no-store", EXIT_USAGE)
    if opts.get("evidence_path"):  # the pack's OCI layouts need each image's own manifest
        options = dataclasses.replace(options, image_manifests=True)
    try:
        inputs = load_inputs(options)
    except ConfigError as exc:
        _fail(exc.diagnostics(), EXIT_USAGE)
    except InventoryError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    for warning in inputs.policy.warnings:
        click.echo(f"sigaudit: warning: {warning}", err=True)
    if opts["no_store"] and options.recheck_after is not None:
        _fail("--recheck-after judges from the verification cache in the database: drop --no-store", EXIT_USAGE)
    if (opts.get("evidence_tsa_url") or opts.get("evidence_tsa_ca_cert")) and not opts.get("evidence_path"):
        _fail("--evidence-tsa-url / --evidence-tsa-ca-cert need --evidence", EXIT_USAGE)
    evidence_tsa_roots = _tsa_roots(opts.get("evidence_tsa_ca_cert"), "--evidence-tsa-ca-cert")
    if opts.get("evidence_path") and (opts["no_store"] or not opts.get("evidence_key")):
        _fail("--evidence needs --evidence-key and the database (the pack is built from the stored scan): "
              "give --evidence-key and drop --no-store", EXIT_USAGE)
    if opts["no_store"] and inputs.notify is not None:
        _fail("--notify needs the database (what is new is judged against the previous scan): drop --no-store",
              EXIT_USAGE)

    store = None
    if not opts["no_store"]:
        from scanner import store as store_mod

        try:
            url = opts["db_url"] or store_mod.default_db_url()
            if url.startswith("sqlite") and store_mod.current_revision(url) != store_mod.head_revision():
                store_mod.upgrade(url)  # a laptop or CronJob SQLite file migrates itself
            store = store_mod.open_store(url, capacity_bytes=options.db_capacity)
            store.check_schema()
        except StoreError as exc:
            _fail(exc.diagnostics(), EXIT_FAILED)

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()
        click.echo(f"sigaudit: received signal {signum}; stopping, the scan will not be recorded as complete", err=True)

    old_term = signal.signal(signal.SIGTERM, on_signal)
    progress, bar = _progress_printer(opts["progress"])
    if bar is not None:
        bar.start()
    scan_began = time.monotonic()
    try:
        result = run_once(options, store, inputs=inputs, stop=stop, progress=progress)
    except ScanInProgress as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    except (InventoryError, StoreError, ParseError, InterruptedError) as exc:
        # the use case has marked the scan failed; anything else goes to main's guard (exit 3)
        msg = exc.diagnostics() if isinstance(exc, SigauditError) else str(exc)
        _fail(f"scan failed: {msg}", EXIT_FAILED)
    finally:
        if bar is not None:
            bar.stop()
        signal.signal(signal.SIGTERM, old_term)

    # Every file, the metrics, the evidence pack and the store first; stdout last: a reader of stdout that
    # exits early (`| head`) ends the command there (exit 141) and must not cost any of them.
    if opts["json_out"]:
        with Path(opts["json_out"]).open("w", encoding="utf-8") as out:
            write_scan_json(result, out)
    _exports(result, store, opts, inputs.policy)
    evidence_failed = False
    if opts.get("evidence_path") and store is not None and result.scan_id is not None:
        from scanner.evidence.pack import write_pack

        # The pack is part of the run --deadline bounds: its KMS and TSA calls get the time the scan left.
        left = None if not options.deadline else max(options.deadline - (time.monotonic() - scan_began), 0.0)
        try:
            size = write_pack(store, result.scan_id, opts["evidence_key"], opts["evidence_path"],
                              tsa_url=opts.get("evidence_tsa_url"), tsa_roots=evidence_tsa_roots,
                              deadline_s=left, deadline_words="scan deadline reached (building the evidence pack)")
            click.echo(f"sigaudit: evidence pack written to {opts['evidence_path']} ({size} bytes)", err=True)
        except (OSError, SigauditError) as exc:
            msg = exc.diagnostics() if isinstance(exc, SigauditError) else str(exc)
            click.echo(f"sigaudit: error: evidence pack not written: {msg}", err=True)
            evidence_failed = True
    if store is not None:
        store.close()
    if evidence_failed:
        code = EXIT_FAILED
    elif result.state.value != "complete":
        for err in result.errors:
            click.echo(f"sigaudit: warning: {err}", err=True)
        code = EXIT_FAILED
    elif not all(v.compliant for v in result.verdicts) and not opts["exit_zero_on_violations"]:
        code = EXIT_VIOLATIONS
    else:
        code = EXIT_OK
    _write_stdout(result, opts["output"])
    return code


def _write_stdout(result: Any, output: str) -> None:
    """The scan's stdout (``-o``), flushed: the last thing a scan does (a broken pipe here ends the command)."""
    if output == "json":
        from scanner.document import write_scan_json

        write_scan_json(result, sys.stdout)
    elif output in ("openreports", "policyreport"):
        from scanner.clusterreports import FLAVORS, build_reports, to_yaml

        click.echo(to_yaml(build_reports(result, FLAVORS[output])), nl=False)
    elif output == "table":
        from scanner.table import print_table

        print_table(result)
    _flush_stdout()


def _exports(result: Any, store: Any, opts: dict[str, Any], policy: Any = None) -> None:
    """Metrics and reports after a scan; failures here are reported but do not change the verdicts."""
    if opts.get("metrics_file") or opts.get("pushgateway"):
        try:
            from scanner.metrics import export

            export.after_scan(
                result,
                store,
                metrics_file=opts.get("metrics_file"),
                pushgateway=opts.get("pushgateway"),
                per_image=bool(opts.get("per_image_metrics")),
            )
        except (ImportError, OSError, SigauditError) as exc:
            click.echo(f"sigaudit: warning: metrics export failed: {exc}", err=True)
    if opts.get("report_path"):
        try:
            from scanner.policy.loader import policy_summary
            from scanner.reports import render

            summary = policy_summary(policy) if policy is not None else None
            Path(opts["report_path"]).write_text(render.html_for_result(result, store, policy_summary=summary))
            click.echo(f"sigaudit: report written to {opts['report_path']}", err=True)
        except (ImportError, OSError, SigauditError) as exc:
            click.echo(f"sigaudit: warning: report failed: {exc}", err=True)


@main.group(context_settings={"auto_envvar_prefix": "SIGAUDIT"})
def db() -> None:
    """Database migrations and retention."""


@db.command("upgrade", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL.")
@click.option("--revision", default="head")
def db_upgrade(db_url: str | None, revision: str) -> None:
    """Apply migrations (idempotent)."""
    from scanner import store as store_mod

    url = db_url or store_mod.default_db_url()
    try:
        store_mod.upgrade(url, revision)
        click.echo(f"database at {store_mod.current_revision(url)}", err=True)
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)


@db.command("downgrade", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL.")
@click.argument("revision")
def db_downgrade(db_url: str | None, revision: str) -> None:
    """Revert migrations to REVISION (e.g. base)."""
    from scanner import store as store_mod

    url = db_url or store_mod.default_db_url()
    try:
        store_mod.downgrade(url, revision)
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)


@db.command("current", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL.")
def db_current(db_url: str | None) -> None:
    """Print the database's migration revision."""
    from scanner import store as store_mod

    try:
        click.echo(store_mod.current_revision(db_url or store_mod.default_db_url()) or "base")
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)


@db.command("prune", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL.")
@click.option("--keep", callback=age, default=None,
              help="Keep the detail of scans started within this age (e.g. 90d, 12w, 1y).")
@click.option("--keep-scans", type=click.IntRange(min=0), default=None,
              help="Keep the detail of each cluster's N newest scans (whatever their age).")
@click.option("--cluster", default=None, help="Only this cluster's scans (default: every cluster).")
@click.option("--keep-summaries", callback=age, default=None,
              help="Also delete the trend's summaries, older than this, of scans whose detail is gone "
                   "(default: keep them).")
def db_prune(db_url: str | None, keep: Any, keep_scans: int | None, cluster: str | None,
             keep_summaries: Any) -> None:
    """Delete old scans' detail (verdicts, containers, signatures) and give the space back.

    A scan is kept when --keep or --keep-scans keeps it; the newest complete scan of each cluster and
    every scan's summary (the report's trend) always stay. Deletes in small transactions: it works on
    a full disk. Prints what it did as JSON on stdout."""
    from datetime import UTC, datetime

    from scanner import store as store_mod

    if keep is None and keep_scans is None and keep_summaries is None:
        _fail("say what to keep: --keep AGE and/or --keep-scans N (or --keep-summaries AGE)", EXIT_USAGE)
    url = db_url or store_mod.default_db_url()
    try:
        if url.startswith("sqlite") and store_mod.current_revision(url) != store_mod.head_revision():
            store_mod.upgrade(url)  # as scan does: a SQLite file migrates itself
        with store_mod.open_store(url) as store:
            store.check_schema()
            now = datetime.now(UTC)
            result = store.prune(before=now - keep if keep is not None else None, keep_scans=keep_scans,
                                 cluster=cluster, summaries_before=now - keep_summaries if keep_summaries else None)
    except StoreError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    click.echo(json.dumps({
        "schema_version": 1, "scans_deleted": result.scans, "rows_deleted": result.rows,
        "cache_entries_deleted": result.cache_entries, "summaries_deleted": result.summaries,
        "file_bytes_before": result.file_bytes_before, "file_bytes_after": result.file_bytes_after,
    }, indent=2))


@main.command("check-policy", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.argument("policy_path", type=click.Path(dir_okay=False), required=False)
@click.option("--policy-from", "policy_from", multiple=True, help="Imported policies, as for scan.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), default=None)
@click.option("--context", default=None)
@click.option("--deadline", "deadline_s", callback=duration, default=None,
              help="Stop after this long (e.g. 30, 2m), as scan's --deadline: a read of the cluster's policies "
                   "(--policy-from KIND:cluster) not answered by then fails, naming it (exit 3).")
def check_policy(policy_path: str | None, policy_from: tuple[str, ...], kubeconfig: str | None,
                 context: str | None, deadline_s: float | None) -> None:
    """Validate a policy (and imports), load their keys, and print the rules sigaudit will apply."""
    from scanner.policy.loader import policy_summary
    from scanner.policy.sources import load_policies

    deadline = time.monotonic() + deadline_s if deadline_s else None
    try:
        policy = load_policies(policy_path, policy_from, kubeconfig=kubeconfig, context=context, deadline=deadline)
    except ConfigError as exc:
        _fail(exc.diagnostics(), EXIT_USAGE)
    except InventoryError as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    for w in policy.warnings:
        click.echo(f"sigaudit: warning: {w}", err=True)
    click.echo(json.dumps({**policy_summary(policy), "warnings": list(policy.warnings)}, indent=2, default=str))


@main.command("evidence", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.option("--db", "db_url", default=None, help="Database URL.")
@click.option("--scan", "scan_ref", default="latest", help="The scan's id, or 'latest' (the newest complete scan).")
@click.option("--cluster", default=None, help="With --scan latest: the newest scan of this cluster.")
@click.option("--sign-key", default=None, help="The key signing the pack: a PEM private key file or a KMS URI "
                                               "(awskms://, gcpkms://, azurekms://, hashivault://).")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False), help="The pack (.tar.gz).")
@click.option("--tsa-url", default=None, help="Timestamp the manifest signature by this RFC 3161 TSA (http(s) URL).")
@click.option("--tsa-ca-cert", default=None, type=click.Path(dir_okay=False),
              help="With --tsa-url: the TSA's root certificate(s), PEM; the token is checked before writing.")
@click.option("--deadline", "deadline_s", callback=duration, default=None,
              help="Give up building the pack after this long (e.g. 60, 2m): every KMS and TSA call is cut at it "
                   "(each KMS call has its own 30 s bound besides).")
def evidence(db_url: str | None, scan_ref: str, cluster: str | None, sign_key: str | None,
             out_path: str | None, tsa_url: str | None, tsa_ca_cert: str | None, deadline_s: float | None) -> None:
    """Build the signed evidence pack of a stored scan, for an auditor to re-verify offline."""
    from scanner import store as store_mod
    from scanner.evidence.pack import write_pack
    from scanner.sources.tsa import TsaError

    if not sign_key or not out_path:
        _fail("give --sign-key KEY (a PEM private key file or a KMS URI) and --out pack.tar.gz", EXIT_USAGE)
    if tsa_ca_cert and not tsa_url:
        _fail("--tsa-ca-cert needs --tsa-url", EXIT_USAGE)
    tsa_roots = _tsa_roots(tsa_ca_cert, "--tsa-ca-cert")

    url = db_url or store_mod.default_db_url()
    try:
        with store_mod.open_store(url) as store:
            store.check_schema()
            if scan_ref == "latest":
                scan_id = store.latest_scan_id(cluster)
                if scan_id is None:
                    _fail("no complete scan in the database" + (f" for cluster {cluster!r}" if cluster else ""),
                          EXIT_USAGE)
            elif scan_ref.isdigit():
                scan_id = int(scan_ref)
            else:
                _fail(f"--scan {scan_ref!r}: give a scan id or 'latest'", EXIT_USAGE)
            size = write_pack(store, scan_id, sign_key, out_path, tsa_url=tsa_url, tsa_roots=tsa_roots,
                              deadline_s=deadline_s)
    except (StoreError, TsaError) as exc:
        _fail(exc.diagnostics(), EXIT_FAILED)
    click.echo(f"sigaudit: evidence pack of scan {scan_id} written to {out_path} ({size} bytes)", err=True)


def _tsa_roots(path: str | None, option: str) -> list[Any]:
    """The PEM certificates of a TSA trust option (exit 2 when unreadable or without a certificate)."""
    if not path:
        return []
    from cryptography import x509

    try:
        data = Path(path).read_bytes()[: 1024 * 1024]
    except OSError as exc:
        _fail(f"cannot read {option} {path}: {exc.strerror}", EXIT_USAGE)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        _fail(f"{option} {path}: not PEM certificates", EXIT_USAGE)
    return list(certs)


def _not_before(text: str) -> datetime:
    """``--not-before``: an RFC 3339 time with a zone, or an age (``90m``, ``24h``, ``7d``) before now."""
    import re
    from datetime import UTC, timedelta

    m = re.fullmatch(r"(\d{1,6})([smhd])", text.strip())
    if m:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[m.group(2)]
        try:
            return datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})
        except OverflowError:  # 999999d: before year 1, a usage error rather than exit 3
            _fail(f"--not-before {text!r}: an age reaching before year 1", EXIT_USAGE)
    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        _fail(f"--not-before {text!r}: not an RFC 3339 time (2026-12-07T00:00:00Z) or an age (24h, 7d)", EXIT_USAGE)
    if at.tzinfo is None:
        _fail(f"--not-before {text!r}: give a time zone (Z or +hh:mm): a time without one is ambiguous", EXIT_USAGE)
    return at


@main.command("verify-evidence", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@click.argument("pack", type=click.Path(dir_okay=False))
@click.option("--key", "key_path", type=click.Path(dir_okay=False), default=None,
              help="The verdict-signing public key (PEM) you were given out of band.")
@click.option("--insecure-use-pack-key", is_flag=True,
              help="Check the signature against the key inside the pack: proves only that the pack is "
                   "self-consistent, not who made it.")
@click.option("--tsa-ca-cert", default=None, type=click.Path(dir_okay=False),
              help="The TSA root certificate(s) (PEM) you trust for the manifest's RFC 3161 timestamp.")
@click.option("--insecure-use-pack-tsa-cert", is_flag=True,
              help="Check the timestamp against the certificates inside the token: proves nothing about the TSA.")
@click.option("--require-timestamp", is_flag=True, help="Fail a pack whose manifest is not timestamped.")
@click.option("--insecure-skip-tsa-revocation", is_flag=True,
              help="Do not check the revocation of the TSA's certificate chain (from the CRLs in the pack).")
@click.option("--not-before", default=None, metavar="TIME",
              help="Fail a pack whose scan was verified before TIME (RFC 3339 with a zone, e.g. "
                   "2026-12-07T00:00:00Z, or an age such as 24h / 7d before now): a stale pack.")
@click.option("--expect-scan", type=int, default=None, metavar="ID",
              help="Fail a pack that is not of scan ID (the id in its signed manifest): a substituted pack.")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text")
def verify_evidence(pack: str, key_path: str | None, insecure_use_pack_key: bool, tsa_ca_cert: str | None,
                    insecure_use_pack_tsa_cert: bool, require_timestamp: bool,
                    insecure_skip_tsa_revocation: bool, not_before: str | None,
                    expect_scan: int | None, output: str) -> None:
    """Re-verify an evidence pack offline: signature, every file's hash, every verdict recomputed.

    Exit 0 when all holds, 1 when anything does not (each problem names its file), 2 usage."""
    from scanner.evidence.verify import Expected, PackError, TimestampTrust, read_pack, verify_pack

    expected = Expected(not_before=_not_before(not_before) if not_before else None, scan_id=expect_scan)

    if tsa_ca_cert and insecure_use_pack_tsa_cert:
        _fail("give --tsa-ca-cert or --insecure-use-pack-tsa-cert, not both", EXIT_USAGE)
    trust = TimestampTrust(roots=tuple(_tsa_roots(tsa_ca_cert, "--tsa-ca-cert")),
                           pack_chain=insecure_use_pack_tsa_cert, required=require_timestamp,
                           skip_revocation=insecure_skip_tsa_revocation)
    if insecure_skip_tsa_revocation:
        log.warning("verify-evidence: --insecure-skip-tsa-revocation: a revoked TSA certificate is not noticed")
    if insecure_use_pack_tsa_cert:
        log.warning("verify-evidence: --insecure-use-pack-tsa-cert: the timestamp is checked against the token's "
                    "own certificates; this proves nothing about which TSA made it")

    if key_path is None and not insecure_use_pack_key:
        _fail("give --key verdict-signing.pub (the key you trust; the pack's own copy proves nothing), or "
              "--insecure-use-pack-key", EXIT_USAGE)
    if key_path is not None:
        try:
            key_pem = Path(key_path).read_bytes()[: 64 * 1024]
        except OSError as exc:
            _fail(f"cannot read --key {key_path}: {exc.strerror}", EXIT_USAGE)
    else:
        log.warning("verify-evidence: --insecure-use-pack-key: the signature is checked against the pack's own "
                    "key; this proves nothing about who made the pack")
        try:
            key_pem = read_pack(Path(pack)).get("verdict-signing.pub", b"")
        except PackError as exc:
            key_pem = b""
            click.echo(f"sigaudit: {exc}", err=True)
    outcome = verify_pack(Path(pack), key_pem, trust, expected)
    if output == "json":
        click.echo(json.dumps({"schema_version": 1, "ok": outcome.ok, "files": outcome.files,
                               "images": outcome.images, "verdicts": outcome.verdicts, "scan": outcome.scan,
                               "timestamp": outcome.timestamp or None,
                               "problems": outcome.problems, "notes": outcome.notes}, indent=2))
    else:
        if outcome.scan:  # which scan this is: an old pack passes as well as a new one
            click.echo(f"SCAN {outcome.scan.get('id')} of cluster {outcome.scan.get('cluster')}, verified at "
                       f"{outcome.scan.get('verified_at')}")
        if outcome.timestamp:
            click.echo(f"TIMESTAMP {outcome.timestamp['time']} by {outcome.timestamp['tsa']} (trusted by "
                       f"{outcome.timestamp['trusted_by']})")
        for note in outcome.notes:
            click.echo(f"NOTE {note}")
        for problem in outcome.problems:
            click.echo(f"FAIL {problem}")
        click.echo(f"{'OK' if outcome.ok else 'FAILED'}: {outcome.files} files, {outcome.images} images, "
                   f"{outcome.verdicts} verdicts recomputed" + ("" if outcome.ok else
                                                              f", {len(outcome.problems)} problems"))
    sys.exit(EXIT_OK if outcome.ok else EXIT_VIOLATIONS)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
