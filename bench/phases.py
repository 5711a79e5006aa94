"""The scan's own CPU on the warm path, phase by phase, without a registry (issue 19 item 2).

    python -m bench.phases [--pods 10000] [--digests 2000] [--repeat 5]

Process CPU seconds (``time.process_time``: on a shared, loaded machine wall time moves with the
load, CPU much less), min and median of ``--repeat`` runs, with the load average:

* ``pods parse``: ``iter_pods_file`` over a ``kubectl get pods -A -o json`` list of ``--pods`` pods
  (the bench's pod shape, one container each, spread over ``--digests`` digests);
* ``inventory``: ``build_inventory`` over the same file (parse, containers, grouping by digest);
* ``json document``: ``write_scan_json`` of a scan of ``--digests`` verified verdicts, five containers
  and one signature of four checks each;
* ``start-up``: ``python -c "import scanner.cli, scanner.scan, scanner.store, scanner.pipeline"`` as a
  process (user+system CPU of the child), the imports a SQLite scan of a pod file makes before it scans,
  with the checkout byte-compiled first (``bench.run.compile_checkout``: as pip installs it).

Run it from the checkout to measure (``python -m`` puts the current directory first on sys.path).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path


def write_pods(path: Path, n_pods: int, n_digests: int) -> None:
    from tests.harness.demo import _pod

    with path.open("w", encoding="utf-8") as f:
        f.write('{"apiVersion":"v1","kind":"List","metadata":{},"items":[\n')
        for p in range(n_pods):
            i = p % n_digests
            repo, tag, digest = f"bench/r{i % 200:03d}", f"v{i}", f"sha256:{i:064x}"
            rs = f"r{i % 200:03d}-{tag}-7d9f8b6c5"
            pod = _pod(f"team-{p % 50:02d}", f"{rs}-{p:05d}",
                       [("app", f"127.0.0.1:5000/{repo}:{tag}", f"127.0.0.1:5000/{repo}@{digest}")],
                       owner=("ReplicaSet", rs), labels={"pod-template-hash": "7d9f8b6c5"})
            f.write(("," if p else "") + json.dumps(pod, separators=(",", ":")) + "\n")
        f.write("]}\n")


def scan_result(n_digests: int, containers: int = 5) -> object:
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
        SignatureResult,
        Status,
        Verdict,
        Workload,
    )

    t = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
    verdicts = []
    for i in range(n_digests):
        repo = f"bench/r{i % 200:03d}"
        ref = ImageReference("127.0.0.1:5000", repo, f"v{i}", f"sha256:{i:064x}")
        cs = tuple(ContainerRef(f"team-{(i + k) % 50:02d}", f"r-{i}-{k}", "app", ContainerType.CONTAINER,
                                f"127.0.0.1:5000/{repo}:v{i}", f"127.0.0.1:5000/{repo}@sha256:{i:064x}",
                                Workload("Deployment", f"r{i}")) for k in range(containers))
        sig = SignatureResult("cosign", "all/0 cosign key", Outcome.PASSED, "signature verified",
                              signer="sha256:" + "a" * 64,
                              checks=tuple(Check(n, Outcome.PASSED, "ok") for n in list(CheckName)[:4]),
                              details={"layer": "sha256:" + "b" * 64})
        verdicts.append(Verdict(RunningImage(ref, cs), Status.VERIFIED, ("signed by key k",), signatures=(sig,),
                                rule="all", policy_source="policy.yaml"))
    return ScanResult("bench", t, t, ScanState.COMPLETE, tuple(verdicts), "sha256:" + "0" * 64, scan_id=1,
                      sigaudit_version="bench")


def cpu(fn: Callable[[], object], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        runs.append(time.process_time() - start)
    return {"min": round(min(runs), 3), "median": round(statistics.median(runs), 3)}


def startup_cpu() -> None:
    code = "import scanner.cli, scanner.scan, scanner.store, scanner.pipeline"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.getcwd())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    startup_cpu.last = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.phases", description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=10000)
    ap.add_argument("--digests", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    from bench.run import compile_checkout
    from scanner.document import write_scan_json
    from scanner.inventory.pods import iter_pods_file
    from scanner.pipeline import build_inventory

    compile_checkout()  # start-up as an installed sigaudit has it: with bytecode
    with tempfile.TemporaryDirectory(prefix="sigaudit-phases-") as tmp:
        pods = Path(tmp) / "pods.json"
        write_pods(pods, args.pods, args.digests)
        result = scan_result(args.digests)
        load = os.getloadavg()
        out: dict[str, object] = {
            "load_average": [round(x, 2) for x in load],
            "pods parse": cpu(lambda: sum(1 for _ in iter_pods_file(pods)), args.repeat),
            "inventory": cpu(lambda: build_inventory(iter_pods_file(pods)), args.repeat),
            "json document": cpu(lambda: write_scan_json(result, io.StringIO()), args.repeat),  # type: ignore[arg-type]
        }
        starts = []
        for _ in range(args.repeat):
            startup_cpu()
            starts.append(startup_cpu.last)  # type: ignore[attr-defined]
        out["start-up (child process)"] = {"min": round(min(starts), 3), "median": round(statistics.median(starts), 3)}
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
