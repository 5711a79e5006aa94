"""``sigaudit serve``: scheduled scans, ``/metrics``, health probes, the scans API and report downloads.

Starlette on uvicorn. Endpoints:

* ``GET /metrics`` — the same collector the one-shot push uses, over the store (this cluster).
* ``GET /healthz`` — the process answers. ``GET /readyz`` — the database answers AND the latest
  complete scan is younger than twice the schedule's interval (or, with none yet, the server started
  less than twice the interval ago).
* ``GET /api/scans`` (newest first), ``GET /api/scans/{id}`` (the JSON document),
  ``POST /api/scans`` (start one now: 202, or 409 while one runs here or in another process).
* ``GET /reports/latest.{html,json,csv}`` and ``/reports/{id}.{html,json,csv}``.

``/metrics`` and the probes are open; ``/api/*`` and ``/reports/*`` need a bearer token that
:mod:`scanner.server_auth` accepts (a token file and/or Kubernetes TokenReview + SubjectAccessReview).
Without either, serve listens on loopback only (or with ``--insecure-no-auth``). Requests a web page
could make a browser send (foreign ``Origin``, ``Sec-Fetch-Site: cross-site``, a POST that is not
JSON) are refused, and API-triggered scans are at least ``--api-scan-interval`` apart (429).

SIGTERM/SIGINT: stop accepting scans, ask the running scan to stop, give it ``--shutdown-timeout``
seconds to wind down, mark it failed (never complete) and exit 0.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from types import FrameType
from typing import Any
from urllib.parse import quote

import click
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from scanner.clock import Clock, system_clock
from scanner.errors import ConfigError, ScanInProgress, SigauditError, StoreError
from scanner.metrics.collector import SigauditCollector, StoreSource
from scanner.models import ScanResult
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
from scanner.server_auth import (
    Access,
    Authenticator,
    TokenFile,
    cross_site_refusal,
    is_loopback,
    kube_reviewer,
    rebinding_refusal,
)
from scanner.store import ScanSummary, Store
from scanner.store.store import MAX_ID

log = logging.getLogger("sigaudit.serve")

EXIT_USAGE, EXIT_FAILED = 2, 3
_FORMATS = {"json": "application/json", "csv": "text/csv; charset=utf-8", "html": "text/html; charset=utf-8"}
# The reports' own <meta> policy, plus what only a header can say (frame-ancestors): sent with every report.
REPORT_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
DEFAULT_READ_ACCESS = "get:sigaudit.io/reports"
DEFAULT_SCAN_ACCESS = "create:sigaudit.io/scans"
DEFAULT_API_SCAN_INTERVAL = 60.0
DEFAULT_MAX_CONNECTIONS = 100
MAX_POST_BODY = 4096
# Paths a probe or Prometheus uses: answered even when --max-connections is reached (see the protocol).
OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class ScanRateLimit:
    """At most one API-triggered scan start per ``interval`` seconds (a refused one costs nothing)."""

    def __init__(self, interval: float, monotonic: Any = time.monotonic) -> None:
        self.interval = interval
        self._now = monotonic
        self._lock = threading.Lock()
        self._last: float | None = None

    def acquire(self) -> tuple[float, float | None]:
        """(0, previous stamp) when a start may go ahead (the slot is taken), else (seconds to wait, None)."""
        with self._lock:
            now = self._now()
            if self.interval > 0 and self._last is not None and now - self._last < self.interval:
                return self.interval - (now - self._last), None
            previous, self._last = self._last, now
            return 0.0, previous if previous is not None else -math.inf

    def give_back(self, previous: float) -> None:
        """A start that was refused (busy, shutting down) does not count against the interval."""
        with self._lock:
            self._last = None if previous == -math.inf else previous


@dataclass
class ServerContext:
    store: Store
    runner: ScanRunner
    schedule: Schedule
    cluster: str
    registry: CollectorRegistry
    started_at: datetime
    clock: Clock = system_clock
    auth: Authenticator = field(default_factory=Authenticator)
    read_access: Access = field(default_factory=lambda: Access.parse(DEFAULT_READ_ACCESS))
    scan_access: Access = field(default_factory=lambda: Access.parse(DEFAULT_SCAN_ACCESS))
    scan_rate: ScanRateLimit = field(default_factory=lambda: ScanRateLimit(DEFAULT_API_SCAN_INTERVAL))
    # No authentication configured and listening on loopback: only a loopback Host is served (DNS rebinding).
    loopback_host_only: bool = True
    # The --metrics-listen port: serves /metrics and the probes only (a NetworkPolicy can open it alone).
    metrics_port: int | None = None
    # --watch: the pod watch (scanner.watch.Watcher); /readyz reports it stale.
    watch: Any = None


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
    if ctx.watch is not None:
        fresh, detail["watch"] = ctx.watch.health()
        if not fresh:
            detail["reason"] = "the pod watch has not heard from the API server recently (see watch)"
            return False, detail
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
    """The report renderer's HTML, JSON or CSV (one CSV writer, formula-safe: scanner.reports.render)."""
    from scanner.reports import render

    renderers = {"html": render.render_html, "json": render.render_json, "csv": render.render_csv}
    return renderers[fmt](store, scan_id)


def create_app(ctx: ServerContext) -> Any:
    """The ASGI application of ``ctx``."""
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

    def refused(request: Request, access: Access, *, unsafe: bool = False) -> Response | None:
        """The answer to a request for /api or /reports that may not proceed, or None."""
        headers = request.headers
        why = cross_site_refusal(headers, unsafe=unsafe)
        if why is not None:
            return JSONResponse({"error": why}, status_code=403)
        if not ctx.auth.enabled:
            why = rebinding_refusal(headers) if ctx.loopback_host_only else None
            return JSONResponse({"error": why}, status_code=403) if why else None
        decision = ctx.auth.check(headers.get("authorization"), access)
        if decision.allowed:
            return None
        extra = {"WWW-Authenticate": 'Bearer realm="sigaudit"'} if decision.status == 401 else None
        return JSONResponse({"error": decision.reason}, status_code=decision.status, headers=extra)

    def start_scan(request: Request) -> Response:
        wait, previous = ctx.scan_rate.acquire()
        if previous is None:
            seconds = max(1, math.ceil(wait))
            return JSONResponse({"error": f"API-triggered scans are at least {ctx.scan_rate.interval:g} s apart; "
                                          f"retry in {seconds} s"},
                                status_code=429, headers={"Retry-After": str(seconds)})
        try:
            scan_id = ctx.runner.start("api")
        except (ScanBusy, ScanInProgress, ShuttingDown):
            ctx.scan_rate.give_back(previous)
            raise
        return JSONResponse({"scan_id": scan_id, "status": "running", "url": f"/api/scans/{scan_id}"},
                            status_code=202, headers={"Location": f"/api/scans/{scan_id}"})

    async def post_scan(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        body = b""
        async for chunk in request.stream():  # bounded: never hold a large body in memory
            body += chunk
            if len(body) > MAX_POST_BODY:
                return JSONResponse({"error": f"the body of POST /api/scans is at most {MAX_POST_BODY} bytes"},
                                    status_code=413)
        if body.strip() and not _json_object(body):
            return JSONResponse({"error": "the body of POST /api/scans is empty or a JSON object"}, status_code=400)
        return await run_in_threadpool(answer_start, request)

    def answer_start(request: Request) -> Response:
        try:
            return start_scan(request)
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

    async def scan_scans(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        if request.method == "POST":
            no = await run_in_threadpool(refused, request, ctx.scan_access, unsafe=True)
            return no if no is not None else await post_scan(request)
        no = await run_in_threadpool(refused, request, ctx.read_access)
        return no if no is not None else await run_in_threadpool(list_scans, request)

    def get_scan(request: Request) -> Response:
        from scanner.document import scan_document

        if (no := refused(request, ctx.read_access)) is not None:
            return no
        scan_id = _scan_id(str(request.path_params["scan_id"]))
        if scan_id is None or not _belongs(ctx, scan_id):
            asked = request.path_params["scan_id"]
            return JSONResponse({"error": f"there is no scan {asked} of cluster {ctx.cluster}"}, status_code=404)
        try:
            return JSONResponse(scan_document(ctx.store.load_scan(scan_id)))
        except StoreError as exc:
            return JSONResponse({"error": exc.diagnostics()}, status_code=503)

    def report(request: Request) -> Response:
        if (no := refused(request, ctx.read_access)) is not None:
            return no
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
        return Response(body, media_type=_FORMATS[fmt], headers={
            "Content-Disposition": content_disposition(f"sigaudit-{ctx.cluster}-scan-{scan_id}.{fmt}"),
            "Content-Security-Policy": REPORT_CSP})

    return _NoSniff(_MetricsPortOnlyOpen(ctx.metrics_port, Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/scans", scan_scans, methods=["GET", "POST"]),
        Route("/api/scans/{scan_id}", get_scan),
        Route("/reports/{name}", report),
    ])))


class _MetricsPortOnlyOpen:
    """On the metrics port, only /metrics and the probes exist (404 for the rest)."""

    def __init__(self, port: int | None, app: Any) -> None:
        self.port = port
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        server = scope.get("server") if scope["type"] == "http" else None
        if self.port is not None and server and server[1] == self.port and scope["path"] not in OPEN_PATHS:
            await PlainTextResponse("the metrics port serves /metrics, /healthz and /readyz only\n",
                                    status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _NoSniff:
    """``X-Content-Type-Options: nosniff`` on every response (a report or an error echoing a URL is
    never sniffed into HTML)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def send_nosniff(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                   (b"x-content-type-options", b"nosniff")]}
            await send(message)

        await self.app(scope, receive, send_nosniff)


def _json_object(body: bytes) -> bool:
    import json

    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """RFC 6266: an ASCII ``filename`` fallback (anything else, quotes and backslashes become ``_``) and
    ``filename*=UTF-8''…`` (RFC 8187 percent-encoding) with the real name. Always Latin-1 encodable, so
    a cluster called ``prod-東京`` cannot make the response fail."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    encoded = quote(filename, safe="!#$&+-.^_`|~")
    if encoded == filename:
        return f'{disposition}; filename="{filename}"'
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


_SCAN_ID = re.compile(r"[0-9]{1,18}")


def _scan_id(text: str) -> int | None:
    """A scan id from a URL: 1 to 18 ASCII digits (``str.isdigit`` also accepts superscripts, which ``int``
    refuses, and other scripts' digits, which it reads; ``int`` accepts spaces, ``_`` and signs) that the
    store's ids can hold; anything else names no scan."""
    if _SCAN_ID.fullmatch(text) is None:
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
        _limit: int | None = None
        _waiting_since = 0.0

        # uvicorn answers 503 to any request while --max-connections connections are open (its
        # limit_concurrency, read when a request's headers have been parsed into self.scope); the
        # liveness/readiness probes and /metrics are exempt, so a flood never makes the kubelet
        # restart the pod in the middle of a scan.
        @property
        def limit_concurrency(self) -> int | None:
            scope = getattr(self, "scope", None)
            if scope is not None and scope.get("path") in OPEN_PATHS:
                return None
            return self._limit

        @limit_concurrency.setter
        def limit_concurrency(self, value: int | None) -> None:
            self._limit = value

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
            self._waiting_since = self.loop.time()
            self._evict_idle()

        def _evict_idle(self) -> None:
            """Beyond --max-connections waiting for their headers, close the one that has waited longest.

            The header deadline alone lets a client open connections faster than they expire: under a
            small file-descriptor limit a flood then starves accept(), and the probes time out. Evicting
            keeps the waiting connections (and so the descriptors) bounded while every new connection,
            the kubelet's included, is still accepted."""
            if self._limit is None:
                return
            waiting = [c for c in self.connections
                       if isinstance(c, HeaderTimeoutH11Protocol) and c._header_deadline is not None]
            if len(waiting) <= self._limit:
                return
            oldest = min(waiting, key=lambda c: c._waiting_since)
            oldest._disarm_header_deadline()
            oldest.transport.close()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a request's headers arrived
                self._disarm_header_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm_header_deadline()  # the keep-alive wait for the next request's headers
                self._waiting_since = self.loop.time()

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
@click.option("--metrics-listen", default=None,
              help="Also serve /metrics, /healthz and /readyz (and nothing else) on this HOST:PORT, e.g. for a "
                   "NetworkPolicy that lets only the monitoring namespace reach it.")
@click.option("--per-image-metrics", is_flag=True, help="Also export per-image series (high cardinality).")
@click.option("--run-at-start/--no-run-at-start", default=True,
              help="Scan at start-up unless the latest complete scan is younger than the schedule interval.")
@click.option("--misfire-grace-time", type=click.IntRange(1, 86400), default=600,
              help="A scheduled run started later than this many seconds (e.g. after a pause) is skipped.")
@click.option("--shutdown-timeout", type=click.FloatRange(0, 3600), default=20.0,
              help="Seconds a running scan gets to stop on SIGTERM before it is marked failed.")
@click.option("--auth-token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the bearer token that /api and /reports accept (a mounted Secret; re-read "
                   "when it changes).")
@click.option("--auth-kubernetes/--no-auth-kubernetes", default=False,
              help="Accept Kubernetes bearer tokens: TokenReview, then SubjectAccessReview of --auth-kube-read "
                   "or --auth-kube-scan for the user.")
@click.option("--auth-kube-read", default=DEFAULT_READ_ACCESS, show_default=True,
              help="VERB:GROUP/RESOURCE a user needs to read /api and /reports.")
@click.option("--auth-kube-scan", default=DEFAULT_SCAN_ACCESS, show_default=True,
              help="VERB:GROUP/RESOURCE a user needs to start a scan (POST /api/scans).")
@click.option("--auth-kube-namespace", default="",
              help="Namespace of the SubjectAccessReview (so a Role/RoleBinding there can grant it); default "
                   "cluster-wide.")
@click.option("--auth-kube-audience", "auth_kube_audiences", multiple=True,
              help="Audience the reviewed token must carry (repeatable; default: the API server's).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Serve /api and /reports without authentication on a non-loopback address (anyone who can "
                   "reach the port reads the inventory and starts scans).")
@click.option("--api-scan-interval", type=click.FloatRange(0, 86400), default=DEFAULT_API_SCAN_INTERVAL,
              show_default=True, help="Minimum seconds between scans started through POST /api/scans (429).")
@click.option("--max-connections", type=click.IntRange(1, 100000), default=DEFAULT_MAX_CONNECTIONS,
              show_default=True, help="Connections waiting for their headers beyond this are closed, oldest "
                                      "first; with this many open, requests other than the probes and /metrics "
                                      "get 503.")
@click.option("--watch/--no-watch", "watch", default=False,
              help="Watch the pods through the Kubernetes API and verify each new running digest within seconds, "
                   "through the same pipeline and verification cache as the scans; its verdicts are recorded "
                   "against the latest complete scan, marked source: watch.")
@click.option("--watch-queue-max", type=click.IntRange(1, 1_000_000), default=5000, show_default=True,
              help="Pods waiting for --watch's verification beyond this are dropped and listed again once the "
                   "queue drains.")
@click.option("--exit-zero-on-violations", is_flag=True, hidden=True,
              help="Accepted for argument lists shared with `scan`; serve never exits on violations.")
def command(**opts: Any) -> None:
    """Run scans on a schedule and serve metrics, health probes, the scans API and reports."""
    sys.exit(serve(**opts))


def build_auth(opts: dict[str, Any]) -> Authenticator:
    """The configured ways in (ConfigError on a bad token file, access spec or kubeconfig)."""
    Access.parse(opts["auth_kube_read"])
    Access.parse(opts["auth_kube_scan"], field="--auth-kube-scan")
    token_file = TokenFile(opts["auth_token_file"]) if opts["auth_token_file"] else None
    kube = None
    if opts["auth_kubernetes"]:
        kube = kube_reviewer(opts["kubeconfig"], opts["context"], audiences=tuple(opts["auth_kube_audiences"]))
    return Authenticator(token_file, kube)


def _open_store(url: str | None, capacity_bytes: int | None = None) -> Store:
    from scanner import store as store_mod

    url = url or store_mod.default_db_url()
    if url.startswith("sqlite"):
        store_mod.upgrade(url)  # like `scan`: a SQLite file migrates itself
    store = store_mod.open_store(url, capacity_bytes=capacity_bytes)
    store.check_schema()
    return store


def serve(**opts: Any) -> int:
    import uvicorn

    from scanner.scan import load_inputs

    options = scan_options_from(opts)
    try:
        schedule = parse_schedule(opts["schedule"])
        host, port = parse_listen(opts["listen"])
        metrics_addr = parse_listen(opts["metrics_listen"]) if opts.get("metrics_listen") else None
        if metrics_addr is not None and metrics_addr[1] == port:
            raise ConfigError("--metrics-listen needs a port other than --listen's", field="--metrics-listen")
        auth = build_auth(opts)
        if not auth.enabled and not is_loopback(host) and not opts["insecure_no_auth"]:
            raise ConfigError(
                f"refusing to serve /api and /reports on {host} without authentication: anyone who reaches the "
                "port would read the whole inventory and policy and start scans. Give --auth-token-file "
                "and/or --auth-kubernetes, listen on 127.0.0.1, or pass --insecure-no-auth if a "
                "NetworkPolicy or proxy in front already restricts who connects", field="--listen")
        if not auth.enabled and opts["insecure_no_auth"]:
            log.warning("sigaudit serve: --insecure-no-auth: /api and /reports answer anyone who reaches %s", host)
        load_inputs(options)  # fail fast on a bad policy or credentials file
    except ConfigError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_USAGE
    except SigauditError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_FAILED
    try:
        store = _open_store(opts["db_url"], options.db_capacity)
    except StoreError as exc:
        click.echo(f"sigaudit: error: {exc.diagnostics()}", err=True)
        return EXIT_FAILED

    watcher = None
    if opts.get("watch"):
        from scanner.watch import Watcher

        if options.pods_file:
            store.close()
            click.echo("sigaudit: error: --watch watches the Kubernetes API; it cannot watch a --pods-file", err=True)
            return EXIT_USAGE
        watcher = Watcher(options, store, queue_max=opts["watch_queue_max"])
    collector = SigauditCollector(StoreSource(store, opts["cluster"]), per_image=opts["per_image_metrics"])

    def finished(result: ScanResult) -> None:
        if watcher is not None:
            watcher.scan_finished(result)
        collector.prime()  # the next /metrics scrape answers from the collector's cache

    runner = ScanRunner(options, store, on_finished=finished)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if watcher is not None:
        from scanner.metrics.watch import WatchCollector

        registry.register(WatchCollector(watcher, opts["cluster"]))
    ctx = ServerContext(store, runner, schedule, opts["cluster"], registry, system_clock(), auth=auth,
                        read_access=Access.parse(opts["auth_kube_read"], namespace=opts["auth_kube_namespace"]),
                        scan_access=Access.parse(opts["auth_kube_scan"], namespace=opts["auth_kube_namespace"],
                                                 field="--auth-kube-scan"),
                        scan_rate=ScanRateLimit(opts["api_scan_interval"]),
                        loopback_host_only=not auth.enabled and not opts["insecure_no_auth"],
                        metrics_port=metrics_addr[1] if metrics_addr else None, watch=watcher)
    app = create_app(ctx)

    try:
        sockets = [_bind(host, port)] + ([_bind(*metrics_addr)] if metrics_addr else [])
    except OSError as exc:
        store.close()
        click.echo(f"sigaudit: error: cannot listen: {exc.strerror or exc}", err=True)
        return EXIT_FAILED
    if watcher is not None:
        try:
            watcher.start()
        except SigauditError as exc:
            store.close()
            for sock in sockets:
                sock.close()
            click.echo(f"sigaudit: error: --watch: {exc.diagnostics()}", err=True)
            return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    scheduler = build_scheduler(schedule, runner.run_scheduled, misfire_grace_time=opts["misfire_grace_time"])
    scheduler.start()
    nxt = schedule.next_fire_times(system_clock(), 1)
    log.warning("sigaudit serve: cluster %s, schedule %r (UTC, next %s), listening on %s:%d%s, auth: %s",
                opts["cluster"], schedule.expr, _iso(nxt[0]) if nxt else "never", host, port,
                f" (metrics on {metrics_addr[0]}:{metrics_addr[1]})" if metrics_addr else "",
                " + ".join(w for w, on in (("token file", auth.token_file), ("kubernetes", auth.kube)) if on) or "none")
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
                            server_header=False, timeout_graceful_shutdown=5, http=_header_timeout_protocol(),
                            limit_concurrency=opts["max_connections"])
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # uvicorn's own handlers, configured above
        install_log_redaction(logging.getLogger(name))
    server = _Server(config)
    try:
        server.run(sockets=sockets)
    finally:
        scheduler.shutdown(wait=False)
        if watcher is not None:
            watcher.stop()
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


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


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
