"""``make fuzz``: run every fuzz target in :mod:`tests.fuzz.targets` and print executions and findings.

    python -m tests.fuzz.run [--budget 1000000] [--engine auto|atheris|hypothesis] [--targets a,b]
                             [--out fuzz-out] [--max-seconds 0]

The budget (total executions, also ``SIGAUDIT_FUZZ_BUDGET``) is split evenly across the targets.
Engines: ``atheris`` (coverage-guided libFuzzer, one child process per target, seeds as the initial
corpus; used by ``auto`` when the package is installed) or ``hypothesis`` (in-process, random bytes
and mutations of the seeds). A finding is an untyped exception escaping a parser; its input is
written under ``--out``. Exit status 1 when any target has findings.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.targets import TARGETS, Finding, Target, run_one


@dataclass
class Outcome:
    target: str
    engine: str
    executions: int = 0
    seconds: float = 0.0
    findings: list[str] = field(default_factory=list)


# -- hypothesis ---------------------------------------------------------------------------------------


def mutations(seeds: list[bytes]):  # type: ignore[no-untyped-def]
    """Random bytes, or a seed with a few byte-level edits (overwrite, insert, delete, splice)."""
    from hypothesis import strategies as st

    raw = st.binary(max_size=2048)
    if not seeds:
        return raw
    edit = st.tuples(st.sampled_from("oidx"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=8))

    def apply(seed_edits: tuple[bytes, list[tuple[str, int, bytes]]]) -> bytes:
        data, edits = bytearray(seed_edits[0]), seed_edits[1]
        for kind, pos, chunk in edits:
            at = pos % (len(data) + 1)
            if kind == "o":
                data[at : at + len(chunk)] = chunk
            elif kind == "i":
                data[at:at] = chunk
            elif kind == "d":
                del data[at : at + len(chunk)]
            else:  # splice another seed's tail
                other = seeds[pos % len(seeds)]
                data[at:] = other[chunk[0] % (len(other) + 1) :]
        return bytes(data)

    mutated = st.tuples(st.sampled_from(seeds), st.lists(edit, max_size=6)).map(apply)
    return st.one_of(mutated, mutated, mutated, raw)


def run_hypothesis(target: Target, budget: int, out: Path, max_seconds: float) -> Outcome:
    from hypothesis import HealthCheck, Phase, given, settings

    res = Outcome(target.name, "hypothesis")
    seeds = target.seeds()
    deadline = time.monotonic() + max_seconds if max_seconds else None
    t0 = time.monotonic()
    for data in seeds:  # the seeds themselves first
        res.executions += 1
        try:
            run_one(target, data)
        except Finding as exc:
            res.findings.append(_save(out, target.name, data, str(exc)))

    class _Stop(Exception):
        pass

    @settings(max_examples=max(1, budget - len(seeds)), database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
              report_multiple_bugs=False)
    @given(mutations(seeds))
    def fuzz(data: bytes) -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise _Stop
        res.executions += 1
        run_one(target, data)

    try:
        fuzz()
    except _Stop:
        pass
    except Finding as exc:
        res.findings.append(_save(out, target.name, getattr(exc, "data", b""), str(exc)))
    except Exception as exc:  # hypothesis reports the shrunk failing example through its own exception
        res.findings.append(f"{type(exc).__name__}: {str(exc)[:500]}")
    res.seconds = time.monotonic() - t0
    return res


def _save(out: Path, name: str, data: bytes, what: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    p = out / f"finding-{name}-{hashlib.sha256(data).hexdigest()[:12]}"
    p.write_bytes(data)
    return f"{what} (input: {p})"


# -- atheris (one child per target) ---------------------------------------------------------------------


def run_atheris(target: Target, budget: int, out: Path, max_seconds: float) -> Outcome:
    corpus = out / "corpus" / target.name
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in target.seeds():
        (corpus / hashlib.sha256(seed).hexdigest()[:16]).write_bytes(seed)
    args = [sys.executable, "-m", "tests.fuzz.run", "--child", target.name, f"-runs={budget}", "-timeout=20",
            "-rss_limit_mb=3072", "-max_len=65536", f"-artifact_prefix={out}/finding-{target.name}-",
            "-print_final_stats=1"]
    if max_seconds:
        args.append(f"-max_total_time={int(max_seconds)}")
    args.append(str(corpus))
    t0 = time.monotonic()
    proc = subprocess.run(args, capture_output=True, text=True, errors="replace")
    res = Outcome(target.name, "atheris", seconds=time.monotonic() - t0)
    log = proc.stderr
    (out / f"{target.name}.log").write_text(log)
    done = re.search(r"Done (\d+) runs", log)
    stat = re.search(r"stat::number_of_executed_units:\s*(\d+)", log)
    res.executions = int(done.group(1)) if done else int(stat.group(1)) if stat else 0
    res.findings += re.findall(r"(?m)^FINDING: (.*)$", log)
    if proc.returncode != 0:
        crash = re.findall(r"(?m)^(?:=== Uncaught Python exception: ===\n)?(.*Finding: .*)$", log)
        artifact = re.findall(r"Test unit written to (\S+)", log)
        res.findings.append(f"{crash[-1] if crash else 'exit ' + str(proc.returncode)}"
                            f"{' (input: ' + artifact[-1] + ')' if artifact else ''}")
    return res


def child(name: str, argv: list[str]) -> None:
    import atheris

    target = TARGETS[name]
    with atheris.instrument_imports(include=["scanner"]):
        import scanner.inventory.pods
        import scanner.inventory.references
        import scanner.policy.loader
        import scanner.registry.auth
        import scanner.registry.client
        import scanner.verify.cosign
        import scanner.verify.keys
        import scanner.verify.notation_envelope
        import scanner.verify.revocation
        import scanner.verify.sigstore_bundle
        import scanner.verify.x509  # noqa: F401
    target.seeds()  # build keys and PKI once, before the first run

    out = Path(next((a.split("=", 1)[1] for a in argv if a.startswith("-artifact_prefix=")), "fuzz-out/x")).parent
    seen: set[str] = set()

    def one(data: bytes) -> None:
        # Record each distinct finding (exception type and innermost scanner frame) and keep going, so
        # one run reports every kind of crash a target has, with the full execution count.
        try:
            run_one(target, data)
        except Finding as exc:
            cause = exc.__cause__
            where = ""
            tb = cause.__traceback__ if cause is not None else None
            while tb is not None:
                if "/scanner/" in tb.tb_frame.f_code.co_filename:
                    where = f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}"
                tb = tb.tb_next
            key = f"{type(cause).__name__} at {where or '?'}"
            if key not in seen:
                seen.add(key)
                path = _save(out, name, data, str(exc)[:300])
                print(f"FINDING: {key}: {path}", file=sys.stderr, flush=True)

    atheris.Setup([sys.argv[0], *argv], one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=int, default=int(os.environ.get("SIGAUDIT_FUZZ_BUDGET", "1000000")),
                    help="total executions across targets")
    ap.add_argument("--engine", choices=["auto", "atheris", "hypothesis"], default="auto")
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated: " + ",".join(TARGETS))
    ap.add_argument("--out", default="fuzz-out", help="corpus, logs and findings")
    ap.add_argument("--max-seconds", type=float, default=0, help="per-target time cap (0: none)")
    args = ap.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}")
    per = max(1, args.budget // len(names))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in names:
        print(f"fuzz: {n}: {engine}, {per} executions ...", file=sys.stderr, flush=True)
        run = run_atheris if engine == "atheris" else run_hypothesis
        r = run(TARGETS[n], per, out, args.max_seconds)
        print(f"fuzz: {n}: {r.executions} executions in {r.seconds:.0f}s, {len(r.findings)} findings",
              file=sys.stderr, flush=True)
        results.append(r)
    total = sum(r.executions for r in results)
    print(f"\n{'target':<10} {'engine':<10} {'executions':>12} {'seconds':>8} findings")
    for r in results:
        print(f"{r.target:<10} {r.engine:<10} {r.executions:>12,} {r.seconds:>8.0f} {len(r.findings)}")
        for f in r.findings:
            print(f"    {f}")
    print(f"{'total':<10} {'':<10} {total:>12,} {sum(r.seconds for r in results):>8.0f} "
          f"{sum(len(r.findings) for r in results)}")
    return 1 if any(r.findings for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
