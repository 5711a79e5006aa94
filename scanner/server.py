"""``sigaudit serve``: scheduled scans, ``/metrics``, health probes, the scans API and report downloads.

Starlette on uvicorn. Endpoints:

* ``GET /metrics`` — the same collector the one-shot push uses, over the store (this cluster).
* ``GET /healthz`` — the process answers. ``GET /readyz`` — the database answers AND the latest
  complete scan is younger than twice the schedule's interval (or, with none yet, the server started
  less than twice the interval ago).
* ``GET /api/scans`` (newest first), ``GET /api/scans/{id}`` (the JSON document),
  ``POST /api/scans`` (start one now: 202, or 409 while one runs here or in another process).
* ``GET /reports/latest.{html,json,csv}`` and ``/reports/{id}.{html,json,csv}``.

SIGTERM/SIGINT: stop accepting scans, ask the running scan to stop, give it ``--shutdown-timeout``
seconds to wind down, mark it failed (never complete) and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

import click
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from scanner.clock import Clock, system_clock
from scanner.errors import ConfigError, ScanInProgress, SigauditError, StoreError
from scanner.metrics.collector import SigauditCollector, StoreSource
from scanner.options import scan_options, scan_options_from
from scanner.redact import install_log_redaction
from scanner.scheduler import (
    ScanBusy,
    ScanRunner,
    Schedule,
    ShuttingDown,
    build_scheduler,
    parse_schedule,
)
from scanner.store import ScanSummary, Store
from scanner.store.store import MAX_ID

log = logging.getLogger("sigaudit.serve")

EXIT_USAGE, EXIT_FAILED = 2, 3
_FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}


@dataclass
class ServerContext:
    store: Store
    runner: ScanRunner
    schedule: Schedule
    cluster: str
    registry: CollectorRegistry
    started_at: datetime
    clock: Clock = system_clock


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def summary_doc(s: ScanSummary) -> dict[str, Any]:
    return {
        "id": s.id, "cluster": s.cluster, "status": s.state.value, "started_at": _iso(s.started_at),
        "finished_at": _iso(s.finished_at), "images": s.total, "compliant": s.compliant,
        "non_compliant": s.noncompliant, "by_status": dict(s.counts), "policy_digest": s.policy_digest,
        "sigaudit_version": s.version, "errors": list(s.errors),
    }


def readiness(ctx: ServerContext) -> tuple[bool, dict[str, Any]]:
    now = ctx.clock()
    limit = 2 * ctx.schedule.interval
    detail: dict[str, Any] = {"cluster": ctx.cluster, "schedule": ctx.schedule.expr,
                              "max_age_seconds": limit.total_seconds()}
    try:
        latest_id = ctx.store.latest_scan_id(ctx.cluster)
        latest = ctx.store.scan_summary(latest_id) if latest_id is not None else None
    except StoreError as exc:
        detail.update(database="unreachable", error=exc.diagnostics())
        return False, detail
    detail["database"] = "ok"
    if latest is not None and latest.finished_at is not None:
        age = now - latest.finished_at
        detail.update(last_complete_scan=latest.id, last_success=_iso(latest.finished_at),
                      age_seconds=round(age.total_seconds(), 3))
        if age <= limit:
            return True, detail
        detail["reason"] = "the latest complete scan is older than twice the schedule interval"
    else:
        detail["last_complete_scan"] = None
    if now - ctx.started_at <= limit:
        detail["reason"] = "within the start-up grace period (twice the schedule interval)"
        return True, detail
    detail.setdefault("reason", "no complete scan within twice the schedule interval")
    return False, detail


def _render_report(store: Store, scan_id: int, fmt: str) -> str:
    """The report renderer's HTML, JSON or CSV (one CSV writer, formula-safe: reports.render)."""
    from reports import render

    renderers = {"html": render.render_html, "json": render.render_json, "csv": render.render_csv}
    return renderers[fmt](store, scan_id)


def create_app(ctx: ServerContext) -> Starlette:
    def metrics(_: Request) -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        # On the event loop, not the thread pool: the liveness probe answers however busy the workers are.
        return PlainTextResponse("ok\n")

    def readyz(_: Request) -> Response:
        ready, detail = readiness(ctx)
        detail["ready"] = ready
        return JSONResponse(detail, status_code=200 if ready else 503)

    def list_scans(request: Request) -> Response:
        try:
            limit = max(1, min(500, int(request.query_params.get("limit", "50"))))
        except ValueError:
            return JSONResponse({"error": "limit must be an integer"}, status_code=400)
        try:
            scans = ctx.store.list_scans(ctx.cluster, limit=limit)
        except StoreError as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=503)
        return JSONResponse({"cluster": ctx.cluster, "running_scan_id": ctx.runner.current_scan_id,
                             "scans": [summary_doc(s) for s in scans]})

    def start_scan(_: Request) -> Response:
        try:
            scan_id = ctx.runner.start("api")
        except ScanBusy as exc:
            return JSONResponse({"error": exc.diagnostics(), "running_scan_id": exc.scan_id}, status_code=409)
        except ScanInProgress as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=409)
        except ShuttingDown as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=503)
        except ConfigError as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=400)
        except SigauditError as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=500)
        return JSONResponse({"scan_id": scan_id, "status": "running", "url": f"/api/scans/{scan_id}"},
                            status_code=202, headers={"Location": f"/api/scans/{scan_id}"})

    def scan_scans(request: Request) -> Response:
        return start_scan(request) if request.method == "POST" else list_scans(request)

    def get_scan(request: Request) -> Response:
        from scanner.document import scan_document

        scan_id = _scan_id(str(request.path_params["scan_id"]))
        if scan_id is None or not _belongs(ctx, scan_id):
            asked = request.path_params["scan_id"]
            return JSONResponse({"error": f"there is no scan {asked} of cluster {ctx.cluster}"}, status_code=404)
        try:
            return JSONResponse(scan_document(ctx.store.load_scan(scan_id)))
        except StoreError as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=503)

    def report(request: Request) -> Response:
        name, _, fmt = str(request.path_params["name"]).rpartition(".")
        if fmt not in _FORMATS or not name:
            return PlainTextResponse("reports are latest.{html,json,csv} or <scan id>.{html,json,csv}\n",
                                     status_code=404)
        try:
            if name == "latest":
                scan_id = ctx.store.latest_scan_id(ctx.cluster)
                if scan_id is None:
                    return PlainTextResponse("no complete scan yet\n", status_code=404)
            elif (wanted := _scan_id(name)) is not None and _belongs(ctx, wanted):
                scan_id = wanted
            else:
                return PlainTextResponse(f"there is no scan {name} of cluster {ctx.cluster}\n", status_code=404)
            body = _render_report(ctx.store, scan_id, fmt)
        except StoreError as exc:
            return PlainTextResponse(exc.diagnostics() + "\n", status_code=503)
        filename = f"sigaudit-{ctx.cluster}-scan-{scan_id}.{fmt}"
        return Response(body, media_type=_FORMATS[fmt],
                        headers={"Content-Disposition": f'inline; filename="{filename}"'})

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/scans", scan_scans, methods=["GET", "POST"]),
        Route("/api/scans/{scan_id}", get_scan),
        Route("/reports/{name}", report),
    ])


def _scan_id(text: str) -> int | None:
    """A scan id from a URL: ASCII digits only (``str.isdigit`` also accepts superscripts, which ``int``
    refuses, and other scripts' digits, which it reads), and a size the store's ids can have; anything
    else names no scan."""
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    value = int(text)
    return value if 0 < value <= MAX_ID else None


def _belongs(ctx: ServerContext, scan_id: int) -> bool:
    try:
        return ctx.store.scan_summary(scan_id).cluster == ctx.cluster
    except StoreError:
        return False


HEADER_TIMEOUT_SECONDS = 10.0  # a connection gets this long to send a request's headers


def _header_timeout_protocol() -> type:
    """uvicorn's h11 protocol with a deadline on each request's headers.

    uvicorn has none: a client that sends a request line and then a header byte now and then (slowloris)
    holds its connection for ever, and a thousand of them exhaust the process's file descriptors, so the
    probes and /metrics stop answering. Each connection, and each keep-alive wait for the next request,
    now gets HEADER_TIMEOUT_SECONDS for the headers; a request being answered is never cut."""
    import asyncio

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11Protocol(H11Protocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(HEADER_TIMEOUT_SECONDS, self._header_deadline_passed)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _header_deadline_passed(self) -> None:
            self._header_deadline = None
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_header_deadline()  # the keep-alive wait for the next request's headers

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

    return HeaderTimeoutH11Protocol


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{text!r} is not HOST:PORT", field="--listen")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - an explicit ":PORT" asks for it


@click.command("serve", context_settings={"auto_envvar_prefix": "SIGAUDIT"})
@scan_options(serve=True)
@click.option("--db", "db_url", default=None,
              help="Database URL (default: $SIGAUDIT_DB, else SQLite in $SIGAUDIT_DATA_DIR).")
@click.option("--schedule", default="0 */6 * * *",
              help="Cron schedule of the scans, UTC (crontab meaning: weekday 0 = Sunday).")
@click.option("--listen", default="127.0.0.1:8080", help="HOST:PORT to serve on.")
@click.option("--per-image-metrics", is_flag=True, help="Also export per-image series (high cardinality).")
@click.option("--run-at-start/--no-run-at-start", default=True,
              help="Scan at start-up unless the latest complete scan is younger than the schedule interval.")
@click.option("--misfire-grace-time", type=click.IntRange(1, 86400), default=600,
              help="A scheduled run started later than this many seconds (e.g. after a pause) is skipped.")
@click.option("--shutdown-timeout", type=click.FloatRange(0, 3600), default=20.0,
              help="Seconds a running scan gets to stop on SIGTERM before it is marked failed.")
@click.option("--exit-zero-on-violations", is_flag=True, hidden=True,
              help="Accepted for argument lists shared with `scan`; serve never exits on violations.")
def command(**opts: Any) -> None:
    """Run scans on a schedule and serve metrics, health probes, the scans API and reports."""
    sys.exit(serve(**opts))


def _open_store(url: str | None) -> Store:
    from scanner import store as store_mod

    url = url or store_mod.default_db_url()
    if url.startswith("sqlite"):
        store_mod.upgrade(url)  # like `scan`: a SQLite file migrates itself
    store = store_mod.open_store(url)
    store.check_schema()
    return store


def serve(**opts: Any) -> int:
    import uvicorn

    from scanner.scan import load_inputs

    options = scan_options_from(opts)
    try:
        schedule = parse_schedule(opts["schedule"])
        host, port = parse_listen(opts["listen"])
        load_inputs(options)  # fail fast on a bad policy or credentials file
    except ConfigError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_USAGE
    except SigauditError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_FAILED
    try:
        store = _open_store(opts["db_url"])
    except StoreError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_FAILED

    runner = ScanRunner(options, store)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SigauditCollector(StoreSource(store, opts["cluster"]), per_image=opts["per_image_metrics"]))
    ctx = ServerContext(store, runner, schedule, opts["cluster"], registry, system_clock())
    app = create_app(ctx)

    scheduler = build_scheduler(schedule, runner.run_scheduled, misfire_grace_time=opts["misfire_grace_time"])
    scheduler.start()
    nxt = schedule.next_fire_times(system_clock(), 1)
    log.warning("sigaudit serve: cluster %s, schedule %r (UTC, next %s), listening on %s:%d",
                opts["cluster"], schedule.expr, _iso(nxt[0]) if nxt else "never", host, port)
    if opts["run_at_start"]:
        _maybe_scan_at_start(ctx)

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Start stopping the scan at once, not after the HTTP connections have drained.
            runner.request_stop()
            super().handle_exit(sig, frame)

    received: list[int] = []

    def remember(sig: int, _frame: FrameType | None) -> None:
        # uvicorn re-raises the signal once it has shut down; it must land here, not kill us mid-cleanup.
        received.append(sig)

    old = {s: signal.signal(s, remember) for s in (signal.SIGTERM, signal.SIGINT)}
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=5, http=_header_timeout_protocol())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers, configured above
        install_log_redaction(logging.getLogger(name))
    server = _Server(config)
    try:
        server.run()
    finally:
        scheduler.shutdown(wait=False)
        clean = runner.shutdown(opts["shutdown_timeout"])
        store.close()
        for s, h in old.items():
            signal.signal(s, h)
    log.warning("sigaudit serve: stopped%s", "" if clean else " (a scan thread was still unwinding)")
    if not clean:
        # Scan threads blocked in network I/O would hold the interpreter open until their timeouts;
        # the store is already consistent (the scan is marked failed), so leave now.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


def _maybe_scan_at_start(ctx: ServerContext) -> None:
    try:
        latest_id = ctx.store.latest_scan_id(ctx.cluster)
        latest = ctx.store.scan_summary(latest_id) if latest_id is not None else None
    except StoreError as exc:
        log.error("cannot read the latest scan: %s", exc.diagnostics())
        return
    if latest is not None and latest.finished_at is not None and \
            ctx.clock() - latest.finished_at < ctx.schedule.interval:
        log.info("latest complete scan %d is recent; no scan at start-up", latest.id)
        return

    def go() -> None:
        time.sleep(0.5)  # let the listener come up first
        try:
            ctx.runner.start("start-up", wait=True)
        except (ScanBusy, ScanInProgress, ShuttingDown) as exc:
            log.warning("start-up scan skipped: %s", exc)
        except SigauditError as exc:
            log.error("start-up scan could not start: %s", exc.diagnostics())

    threading.Thread(target=go, name="sigaudit-startup-scan", daemon=True).start()


__all__ = ["command", "create_app", "parse_listen", "readiness", "serve"]
