"""Cold scans at two concurrency settings, interleaved on one estate, on loopback (issue 19).

Usage::

    python -m bench.concurrency_ab [--a 8/16] [--b 32/32] [--repeat 3] [--digests 2000] [--latency-ms 0]

Each setting is ``REGISTRY_CONCURRENCY/CONCURRENCY``. One docker-registry and one estate (as ``bench.run``
publishes it), then cold scans (each on an empty database) alternating A, B, A, B, ... so a change of the
machine's load hits both alike; prints one JSON document: per setting the runs (wall, scan CPU, registry
CPU, peak RSS, load) and median / min. ``--latency-ms`` puts the latency proxy in front.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import run as b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.concurrency_ab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", default="8/16")
    ap.add_argument("--b", default="32/32")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--digests", type=int, default=2000)
    ap.add_argument("--latency-ms", type=int, default=0)
    args = ap.parse_args(argv)
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    work = Path(tempfile.mkdtemp(prefix="sigaudit-ab-"))
    reg = start_distribution(work / "registry")
    proxy = None
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        use_notation, _ = b.notation_available()
        est = b.publish(reg.url, reg.host, args.digests, max(1, args.digests // 10), keys, use_notation, work)
        if args.latency_ms > 0:
            from bench.latency_proxy import ProxyProcess

            host, port = reg.host.rsplit(":", 1)
            proxy = ProxyProcess((host, int(port)), args.latency_ms / 1000.0).start()
            est = replace(est, host=proxy.address)
        pods = work / "pods.json"
        b.write_pods(est, args.digests * 5, pods)
        policy = b.write_policy(est, keys, work)
        settings = {"a": args.a, "b": args.b}
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in settings}
        for k in range(args.repeat):
            for name, setting in settings.items():
                reg_n, conc = setting.split("/")
                r = b.measure_scan(f"ab-{name}-{setting.replace('/', '-')}", reg, est, pods, policy,
                                   work / f"{name}-{k}.db", work,
                                   ["--registry-concurrency", reg_n, "--concurrency", conc])
                runs[name].append({key: r[key] for key in ("wall_s", "cpu_s", "registry_cpu_s", "peak_rss_mb",
                                                           "load_average_at_start", "unexpected_verdicts")})
        out = {name: {"setting": settings[name], "runs": rs,
                      **{key: b.spread([r[key] for r in rs]) for key in ("wall_s", "cpu_s", "registry_cpu_s")}}
               for name, rs in runs.items()}
        print(json.dumps(out, indent=2))
        wrong = sum(r["unexpected_verdicts"] for rs in runs.values() for r in rs)
        return 0 if wrong == 0 else 1
    finally:
        if proxy is not None:
            proxy.stop()
        reg.stop()


if __name__ == "__main__":
    sys.exit(main())
