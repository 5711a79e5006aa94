"""HTTP/2 against HTTP/1.1 for the registry client's transport, by measurement (issue 19).

Usage::

    python -m bench.http2 [--requests 2000] [--concurrency 16] [--latency-ms 40] [--repeat 3]

Debian's docker-registry over TLS (it offers ``h2`` and ``http/1.1`` by ALPN), a few hundred small
manifests in it, and ``--requests`` manifest GETs from ``--concurrency`` threads on one urllib3
``HTTPSConnectionPool(maxsize=N, block=True)`` — the registry client's own pool shape — once with
HTTP/1.1 and once with urllib3's HTTP/2 (``urllib3.http2``, urllib3 >= 2.3 with ``h2``), on loopback
and through the latency proxy (bench/latency_proxy.py, its own process; TLS passes through it, so a
handshake pays its round trips as over a real link). Interleaved and repeated: wall, client CPU,
registry CPU, proxy CPU, median (min). Prints a markdown table and writes JSON with ``--json``.

The two protocols run in separate child processes (``urllib3.http2.inject_into_urllib3()`` patches
urllib3 process-wide and offers only ``h2`` by ALPN), each importing only what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client(argv: list[str]) -> int:
    """Child: ``PROTO HOST PORT CA N REQUESTS REPO``: the GETs, then one JSON line of figures."""
    proto, host, port, ca, n, count, repo = argv
    import urllib3

    if proto == "h2":
        import urllib3.http2

        urllib3.http2.inject_into_urllib3()
    pool = urllib3.HTTPSConnectionPool(host, int(port), maxsize=int(n), block=True, retries=False, timeout=30.0,
                                       ca_certs=ca, assert_hostname=False)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    paths = [f"/v2/{repo}/manifests/t{i % 200}" for i in range(int(count))]
    versions: set[int] = set()

    def get(p: str) -> None:
        r = pool.request("GET", p, headers=accept)
        if r.status != 200:
            raise RuntimeError(f"{p}: HTTP {r.status}")
        versions.add(r.version)

    from concurrent.futures import ThreadPoolExecutor

    # One request before the threads, for both protocols: urllib3's HTTP/2 probe cache deadlocks when
    # three or more threads make the first connections to an origin at once (a waiter that wakes to the
    # cached answer keeps the origin's lock; urllib3/urllib3#5206, open against 2.8.0).
    get(paths[0])
    t0, c0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(int(n)) as ex:
        list(ex.map(get, paths))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    pool.close()
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "http_versions": sorted(versions)}), flush=True)
    return 0


def publish(reg: Any, repo: str, n: int = 200) -> None:
    import httpx

    from tests.harness.oci import OCI_MANIFEST, canonical_json, descriptor, push_blob, push_manifest

    with httpx.Client(verify=reg.ssl_context(), timeout=30.0) as c:
        config, layer = b"{}", b"layer"
        push_blob(reg.url, repo, config, client=c)
        push_blob(reg.url, repo, layer, client=c)
        for i in range(n):
            m = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "config": descriptor("application/vnd.oci.image.config.v1+json", config),
                 "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer)],
                 "annotations": {"n": str(i)}}
            push_manifest(reg.url, repo, f"t{i}", canonical_json(m), client=c)


def spread(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.latency_proxy import ProxyProcess
    from tests.harness.fixtures_registry import start_distribution

    work = Path(tempfile.mkdtemp(prefix="sigaudit-http2-"))
    reg = start_distribution(work / "registry", tls=True)
    proxy = None
    try:
        repo = "bench/h2"
        publish(reg, repo)
        host, port = reg.host.rsplit(":", 1)
        paths: dict[str, tuple[str, int]] = {"loopback": (host, int(port))}
        if args.latency_ms > 0:
            proxy = ProxyProcess((host, int(port)), args.latency_ms / 1000.0).start()
            paths[f"proxy {args.latency_ms} ms"] = (proxy.host, proxy.port)
        out: dict[str, Any] = {"requests": args.requests, "concurrency": args.concurrency, "repeat": args.repeat,
                               "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "rows": {}}
        runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.repeat):
            for path_name, (h, p) in paths.items():
                for proto in ("http/1.1", "h2"):  # interleaved, so load drifts hit both alike
                    r0 = _cpu(reg.proc.pid)
                    p0 = proxy.cpu_s() if proxy else 0.0
                    cmd = [sys.executable, "-m", "bench.http2", "--client", "h2" if proto == "h2" else "h1", h,
                           str(p), str(reg.ca_path), str(args.concurrency), str(args.requests), repo]
                    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        raise RuntimeError(f"{proto} client failed:\n{done.stderr[-2000:]}")
                    fig = json.loads(done.stdout.strip().splitlines()[-1])
                    fig["registry_cpu_s"] = _cpu(reg.proc.pid) - r0
                    fig["proxy_cpu_s"] = (proxy.cpu_s() - p0) if proxy and path_name != "loopback" else 0.0
                    runs.setdefault((path_name, proto), []).append(fig)
                    print(f"http2 bench: {path_name} {proto}: {fig['wall_s']:.2f}s wall, {fig['cpu_s']:.2f}s client "
                          f"CPU, {fig['registry_cpu_s']:.2f}s registry CPU, versions {fig['http_versions']}",
                          file=sys.stderr, flush=True)
        for (path_name, proto), figs in runs.items():
            out["rows"][f"{path_name} / {proto}"] = {
                "path": path_name, "protocol": proto,
                "http_versions": figs[0]["http_versions"],
                "wall_s": spread([f["wall_s"] for f in figs]),
                "client_cpu_s": spread([f["cpu_s"] for f in figs]),
                "client_cpu_per_request_us": round(statistics.median(f["cpu_s"] for f in figs) / args.requests * 1e6),
                "registry_cpu_s": spread([f["registry_cpu_s"] for f in figs]),
                "proxy_cpu_s": spread([f["proxy_cpu_s"] for f in figs]),
            }
        out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        return out
    finally:
        if proxy is not None:
            proxy.stop()
        reg.stop()


def markdown(res: dict[str, Any]) -> str:
    lines = [f"{res['requests']} manifest GETs over TLS, {res['concurrency']} threads on one urllib3 "
             f"HTTPSConnectionPool(maxsize={res['concurrency']}), median (min) of {res['repeat']}, load average "
             f"{res['load_average_at_start'][0]} → {res['load_average_at_end'][0]}:", "",
             "| path / protocol | wall s | client CPU s | client CPU / request µs | registry CPU s | proxy CPU s |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, r in res["rows"].items():
        def mm(d: dict[str, float]) -> str:
            return f"{d['median']:.2f} ({d['min']:.2f})"
        lines.append(f"| {name} (HTTP version seen: {'/'.join(str(v) for v in r['http_versions'])}) | "
                     f"{mm(r['wall_s'])} | {mm(r['client_cpu_s'])} | {r['client_cpu_per_request_us']} | "
                     f"{mm(r['registry_cpu_s'])} | {mm(r['proxy_cpu_s'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--client"]:
        return client(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench.http2", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency-ms", type=int, default=40, help="0: loopback only")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", help="write the figures here too")
    args = ap.parse_args(argv)
    res = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
