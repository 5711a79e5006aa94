"""bench/fleet.py — fifty clusters, a year of 6-hourly scans, one PostgreSQL (issue 20 item 3).

```
make bench-fleet                  # = .venv/bin/python -m bench.fleet (defaults below)
.venv/bin/python -m bench.fleet --clusters 50 --detail-days 14 --prune-clusters 3 --repeat 3 --json out.json
```

What is loaded (into the real PostgreSQL 15 the tests start, ``tests/harness/fixtures_postgres.py``: a
private data dir, 127.0.0.1, a free port, ``fsync=off``; stopped and removed at the end):

* ``--clusters`` clusters, cluster *i* running a seeded log-uniform 200-10,000 pods (one container each,
  50 namespaces) over ``clamp(pods / 5, 50, 2000)`` digests, ~90% signed (one cosign-shaped signature, 2
  or 3 checks), the rest unsigned; half of every cluster's digests come from a pool all clusters share
  (base images), half are its own.
* **Detail**, written through the Store API exactly as a scan writes it (``begin_scan`` then
  ``finish_scan`` with the whole ``ScanResult``): the last ``--detail-days`` days of 6-hourly scans of
  every cluster — what the chart's default retention (``retention: 14d``) keeps — with churn between
  consecutive scans: ``--pod-churn`` of the pods replaced by a rollout (new pod names and uids),
  ``--digest-churn`` of the digests replaced by a new version, and with probability ``--flip`` one
  digest's verdict flips. ``--prune-clusters`` clusters get ``--prune-days`` (30) more days of detail
  before the window: the month ``db prune`` deletes.
* **Summaries**: the rest of the year (``--days`` 365 in all) as ``scan_summaries`` rows only — what a
  deployment with retention holds for the scans whose detail is gone. Written by copying each
  cluster's own Store-written summaries back in time (one INSERT … SELECT per cluster; the Store has
  no API to write a summary without its scan), with scan ids below the detail's (the id sequence is
  moved on first), as they would be.

Then measured, each ``--repeat`` times (min / median) with the 1-minute load average beside it:
database size (``pg_database_size``, per table), one scan's write (``finish_scan``: warm = the same
content again, churn = one step of churn), ``sigaudit report`` of one cluster (HTML and JSON, the real
CLI as a process: start-up included), ``sigaudit report --fleet``, a metrics scrape (the collector of
``serve``'s ``/metrics`` over the store: one cluster cold and warm, all clusters warm and cold, and the
first scrape after a new scan once the collector was primed as ``serve`` primes it), and
``sigaudit db prune --cluster C --keep <detail-days>d`` (a month of one cluster's detail, a different
cluster each repeat). ``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the queries the reads use.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from scanner.models import (
    Check,
    CheckName,
    ContainerRef,
    ContainerType,
    ImageReference,
    Outcome,
    RunningImage,
    ScanResult,
    ScanState,
    SignatureFailure,
    SignatureResult,
    SignedTime,
    Status,
    TimeSource,
    Verdict,
    Workload,
)
from scanner.store import Store, open_store, upgrade

STEP = timedelta(hours=6)
NAMESPACES = 50
SHARED_POOL = 4000  # digests every cluster draws its base images from
KEY = "5f" * 32
POLICY = "sha256:" + "e" * 64
TARGETS = {"report_html": 2.0, "report_json": 2.0, "report_fleet": 5.0, "scrape_warm": 0.2,
           "scrape_cold": 0.2, "scrape_fleet": 0.2, "scrape_after_scan": 0.2, "prune_month": 60.0}


@dataclass
class Cluster:
    """One synthetic cluster and the state its churn moves on from scan to scan."""

    name: str
    index: int
    pods: int
    rng: random.Random
    slots: list[int] = field(default_factory=list)  # digest slot -> digest number
    pod_slot: list[int] = field(default_factory=list)  # pod -> digest slot
    pod_gen: list[int] = field(default_factory=list)  # pod -> rollout generation
    pruned: bool = False  # given a month more detail, for db prune
    flipped: set[int] = field(default_factory=set)  # digest numbers whose verdict is flipped
    next_digest: int = 0

    @classmethod
    def make(cls, index: int, seed: int) -> Cluster:
        rng = random.Random(seed * 1000 + index)
        pods = int(math.exp(rng.uniform(math.log(200), math.log(10_000))))
        c = cls(name=f"cluster-{index:02d}", index=index, pods=pods, rng=rng)
        digests = max(50, min(2000, pods // 5))
        shared = rng.sample(range(SHARED_POOL), digests // 2)
        own = [c._new_digest() for _ in range(digests - len(shared))]
        c.slots = shared + own
        c.pod_slot = [p % digests for p in range(pods)]
        c.pod_gen = [0] * pods
        return c

    def _new_digest(self) -> int:
        self.next_digest += 1
        return (self.index + 1) << 32 | self.next_digest  # this cluster's own: never in another's

    def churn(self, pod_churn: float, digest_churn: float, flip: float) -> None:
        """One scan's worth of change: rollouts, new image versions, a verdict that flips."""
        for p in self.rng.sample(range(self.pods), int(self.pods * pod_churn)):
            self.pod_gen[p] += 1
        for s in self.rng.sample(range(len(self.slots)), max(1, int(len(self.slots) * digest_churn))):
            self.slots[s] = self._new_digest()
            for p in range(s, self.pods, len(self.slots)):  # its pods roll out the new version
                self.pod_gen[p] += 1
        if self.rng.random() < flip:
            self.flipped ^= {self.slots[self.rng.randrange(len(self.slots))]}

    def result(self, at: datetime) -> ScanResult:
        containers: dict[int, list[ContainerRef]] = {}
        for p in range(self.pods):
            s = self.pod_slot[p]
            d, gen = self.slots[s], self.pod_gen[p]
            app = f"app-{s % 300:03d}"
            containers.setdefault(s, []).append(ContainerRef(
                namespace=f"team-{p % NAMESPACES:02d}", pod=f"{app}-{gen:x}c{p:05d}-x{p % 97:02d}q",
                container="main", container_type=ContainerType.CONTAINER,
                image=f"registry.local:5000/fleet/{app}:v{d & 0xffff}",
                image_id=f"registry.local:5000/fleet/{app}@sha256:{d:064x}",
                workload=Workload("ReplicaSet", f"{app}-{gen:x}c"), pull_secrets=("regcred",),
                pod_uid=f"{p:08x}-{gen:04x}-4bbb-8ccc-{d & 0xffffffffffff:012x}"))
        verdicts = [self._verdict(s, d, tuple(containers.get(s, ()))) for s, d in enumerate(self.slots)]
        return ScanResult(cluster=self.name, started_at=at, finished_at=at + timedelta(seconds=40),
                          state=ScanState.COMPLETE, verdicts=tuple(verdicts), policy_digest=POLICY,
                          sigaudit_version="bench",
                          stats={"verification": {"cache_hits": len(verdicts)}})

    def _verdict(self, slot: int, d: int, containers: tuple[ContainerRef, ...]) -> Verdict:
        app = f"app-{slot % 300:03d}"
        ref = ImageReference("registry.local:5000", f"fleet/{app}", f"v{d & 0xffff}", f"sha256:{d:064x}")
        image = RunningImage(ref, containers, pull_secrets=((f"team-{slot % NAMESPACES:02d}", "regcred"),))
        signed = (d % 10 != 9) != (d in self.flipped)
        if not signed:
            return Verdict(image, Status.UNSIGNED, ("no signature found for rule fleet",), rule="fleet",
                           policy_source="policy.yaml")
        checks = [Check(CheckName.INTEGRITY, Outcome.PASSED, "payload digest matches the layer"),
                  Check(CheckName.AUTHENTICITY, Outcome.PASSED, "ECDSA P-256 signature verifies with key 1")]
        if d % 2:
            checks.append(Check(CheckName.TLOG, Outcome.SKIPPED, "ignoreTlog: the rule does not ask", enforced=False))
        sig = SignatureResult(
            kind="cosign", verifier="rule fleet / cosign key 1", outcome=Outcome.PASSED, reason="signature verified",
            failure=SignatureFailure.NONE, signer=f"key sha256:{KEY}", key_sha256=KEY,
            signed_at=SignedTime(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=d % 5000), TimeSource.CLAIMED),
            checks=tuple(checks), details={"payload_digest": f"sha256:{(d * 7919):064x}"})
        return Verdict(image, Status.VERIFIED, ("signature verified by rule fleet / cosign key 1",), rule="fleet",
                       policy_source="policy.yaml", signatures=(sig,))


def write_scan(store: Store, c: Cluster, at: datetime) -> float:
    """One scan of ``c`` at ``at`` through the Store API; returns finish_scan's wall time."""
    result = c.result(at)
    scan_id = store.begin_scan(c.name, at, POLICY, "bench")
    t = time.perf_counter()
    store.finish_scan(scan_id, result)
    return time.perf_counter() - t


def plan(c: Cluster, steps: int, extra: int) -> range:
    """The 6-hour steps of ``c``'s detail, counted from the oldest step any cluster has."""
    return range(0 if c.pruned else extra, steps + extra)


def load(store: Store, clusters: Sequence[Cluster], *, now: datetime, steps: int, extra: int, days: int,
         churn: tuple[float, float, float], log: Callable[[str], None]) -> dict[str, Any]:
    first = now - STEP * (steps + extra)
    with store.engine.begin() as conn:  # the year before the detail: ids below the detail's
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('scans', 'id'), :n)"),
                     {"n": len(clusters) * days * 4 + 1})
    t0 = time.perf_counter()
    written = 0
    writes: list[float] = []
    for c in clusters:
        ks = plan(c, steps, extra)
        for k in ks:
            if k > ks.start:
                c.churn(*churn)
            writes.append(write_scan(store, c, first + STEP * k))
            written += 1
        log(f"{c.name}: {c.pods:,} pods, {len(c.slots):,} digests, {len(ks)} scans "
            f"({written} in {time.perf_counter() - t0:.0f} s)")
    detail_s = time.perf_counter() - t0
    # The year of summaries before the detail: each cluster's own summaries, copied back in time.
    t1 = time.perf_counter()
    with store.engine.begin() as conn:
        for c in clusters:
            ks = plan(c, steps, extra)
            conn.execute(sa.text(
                "INSERT INTO scan_summaries (scan_id, cluster, state, started_at, finished_at, policy_digest, "
                "sigaudit_version, total, compliant, counts, namespaces) "
                "SELECT :base + g, s.cluster, s.state, s.started_at - make_interval(hours => 6 * (:n - g + 1)), "
                "s.finished_at - make_interval(hours => 6 * (:n - g + 1)), s.policy_digest, s.sigaudit_version, "
                "s.total, s.compliant, s.counts, s.namespaces "
                "FROM generate_series(1, :n) g, LATERAL (SELECT * FROM scan_summaries WHERE cluster = :c "
                "ORDER BY started_at LIMIT 1 OFFSET (g % :k)) s"),
                {"base": c.index * days * 4, "n": days * 4 - len(ks), "c": c.name, "k": min(8, len(ks))})
        conn.execute(sa.text("ANALYZE"))
    return {"detail_load_s": round(detail_s, 1), "summary_load_s": round(time.perf_counter() - t1, 1),
            "finish_scan_median_s": round(statistics.median(writes), 3)}


def keep_everything(store: Store) -> int:
    """No retention: every summarised scan of the year before the detail also keeps its scan row,
    naming the verdict set of its cluster's oldest detail scan — what an unchanged scan is in the
    content-addressed store (the detail the year's churn would add is extrapolated, not written)."""
    cols = ("cluster, state, started_at, finished_at, heartbeat_at, policy_digest, sigaudit_version, owner_host, "
            "owner_pid, errors, counts, total, compliant, stats, policy_summary, verdict_set_id")
    with store.engine.begin() as conn:
        n = conn.execute(sa.text(
            f"INSERT INTO scans (id, {cols}) "
            "SELECT m.scan_id, m.cluster, m.state, m.started_at, m.finished_at, m.finished_at, m.policy_digest, "
            "m.sigaudit_version, f.owner_host, f.owner_pid, f.errors, m.counts, m.total, m.compliant, f.stats, "
            "f.policy_summary, f.verdict_set_id FROM scan_summaries m "
            "JOIN (SELECT DISTINCT ON (cluster) * FROM scans ORDER BY cluster, started_at) f ON f.cluster = m.cluster "
            "WHERE NOT EXISTS (SELECT 1 FROM scans s WHERE s.id = m.scan_id)")).rowcount
        conn.execute(sa.text("ANALYZE"))
    return int(n)


def replay(clusters: Sequence[Cluster], *, steps: int, extra: int, churn: tuple[float, float, float]) -> None:
    """The clusters' state after :func:`load` (the same churn, nothing written)."""
    for c in clusters:
        for _ in plan(c, steps, extra)[1:]:
            c.churn(*churn)


def _loadavg() -> float:
    return os.getloadavg()[0]


def _cpu() -> float:
    """User + system CPU of this process and of its waited-for children (the CLI runs)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], Any], repeat: int) -> dict[str, Any]:
    """Wall time (and the client side's CPU: on a loaded machine wall time moves with the load) of
    ``repeat`` runs of ``fn``; the database server's CPU is not in it."""
    runs = []
    for _ in range(repeat):
        la = _loadavg()
        cpu = _cpu()
        t = time.perf_counter()
        fn()
        runs.append({"s": round(time.perf_counter() - t, 4), "cpu_s": round(_cpu() - cpu, 3), "load": round(la, 1)})
    walls = [r["s"] for r in runs]
    return {"min": min(walls), "median": statistics.median(walls),
            "cpu_median": statistics.median(r["cpu_s"] for r in runs), "runs": runs}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    walls = [r["s"] for r in runs]
    return {"min": min(walls), "median": statistics.median(walls),
            "cpu_median": statistics.median(r["cpu_s"] for r in runs), "runs": runs}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cli(*args: str) -> Callable[[], None]:
    def run() -> None:
        done = subprocess.run([sys.executable, "-m", "scanner.cli", *args], env=_env(), capture_output=True,
                              text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"sigaudit {' '.join(args[:2])} exited {done.returncode}: {done.stderr[-2000:]}")
    return run


def sizes(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        total = int(conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one())
        tables = {r[0]: {"bytes": int(r[1]), "rows": int(r[2])} for r in conn.execute(sa.text(
            "SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r' "
            "ORDER BY 2 DESC"))}
    return {"database_bytes": total, "tables": tables}


EXPLAIN = {
    "clusters": "SELECT DISTINCT cluster FROM scans ORDER BY cluster",
    "clusters_skip_scan": "WITH RECURSIVE c(cluster) AS (SELECT min(cluster) FROM scans UNION ALL "
                          "SELECT (SELECT min(l.cluster) FROM scans l WHERE l.cluster > c.cluster) FROM c "
                          "WHERE c.cluster IS NOT NULL) SELECT cluster FROM c WHERE cluster IS NOT NULL",
    "latest_scan_id": "SELECT id FROM scans WHERE cluster = :c AND state IN ('complete', 'partial') "
                      "ORDER BY started_at DESC, id DESC LIMIT 1",
    "list_scans": "SELECT * FROM scans WHERE cluster = :c ORDER BY started_at DESC, id DESC LIMIT 20",
    "history": "SELECT * FROM scan_summaries WHERE cluster = :c ORDER BY started_at DESC, scan_id DESC LIMIT 100",
}


def explain(store: Store, cluster: str) -> dict[str, str]:
    out = {}
    with store.engine.connect() as conn:
        for name, q in EXPLAIN.items():
            plan = conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + q), {"c": cluster})
            out[name] = "\n".join(r[0] for r in plan)
    return out


def measure(store: Store, url: str, clusters: Sequence[Cluster], *, now: datetime, detail_days: int, repeat: int,
            churn: tuple[float, float, float], work: Path) -> dict[str, Any]:
    from scanner.metrics.collector import SigauditCollector, StoreSource

    out: dict[str, Any] = {"size": sizes(store)}
    big = max(clusters, key=lambda c: c.pods)
    at = [now]

    def next_at() -> datetime:
        at[0] += STEP
        return at[0]

    out["write_warm"] = timed(lambda: write_scan(store, big, next_at()), repeat)

    def churned() -> None:
        big.churn(*churn)
        write_scan(store, big, next_at())
    out["write_churn"] = timed(churned, repeat)
    out["write_cluster"] = {"name": big.name, "pods": big.pods, "digests": len(big.slots)}
    out["report_html"] = timed(cli("report", "--db", url, "--cluster", big.name, "--format", "html",
                                   "--out", str(work / "r.html")), repeat)
    out["report_json"] = timed(cli("report", "--db", url, "--cluster", big.name, "--format", "json",
                                   "--out", str(work / "r.json")), repeat)
    out["report_fleet"] = timed(cli("report", "--db", url, "--fleet", "--out", str(work / "fleet.html")), repeat)

    def scrape(collector: SigauditCollector) -> None:
        list(collector.collect())

    # serve registers one collector for its life: a warm scrape is the second and later ones
    out["scrape_cold"] = timed(lambda: scrape(SigauditCollector(StoreSource(store, big.name))), repeat)
    one = SigauditCollector(StoreSource(store, big.name))
    scrape(one)
    out["scrape_warm"] = timed(lambda: scrape(one), repeat)
    fleet = SigauditCollector(StoreSource(store))
    scrape(fleet)
    out["scrape_fleet"] = timed(lambda: scrape(fleet), repeat)
    out["scrape_fleet_cold"] = timed(lambda: scrape(SigauditCollector(StoreSource(store))), repeat)
    # serve primes its collector in the scan's thread when a scan finished: the first scrape after a new
    # scan then answers from the cache (the priming's own cost is the scan's, not a scrape's)
    primes: list[dict[str, Any]] = []

    def scan_then_prime() -> None:
        big.churn(*churn)
        write_scan(store, big, next_at())
        primes.append(timed(one.prime, 1)["runs"][0])
    first: list[dict[str, Any]] = []
    for _ in range(repeat):
        scan_then_prime()
        first.append(timed(lambda: scrape(one), 1)["runs"][0])
    out["scrape_after_scan"] = _summary(first)
    out["prime_after_scan"] = _summary(primes)
    out["explain"] = explain(store, big.name)
    pruned = [c for c in clusters if c.pruned]
    runs: list[dict[str, Any]] = []
    for c in pruned[:repeat]:
        la = _loadavg()
        cpu = _cpu()
        t = time.perf_counter()
        cli("db", "prune", "--db", url, "--cluster", c.name, "--keep", f"{detail_days}d")()
        runs.append({"s": round(time.perf_counter() - t, 3), "cpu_s": round(_cpu() - cpu, 3), "load": round(la, 1),
                     "cluster": c.name, "pods": c.pods})
    if runs:
        walls = [r["s"] for r in runs]
        out["prune_month"] = {"min": min(walls), "median": statistics.median(walls),
                              "cpu_median": statistics.median(r["cpu_s"] for r in runs), "runs": runs}
    out["size_after_prune"] = sizes(store)
    return out


def markdown(r: dict[str, Any]) -> str:
    m = r["measured"]
    mb = 2**20
    lines = [f"Loaded: {r['loaded']['clusters']} clusters ({r['loaded']['pods_total']:,} pods, "
             f"{r['loaded']['scans']:,} scan rows, {r['loaded']['summaries']:,} scan summaries = a year; "
             f"detail of {r['loaded']['detail_steps_per_cluster']} scans a cluster written through the Store API), "
             f"database {m['size']['database_bytes'] / mb:,.0f} MB", "",
             "| what | min | median | client CPU (median) | target | load avg |", "|---|---|---|---|---|---|"]
    for key in ("write_warm", "write_churn", "report_html", "report_json", "report_fleet", "scrape_cold",
                "scrape_warm", "scrape_fleet", "scrape_fleet_cold", "prime_after_scan", "scrape_after_scan",
                "prune_month"):
        if key not in m:
            continue
        t = TARGETS.get(key)
        loads = "-".join(f"{x:.0f}" for x in sorted({r_["load"] for r_ in m[key]["runs"]}))
        cpu = m[key].get("cpu_median")
        lines.append(f"| {key.replace('_', ' ')} | {m[key]['min']:.3f} s | {m[key]['median']:.3f} s | "
                     f"{f'{cpu:.2f} s' if cpu is not None else ''} | {f'≤ {t:g} s' if t else ''} | {loads} |")
    lines += ["", "| table | MB | rows |", "|---|---|---|"]
    for name, t in m["size"]["tables"].items():
        lines.append(f"| {name} | {t['bytes'] / mb:,.1f} | {t['rows']:,} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--days", type=int, default=365, help="history in all (summaries before the detail)")
    parser.add_argument("--detail-days", type=int, default=14, help="detail kept (the chart's retention: 14d)")
    parser.add_argument("--load-days", type=int, default=None,
                        help="write only this many days of the detail window (default: all of it); the "
                             "database size is then extrapolated linearly to --detail-days")
    parser.add_argument("--prune-days", type=int, default=30, help="detail before the window, for db prune")
    parser.add_argument("--prune-clusters", type=int, default=3, help="clusters that get --prune-days more detail")
    parser.add_argument("--pod-churn", type=float, default=0.02)
    parser.add_argument("--digest-churn", type=float, default=0.005)
    parser.add_argument("--flip", type=float, default=0.1, help="chance per scan that one verdict flips")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--url", help="an existing empty PostgreSQL database instead of starting a server")
    parser.add_argument("--no-retention", action="store_true",
                        help="also keep a scan row for every summarised scan of the year (see keep_everything)")
    parser.add_argument("--measure-only", action="store_true",
                        help="with --url: the database a previous run loaded (its churn is replayed, not written)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')} load {_loadavg():.1f}] {msg}", file=sys.stderr, flush=True)

    server = None
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    churn = (args.pod_churn, args.digest_churn, args.flip)
    try:
        url = args.url
        if url is None:
            from tests.harness.fixtures_postgres import _acquire_server

            server = _acquire_server()
            url = server.url(server.create_database())
        upgrade(url)
        clusters = [Cluster.make(i, args.seed) for i in range(args.clusters)]
        # The month for db prune goes to the clusters nearest the median size.
        median = statistics.median(c.pods for c in clusters)
        for c in sorted(clusters, key=lambda c: abs(c.pods - median))[:args.prune_clusters]:
            c.pruned = True
        log(f"{len(clusters)} clusters, {sum(c.pods for c in clusters):,} pods")
        steps = (args.load_days if args.load_days is not None else args.detail_days) * 4
        extra = args.prune_days * 4
        start = now - STEP * args.repeat * 3
        with open_store(url) as store, tempfile.TemporaryDirectory(prefix="sigaudit-fleet-") as tmp:
            if args.measure_only:
                replay(clusters, steps=steps, extra=extra, churn=churn)
                loaded: dict[str, Any] = {}
            else:
                loaded = load(store, clusters, now=start, steps=steps, extra=extra, days=args.days, churn=churn,
                              log=log)
            if args.no_retention:
                loaded["scan_rows_of_the_year"] = keep_everything(store)
            with store.engine.connect() as conn:
                loaded["scans"] = int(conn.execute(sa.text("SELECT count(*) FROM scans")).scalar_one())
                loaded["summaries"] = int(conn.execute(sa.text("SELECT count(*) FROM scan_summaries")).scalar_one())
            loaded.update(clusters=len(clusters), pods_total=sum(c.pods for c in clusters),
                          digests_total=sum(len(c.slots) for c in clusters),
                          detail_steps_per_cluster=steps, month_for_prune=[c.name for c in clusters if c.pruned])
            log(f"loaded: {loaded}")
            measured = measure(store, url, clusters, now=start, detail_days=args.detail_days, repeat=args.repeat,
                               churn=churn, work=Path(tmp))
            if steps < args.detail_days * 4:
                # Each kept scan adds its scan row, its verdict set's members and what its churn changed:
                # the detail grows linearly with the scans kept.
                before = measured["size"]["database_bytes"]
                summary_bytes = measured["size"]["tables"].get("scan_summaries", {}).get("bytes", 0)
                per_step = (before - summary_bytes) / max(1, loaded["scans"])
                measured["size_extrapolated"] = {
                    "detail_days": args.detail_days, "bytes_per_scan": round(per_step),
                    "database_bytes": round(summary_bytes + per_step * args.detail_days * 4 * len(clusters))}
        result: dict[str, Any] = {"args": vars(args) | {"json": str(args.json) if args.json else None},
                                  "loaded": loaded, "measured": measured, "loadavg_end": os.getloadavg()}
    finally:
        if server is not None:
            server.stop()
    print(markdown(result))
    for name, plan in result["measured"]["explain"].items():
        print(f"\n-- {name}\n{plan}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
