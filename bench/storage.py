"""bench/storage.py — what one scan adds to the store (issue 20 item 2).

```
.venv/bin/python -m bench.storage                                 # 1,000 and 10,000 pods, SQLite and PostgreSQL
.venv/bin/python -m bench.storage --pods 1000 --backends sqlite --warm 3 --churn 0.01
```

Synthetic, through the Store API only (so the same script measures any version of the store): an
estate of ``--pods`` pods (one container each, 50 namespaces, Deployment-owned) running
``pods / 5`` digests; 90% of the digests signed (one cosign-shaped signature with 2 or 3 checks),
10% unsigned. One **cold** scan into an empty database, then ``--warm`` scans that find exactly the
same (new scan times, same verdicts), then one scan where ``--churn`` of the pods were replaced (new
pod names and uids, as a rollout does) and as many digests changed verdict. Measured after each scan:
SQLite, the database file (after a TRUNCATE checkpoint, so the WAL is in the file); PostgreSQL, the
sum of ``pg_total_relation_size`` over the store's tables (heap, indexes, TOAST); the rows per table;
the wall time of ``finish_scan``. PostgreSQL is the real server the tests start
(``tests/harness/fixtures_postgres.py``). Prints a Markdown table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
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

T0 = datetime(2026, 12, 1, tzinfo=UTC)
NAMESPACES = 50
KEY = "5f" * 32


def estate(pods: int, at: datetime, churn: float = 0.0) -> ScanResult:
    """The scan of ``pods`` pods; ``churn`` of the pods replaced and as many digests re-judged."""
    digests = max(1, pods // 5)
    replaced = int(pods * churn)
    rejudged = int(digests * churn)
    containers: dict[int, list[ContainerRef]] = {}
    for p in range(pods):
        d = p % digests
        ns = f"team-{p % NAMESPACES:02d}"
        app = f"app-{d % 200:03d}"
        gen = "b" if p < replaced else "a"  # a rollout: new pod names and uids
        containers.setdefault(d, []).append(ContainerRef(
            namespace=ns, pod=f"{app}-7d9f{gen}c{p:05d}-x{p % 97:02d}q", container="main",
            container_type=ContainerType.CONTAINER, image=f"registry.local:5000/bench/{app}:v1.{d % 7}",
            image_id=f"registry.local:5000/bench/{app}@sha256:{d:064x}",
            workload=Workload("ReplicaSet", f"{app}-7d9f{gen}c"), pull_secrets=("regcred",),
            pod_uid=f"{p:08x}-{gen}aaa-4bbb-8ccc-{d:012x}"))
    verdicts = []
    for d in range(digests):
        app = f"app-{d % 200:03d}"
        ref = ImageReference("registry.local:5000", f"bench/{app}", f"v1.{d % 7}", f"sha256:{d:064x}")
        image = RunningImage(ref, tuple(containers.get(d, ())),
                             pull_secrets=((f"team-{d % NAMESPACES:02d}", "regcred"),))
        signed = d % 10 != 9
        if d < rejudged:
            signed = not signed
        if signed:
            checks = [Check(CheckName.INTEGRITY, Outcome.PASSED, "payload digest matches the layer"),
                      Check(CheckName.AUTHENTICITY, Outcome.PASSED, "ECDSA P-256 signature verifies with key 1")]
            if d % 2:
                checks.append(Check(CheckName.TLOG, Outcome.SKIPPED, "ignoreTlog: the rule does not ask",
                                    enforced=False))
            sig = SignatureResult(
                kind="cosign", verifier="rule bench / cosign key 1", outcome=Outcome.PASSED,
                reason="signature verified", failure=SignatureFailure.NONE, signer=f"key sha256:{KEY}",
                key_sha256=KEY, signed_at=SignedTime(T0 - timedelta(days=d % 30), TimeSource.CLAIMED),
                checks=tuple(checks),
                details={"payload_digest": f"sha256:{(d * 7919):064x}", "layer": f"sha256:{(d * 31):064x}"})
            verdicts.append(Verdict(image, Status.VERIFIED, ("signature verified by rule bench / cosign key 1",),
                                    rule="bench", policy_source="policy.yaml", signatures=(sig,)))
        else:
            verdicts.append(Verdict(image, Status.UNSIGNED, ("no signature found for rule bench",), rule="bench",
                                    policy_source="policy.yaml"))
    stats = {"registry": {"registry.local:5000": {"requests": digests, "errors": {}}},
             "verification": {"passed": sum(1 for v in verdicts if v.signatures), "cache_hits": digests}}
    return ScanResult(cluster="bench", started_at=at, finished_at=at + timedelta(seconds=30),
                      state=ScanState.COMPLETE, verdicts=tuple(verdicts), policy_digest="sha256:" + "e" * 64,
                      sigaudit_version="bench", stats=stats)


def _size(store: Store, url: str) -> int:
    if store.dialect == "sqlite":
        return _file_size(Path(url.removeprefix("sqlite:///")))
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'"
        )).scalar_one())


def _rows(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        return {t: int(conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one())
                for t in sorted(tables) if t != "alembic_version"}


def measure(url: str, pods: int, warm: int, churn: float) -> dict[str, Any]:
    upgrade(url)
    store = open_store(url)
    out: dict[str, Any] = {"pods": pods, "digests": max(1, pods // 5), "scans": []}
    try:
        size, rows = _size(store, url), _rows(store)
        plan = [("cold", 0.0)] + [("warm", 0.0)] * warm + ([("churn", churn)] if churn else [])
        for i, (label, ch) in enumerate(plan):
            at = T0 + timedelta(hours=6 * i)
            result = estate(pods, at, ch)
            scan_id = store.begin_scan(result.cluster, at, result.policy_digest, result.sigaudit_version)
            t, cpu = time.perf_counter(), time.process_time()
            store.finish_scan(scan_id, result)
            wall, cpu = time.perf_counter() - t, time.process_time() - cpu
            new_size, new_rows = _size(store, url), _rows(store)
            out["scans"].append({"label": label, "churn": ch, "bytes": new_size - size,
                                 "write_s": round(wall, 3), "cpu_s": round(cpu, 3),
                                 "rows": {t: new_rows.get(t, 0) - rows.get(t, 0) for t in new_rows
                                          if new_rows.get(t, 0) != rows.get(t, 0)}})
            size, rows = new_size, new_rows
    finally:
        store.close()
    return out


def history(pods: int) -> list[ScanResult]:
    """A multi-scan history with changes of every kind: the estate, unchanged, with a rollout, with
    re-judged digests, with unresolved images, exemptions and signature details of every type (the
    store tests' sample scan), unchanged again, and a partial one."""
    from tests.integration.test_store_scans import sample_result

    out = []
    for i, churn in enumerate((0.0, 0.0, 0.05, 0.05, 0.2)):
        at = T0 + timedelta(hours=6 * i)
        r = estate(pods, at, churn)
        if i >= 3:
            # (bytes and datetimes in details left out: the JSON document cannot show them, on any
            # version; the real verifiers put only JSON types there)
            extra = [dataclasses.replace(v, signatures=tuple(
                dataclasses.replace(s, details={k: x for k, x in s.details.items()
                                                if not isinstance(x, bytes | datetime)})
                for s in v.signatures)) for v in sample_result("bench", T0, n_extra=3).verdicts]
            r = dataclasses.replace(r, verdicts=(*r.verdicts, *extra))
        out.append(r)
    out.append(dataclasses.replace(out[-1], started_at=T0 + timedelta(hours=36), state=ScanState.PARTIAL,
                                   finished_at=T0 + timedelta(hours=36, seconds=30),
                                   errors=("namespace x: forbidden",)))
    return out


def render(url: str, pods: int, directory: Path) -> None:
    """Record :func:`history` and write every output a stored scan feeds: the JSON document, CSV, the
    HTML report (with its trend and its diff against the previous scan, at a fixed clock), the
    metrics' namespace counts, the history and the listing. Run it on two versions of the store and
    ``diff -r`` the directories: they must be byte-identical."""
    from scanner.reports import render as reports

    upgrade(url)
    directory.mkdir(parents=True, exist_ok=True)
    with open_store(url) as store:
        ids = []
        for r in history(pods):
            scan_id = store.begin_scan(r.cluster, r.started_at, r.policy_digest, r.sigaudit_version)
            store.finish_scan(scan_id, r, {"rules": ["bench"]})
            ids.append(scan_id)
        for n, scan_id in enumerate(ids):
            (directory / f"{n}.json").write_text(reports.render_json(store, scan_id), encoding="utf-8")
            (directory / f"{n}.csv").write_text(reports.render_csv(store, scan_id), encoding="utf-8")
            (directory / f"{n}.html").write_text(reports.render_html(store, scan_id, clock=lambda: T0),
                                                 encoding="utf-8")
            counts = sorted(f"{ns} {st} {c}" for (ns, st), c in store.counts_by_namespace(scan_id).items())
            (directory / f"{n}.namespaces.txt").write_text("\n".join(counts) + "\n", encoding="utf-8")
        (directory / "history.txt").write_text("\n".join(repr(h) for h in store.history("bench")) + "\n",
                                               encoding="utf-8")
        (directory / "fleet.html").write_text(reports.render_fleet_html(store, clock=lambda: T0), encoding="utf-8")


def real_scans(pods: int, scans: int = 3) -> list[dict[str, Any]]:
    """The same through the real CLI: the bench's estate (``bench/run.py``: docker-registry, cosign
    and notation signatures, ``pods / 5`` digests), ``sigaudit scan --pods-file`` run ``scans`` times
    on one SQLite file; the file's growth after each."""
    import shutil
    import subprocess

    from bench.run import _this_checkout, notation_available, publish, sigaudit, write_pods, write_policy
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    work = Path(tempfile.mkdtemp(prefix="sigaudit-storage-cli-"))
    reg = start_distribution(work / "registry")
    out: list[dict[str, Any]] = []
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        est = publish(reg.url, reg.host, max(1, pods // 5), 20, keys, notation_available()[0], work)
        write_pods(est, pods, work / "pods.json")
        policy = write_policy(est, keys, work)
        db = work / "sigaudit.db"
        size = 0
        for i in range(scans):
            cmd = sigaudit("scan", "--pods-file", str(work / "pods.json"), "--policy", str(policy), "--db",
                           f"sqlite:///{db}", "--cluster", "bench", "-o", "none", "--no-progress")
            t = time.perf_counter()
            done = subprocess.run(cmd, cwd=policy.parent, env=_this_checkout(), capture_output=True, text=True,
                                  check=False, timeout=1800)
            if done.returncode not in (0, 1):
                raise RuntimeError(f"sigaudit scan exited {done.returncode}: {done.stderr[-2000:]}")
            wall = time.perf_counter() - t
            new_size = _file_size(db)
            out.append({"label": "cold" if i == 0 else "warm", "bytes": new_size - size, "wall_s": round(wall, 2)})
            size = new_size
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    return out


def _file_size(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        con.close()
    return os.path.getsize(path)


def markdown(results: Sequence[dict[str, Any]]) -> str:
    lines = ["| backend | pods | scan | bytes added | rows added | finish_scan wall / CPU (s) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for s in r["scans"]:
            label = s["label"] if s["label"] != "churn" else f"{s['churn']:.0%} churn"
            lines.append(f"| {r['backend']} | {r['pods']:,} | {label} | {s['bytes'] / 1024:,.1f} KB | "
                         f"{sum(s['rows'].values()):,} | {s['write_s']:.2f} / {s.get('cpu_s', 0):.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", default="1000,10000", help="comma-separated estate sizes")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--warm", type=int, default=3, help="unchanged scans after the cold one")
    parser.add_argument("--churn", type=float, default=0.01, help="share of pods replaced in the last scan (0: none)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--render", type=Path, metavar="DIR",
                        help="instead: record a multi-scan history (SQLite) and write every report of it into DIR")
    parser.add_argument("--cli", action="store_true",
                        help="instead: real `sigaudit scan` runs against the bench estate (SQLite, the first --pods)")
    args = parser.parse_args(argv)
    if args.cli:
        for s in real_scans(int(args.pods.split(",")[0]), 1 + args.warm):
            print(f"| sqlite (CLI) | {args.pods.split(',')[0]} | {s['label']} | {s['bytes'] / 1024:,.1f} KB | "
                  f"{s['wall_s']:.1f} s |")
        return 0
    if args.render:
        with tempfile.TemporaryDirectory(prefix="sigaudit-render-") as tmp:
            render(f"sqlite:///{tmp}/render.db", int(args.pods.split(",")[0]), args.render)
        return 0
    results = []
    server = None
    with tempfile.TemporaryDirectory(prefix="sigaudit-storage-") as tmp:
        try:
            for backend in args.backends.split(","):
                for pods in (int(p) for p in args.pods.split(",")):
                    if backend == "sqlite":
                        url = f"sqlite:///{tmp}/{pods}.db"
                    else:
                        if server is None:
                            from tests.harness.fixtures_postgres import _acquire_server

                            server = _acquire_server()
                        url = server.url(server.create_database())
                    r = measure(url, pods, args.warm, args.churn)
                    r["backend"] = backend
                    results.append(r)
                    print(f"{backend} {pods}: " + ", ".join(
                        f"{s['label']} +{s['bytes'] / 1024:.1f} KB" for s in r["scans"]), file=sys.stderr, flush=True)
        finally:
            if server is not None:
                server.stop()
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
