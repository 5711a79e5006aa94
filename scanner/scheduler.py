"""Scans on a cron schedule (APScheduler 3.x) and on demand, one at a time, for ``sigaudit serve``.

* :func:`parse_schedule` reads a crontab expression with crontab's meaning. APScheduler 3.x numbers
  weekdays from Monday = 0 while crontab has Sunday = 0 (and 7), and ANDs day-of-month with
  day-of-week where cron ORs them when both are restricted; both are translated here. A sixth,
  leading seconds field is accepted as an extension (``"*/10 * * * * *"``, for tests).
* :class:`ScanRunner` runs one scan at a time in this process (a second one is refused with
  :class:`ScanBusy`) and relies on the store's :class:`~scanner.errors.ScanInProgress` across processes.
  The scan itself is the one use case of :mod:`scanner.scan` (the same as ``sigaudit scan``'s): it
  marks a scan complete only at its very end and a stopped, crashed or interrupted scan failed.

The ``serve`` face (:mod:`scanner.server`) hosts this module; it imports no face.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from scanner import scan
from scanner.clock import Clock, system_clock
from scanner.errors import ConfigError, ScanInProgress, SigauditError, StoreError
from scanner.models import ScanResult, ScanState
from scanner.scan import HEARTBEAT_INTERVAL, ScanOptions
from scanner.store import Store

log = logging.getLogger(__name__)

_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab numbering: 0 (and 7) = Sunday
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_ITEM = re.compile(r"^(\*|[0-7]|[a-z]{3})(?:-([0-7]|[a-z]{3}))?(?:/(\d+))?$")


def _day_number(text: str) -> int:
    if text.isdigit():
        return int(text) % 7
    try:
        return _DAYS.index(text)
    except ValueError:
        raise ConfigError(f"unknown weekday {text!r}", field="--schedule") from None


def crontab_day_of_week(text: str) -> str:
    """Translate a crontab day-of-week field into APScheduler 3.x's, as explicit weekday names.

    crontab: 0 or 7 = Sunday, 1 = Monday ... 6 = Saturday; APScheduler 3.x: 0 = Monday. Names mean
    the same in both, and a list of names avoids APScheduler's refusal of wrapping ranges (sat-mon).
    """
    text = text.strip().lower()
    if text == "*" or text == "?":
        return "*"
    days: set[int] = set()
    for item in text.split(","):
        m = _ITEM.match(item)
        if not m:
            raise ConfigError(f"bad day-of-week item {item!r}", field="--schedule")
        first, last, step = m.group(1), m.group(2), int(m.group(3) or 1)
        if step < 1:
            raise ConfigError(f"bad step in {item!r}", field="--schedule")
        if first == "*":
            if last:
                raise ConfigError(f"bad day-of-week item {item!r}", field="--schedule")
            lo, hi = 0, 6
        else:
            lo = _day_number(first)
            hi = (7 if last == "7" else _day_number(last)) if last else (lo if m.group(3) is None else 6)
            if last and hi < lo:
                raise ConfigError(f"day-of-week range {item!r} runs backwards", field="--schedule")
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DAYS[d] for d in sorted(days))


@dataclass(frozen=True, slots=True)
class Schedule:
    expr: str
    trigger: BaseTrigger
    interval: timedelta  # the longest gap between two consecutive runs (for readiness)

    def next_fire_times(self, start: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        prev: datetime | None = None
        now = start
        for _ in range(count):
            t = self.trigger.get_next_fire_time(prev, now)
            if t is None:
                break
            out.append(t)
            prev, now = t, t + timedelta(microseconds=1)
        return out


def parse_schedule(expr: str, *, now: datetime | None = None) -> Schedule:
    """A crontab expression (5 fields, or 6 with leading seconds, or an @macro) in UTC."""
    text = _MACROS.get(expr.strip().lower(), expr.strip())
    fields = text.split()
    if len(fields) == 5:
        second = "0"
    elif len(fields) == 6:
        second, fields = fields[0], fields[1:]
    else:
        raise ConfigError(f"{expr!r}: a cron schedule has 5 fields (minute hour day month weekday)", field="--schedule")
    minute, hour, dom, month, dow = fields
    try:
        dow_aps = crontab_day_of_week(dow)
        common = {"second": second, "minute": minute, "hour": hour, "month": month, "timezone": UTC}
        trigger: BaseTrigger
        if dom.startswith("*") or dow.startswith("*"):
            # cron ANDs the two fields when either is unrestricted, like APScheduler.
            trigger = CronTrigger(day=dom, day_of_week=dow_aps, **common)
        else:
            # Both restricted: cron runs when EITHER matches ("1,15 * mon" = the 1st, the 15th and Mondays).
            trigger = OrTrigger([CronTrigger(day=dom, **common), CronTrigger(day_of_week=dow_aps, **common)])
    except ValueError as exc:
        raise ConfigError(f"{expr!r}: {exc}", field="--schedule") from None
    sched = Schedule(expr, trigger, timedelta(0))
    times = sched.next_fire_times(now or datetime.now(UTC), 400)
    if len(times) < 2:
        raise ConfigError(f"{expr!r} fires fewer than twice", field="--schedule")
    gap = max(b - a for a, b in itertools.pairwise(times))
    return replace(sched, interval=gap)


# ------------------------------------------------------------------------------------------------
# Running scans.


class ScanBusy(SigauditError):
    """A scan is already running in this process."""

    def __init__(self, scan_id: int | None) -> None:
        self.scan_id = scan_id
        what = f"scan {scan_id} is running" if scan_id is not None else "a scan is starting"
        super().__init__(f"{what}; wait for it to finish")


class ShuttingDown(SigauditError):
    """The server is stopping and starts no scan."""


@dataclass
class _Running:
    scan_id: int
    trigger: str
    started_at: datetime
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    scan_id: int
    state: ScanState
    finished_at: datetime
    errors: tuple[str, ...] = ()


class ScanRunner:
    """Runs one scan at a time and records it in the store."""

    def __init__(
        self,
        options: ScanOptions,
        store: Store,
        *,
        clock: Clock = system_clock,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        on_finished: Callable[[ScanResult], None] | None = None,
    ) -> None:
        self.options = options
        self.store = store
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.on_finished = on_finished
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._current: _Running | None = None
        self._starting = False  # a start() is loading the policy / recording the scan
        self._closing = False
        self.last: RunOutcome | None = None

    @property
    def current_scan_id(self) -> int | None:
        with self._lock:
            return self._current.scan_id if self._current else None

    def start(self, trigger: str, *, wait: bool = False) -> int:
        """Begin a scan; in a new thread, or in the caller's when ``wait``. Returns its scan id.

        Raises ScanBusy (this process), ScanInProgress (another process), ShuttingDown, ConfigError
        (the policy cannot be loaded) or StoreError.

        The slot is claimed first, under the lock; the policy (which may fetch keys over the network or
        read the cluster) is loaded outside it. A second start meanwhile is refused at once, never queued
        behind the first: callers of the API cannot pile up threads waiting on a slow policy source.
        """
        with self._lock:
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            if self._current is not None or self._starting:
                raise ScanBusy(self._current.scan_id if self._current else None)
            self._starting = True
        run: _Running | None = None
        try:
            inputs = scan.load_inputs(self.options)
            if self._closing:
                raise ShuttingDown("the server is shutting down")
            started = self.clock()
            scan_id = scan.begin(self.options, self.store, inputs, lambda: started)
            with self._lock:
                run = self._current = _Running(scan_id, trigger, started)
                closing = self._closing
            if closing:  # shut down while the scan was being recorded: it never runs
                run.stop.set()
                raise ShuttingDown("the server is shutting down")
        except BaseException:
            if run is not None:
                try:
                    self.store.fail_scan(run.scan_id, ["scan failed: interrupted: the server is shutting down"])
                except StoreError as exc:
                    log.error("cannot mark scan %d failed: %s", run.scan_id, exc.diagnostics())
            with self._lock:
                self._starting = False
                if run is not None:
                    self._current = None
                self._idle.notify_all()
            raise
        with self._lock:
            self._starting = False
        log.info("scan %d of cluster %s started (%s)", scan_id, self.options.cluster, trigger)
        if wait:
            self._execute(run, inputs)
        else:
            run.thread = threading.Thread(
                target=self._execute, args=(run, inputs), name=f"sigaudit-scan-{scan_id}", daemon=True
            )
            run.thread.start()
        return scan_id

    def run_scheduled(self) -> None:
        """The scheduler's job: run a scan now unless one is running (then skip this run)."""
        try:
            self.start("schedule", wait=True)
        except (ScanBusy, ScanInProgress) as exc:
            log.warning("scheduled scan skipped: %s", exc.diagnostics())
        except ShuttingDown:
            pass
        except SigauditError as exc:
            log.error("scheduled scan could not start: %s", exc.diagnostics())

    def _execute(self, run: _Running, inputs: scan.ScanInputs) -> None:
        outcome: RunOutcome
        try:
            result = scan.run_begun(self.options, self.store, run.scan_id, inputs, clock=self.clock,
                                    stop=run.stop, heartbeat_interval=self.heartbeat_interval)
            outcome = RunOutcome(run.scan_id, result.state, result.finished_at, result.errors)
            log.info("scan %d finished: %s, %d images", run.scan_id, result.state.value, len(result.verdicts))
            if self.on_finished is not None:
                try:
                    self.on_finished(result)
                except Exception:
                    log.exception("after-scan hook failed")
        except BaseException as exc:  # the use case has marked the scan failed
            msg = scan.failure_message(exc)
            if not isinstance(exc, (SigauditError, InterruptedError)):
                log.exception("scan %d crashed", run.scan_id)
            log.error("scan %d failed: %s", run.scan_id, msg)
            outcome = RunOutcome(run.scan_id, ScanState.FAILED, self.clock(), (msg,))
            if not isinstance(exc, Exception):
                raise
        finally:
            with self._lock:
                self._current = None
                self._idle.notify_all()
        self.last = outcome

    def request_stop(self) -> int | None:
        """Refuse new scans and ask the running one to stop. Returns its scan id."""
        # No lock: this also runs inside a signal handler, on the thread that may hold it.
        self._closing = True
        current = self._current
        if current is None:
            return None
        current.stop.set()
        return current.scan_id

    def shutdown(self, timeout: float) -> bool:
        """Stop: wait up to ``timeout`` s for the running (or starting) scan to wind down, then mark it
        failed ourselves. Returns True if no scan thread is left running."""
        scan_id = self.request_stop()
        if scan_id is None and not self._starting:
            return True
        deadline = self.clock() + timedelta(seconds=timeout)
        with self._lock:
            while (self._current is not None or self._starting) and self.clock() < deadline:
                self._idle.wait(timeout=0.2)
            left = self._current is not None or self._starting
            scan_id = self._current.scan_id if self._current is not None else scan_id
        if left and scan_id is not None:
            log.warning("scan %d did not stop within %.0fs; marking it failed", scan_id, timeout)
            try:
                self.store.fail_scan(scan_id, ["scan failed: interrupted: the server shut down"])
            except StoreError as exc:
                log.error("cannot mark scan %d failed: %s", scan_id, exc.diagnostics())
        return not left


def build_scheduler(schedule: Schedule, job: Callable[[], None], *, misfire_grace_time: int) -> BackgroundScheduler:
    """A UTC BackgroundScheduler with the scan job: one instance at a time, missed runs coalesced into
    one, a run later than ``misfire_grace_time`` seconds skipped."""
    scheduler = BackgroundScheduler(
        timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": misfire_grace_time}
    )
    scheduler.add_job(
        job,
        schedule.trigger,
        id="scan",
        name=f"scan ({schedule.expr})",
        coalesce=True,
        max_instances=1,
        misfire_grace_time=misfire_grace_time,
        replace_existing=True,
    )
    return scheduler
