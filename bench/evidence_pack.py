"""The evidence pack of a 2,000-image scan (issue #23): time and size of ``sigaudit evidence`` and of
``sigaudit verify-evidence`` (offline, in a network namespace when run as root), over the bench's own
estate (``bench/run.py``: a real docker-registry, cosign and notation signatures).

Usage: python -m bench.evidence_pack [--digests 2000] [--repos 200] [--pods 10000]
Prints one JSON document; the README's benchmark section quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bench.run import notation_available, publish, write_pods, write_policy


def timed(cmd: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    t0 = time.monotonic()
    before = os.times()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    after = os.times()
    return (time.monotonic() - t0, (after.children_user - before.children_user)
            + (after.children_system - before.children_system), r)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--digests", type=int, default=2000)
    ap.add_argument("--repos", type=int, default=200)
    ap.add_argument("--pods", type=int, default=10000)
    args = ap.parse_args(argv)
    from tests.harness.cosign_sign import KeyPair
    from tests.harness.fixtures_registry import start_distribution

    work = Path(tempfile.mkdtemp(prefix="sigaudit-evidence-bench-"))
    reg = start_distribution(work / "registry")
    try:
        keys = {"trusted": KeyPair.ecdsa(), "wrong": KeyPair.ecdsa()}
        est = publish(reg.url, reg.host, args.digests, args.repos, keys, notation_available()[0], work)
        pods, policy = work / "pods.json", write_policy(est, keys, work)
        write_pods(est, args.pods, pods)
        priv = ec.generate_private_key(ec.SECP256R1())
        (work / "k.pem").write_bytes(priv.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        (work / "k.pub").write_bytes(priv.public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo))
        db = f"sqlite:///{work / 'db.sqlite'}"
        cli = [sys.executable, "-m", "scanner.cli"]
        res: dict[str, object] = {"digests": len(est.images), "pods": args.pods}
        for run in ("cold", "warm"):
            wall, cpu, r = timed([*cli, "scan", "--pods-file", str(pods), "--policy", str(policy), "--db", db,
                                  "-o", "none", "--no-progress", "--exit-zero-on-violations"])
            assert r.returncode == 0, r.stderr[-2000:]
            res[f"scan_{run}_s"] = round(wall, 2)
        import sqlite3

        with sqlite3.connect(work / "db.sqlite") as conn:
            q = "select sum(length(data)) from evidence_blobs"
            res["evidence_blob_bytes_in_db"] = conn.execute(q).fetchone()[0]
            res["scan_index_bytes"] = [n for (n,) in conn.execute(
                "select length(b.data) from evidence_refs r join evidence_blobs b on b.sha256 = r.sha256 "
                "where r.name like 'scan/%' order by r.name")]
        wall, cpu, r = timed([*cli, "evidence", "--db", db, "--sign-key", str(work / "k.pem"),
                              "--out", str(work / "pack.tar.gz")])
        assert r.returncode == 0, r.stderr[-2000:]
        res.update(evidence_s=round(wall, 2), evidence_cpu_s=round(cpu, 2),
                   pack_bytes=(work / "pack.tar.gz").stat().st_size)
        netns = ["unshare", "-n"] if os.geteuid() == 0 and shutil.which("unshare") else []
        wall, cpu, r = timed([*netns, *cli, "verify-evidence", str(work / "pack.tar.gz"), "--key",
                              str(work / "k.pub"), "-o", "json"])
        res.update(verify_s=round(wall, 2), verify_cpu_s=round(cpu, 2), verify_exit=r.returncode,
                   verify=json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout[-2000:],
                   offline=bool(netns), db_bytes=(work / "db.sqlite").stat().st_size)
        if isinstance(res["verify"], dict):
            res["verify"] = {k: v for k, v in res["verify"].items() if k != "notes"} | {
                "problems": res["verify"]["problems"][:5]}
        print(json.dumps(res, indent=2))
        return 0 if r.returncode == 0 else 1
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
