"""``python -m tests.tools.mutation [--budget N] [--module PATH ...] [--out DIR]`` (``make mutation``).

Copies the worktree to a temporary directory, checks that the mapped tests pass there unmutated,
then for each module (one at a time) and each of its mutants (one at a time) writes the mutant,
runs the module's unit tests with ``-x`` and a timeout, and restores the module. Writes
``<out>/results.json`` (every mutant and its fate) and ``<out>/summary.md`` (the score per module,
the survivors); exits 1 if a module scores under ``--min-score``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tests.tools.mutation.mutants import Mutant, apply, mutants
from tests.tools.mutation.targets import TARGETS, Target

ROOT = Path(__file__).resolve().parents[3]
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
IGNORE = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache",
                                "demo-out", "mutation-out", "*.egg-info", "build", "dist")


def load_equivalent(path: Path = EQUIVALENT) -> dict[str, str]:
    """``id  # why`` per line; blank lines and lines starting with ``#`` are skipped."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if not line.strip() or line.startswith("#"):
            continue
        mid, _, why = line.partition("  # ")
        out[mid.strip()] = why.strip()
    return out


OWN = ("scanner", "tests", "bench")  # reports/ and migrations/ are scanner.reports, scanner.migrations


def _own(name: str) -> bool:
    return name.split(".", 1)[0] in OWN


def warm(work: Path, tests: tuple[str, ...]) -> None:
    """Import here, once, every third-party module the tests import (found by a throwaway
    subprocess), so that each forked mutant run only imports the project's own modules."""
    code = ("import sys, pytest; pytest.main(['-q', '--collect-only', '-p', 'no:cacheprovider', *sys.argv[1:]]); "
            "print('\\n'.join(sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code, *tests], cwd=work, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    for name in proc.stderr.splitlines():
        if name and not _own(name) and name != "__main__":
            try:
                __import__(name)
            except Exception:  # best effort: a module that will not import here is imported later
                pass


class LineTracer:
    """A pytest plugin: which tests run which lines of one file (``sys.settrace``, that file only)."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.current = ""
        self.lines: dict[int, set[str]] = {}

    def _local(self, frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        if event == "line":
            self.lines.setdefault(frame.f_lineno, set()).add(self.current)
        return self._local

    def _global(self, frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        return self._local if frame.f_code.co_filename == self.filename else None

    def pytest_runtest_protocol(self, item: object, nextitem: object) -> None:
        self.current = str(getattr(item, "nodeid", ""))
        sys.settrace(self._global)
        threading.settrace(self._global)

    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]


def test_map(work: Path, target: Target, tests: tuple[str, ...]) -> dict[int, set[str]]:
    """line -> the test ids that execute it, from one traced run in a forked child."""
    out = work / ".mutation-lines.json"
    tracer = LineTracer(str(work / target.module))

    def collect() -> int:
        code = _run_pytest(list(tests), plugins=[tracer])
        out.write_text(json.dumps({str(k): sorted(v) for k, v in tracer.lines.items()}))
        return code

    fate, _ = _forked(collect, timeout=900)
    if fate != "survived":
        raise SystemExit(f"{target.module}: its tests fail unmutated ({fate}): {' '.join(tests)}")
    return {int(k): set(v) for k, v in json.loads(out.read_text()).items()}


def _run_pytest(args: list[str], plugins: list[object] | None = None) -> int:
    import pytest

    return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts=", *args],
                           plugins=plugins))


def _pytest(cwd: Path, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
    return _forked(lambda: _run_pytest(list(tests)), timeout)


def _forked(body: Callable[[], int], timeout: float) -> tuple[str, float]:
    """Run ``body`` in a forked child (the parent has the third-party modules loaded, never the
    project's); a test failure, a collection error or the timeout kills the mutant."""
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        code = 3
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            code = body()
        finally:
            os._exit(code)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            # 1: a test failed; 2: collection failed (the mutant broke an import): both kill the mutant.
            return ("survived" if code == 0 else "killed"), time.monotonic() - started
        if time.monotonic() - started > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - started
        time.sleep(0.02)


def sample(items: list[Mutant], budget: int | None) -> list[Mutant]:
    """At most ``budget`` mutants spread evenly over the module (deterministic)."""
    if budget is None or budget >= len(items):
        return items
    step = len(items) / budget
    return [items[int(i * step)] for i in range(budget)]


def run_target(target: Target, work: Path, budget: int | None, equivalent: dict[str, str],
               per_mutant: float | None, log: list[str], killed_before: frozenset[str] = frozenset()
               ) -> dict[str, object]:
    path = work / target.module
    original = path.read_text()
    tests = tuple(t for t in target.tests if (work / t).exists())
    warm(work, tests)
    started = time.monotonic()
    lines = test_map(work, target, tests)
    limit = per_mutant or max(30.0, 3 * (time.monotonic() - started))
    found = mutants(target.module, original, target.functions)
    chosen = sample(found, budget)
    results = []
    try:
        for i, m in enumerate(chosen, 1):
            if m.id in equivalent:
                fate, secs, chosen_tests = "equivalent", 0.0, []
            elif m.id in killed_before:  # --resume: killed by the earlier run's tests, which are all still here
                fate, secs, chosen_tests = "killed", 0.0, []
            else:
                path.write_text(apply(original, m))
                # Only the tests that run the mutated lines (none run them: every test of the module).
                chosen_tests = sorted({t for n in range(m.line, m.end_line + 1) for t in lines.get(n, ())})
                fate, secs = _pytest(work, tuple(chosen_tests) or tests, timeout=limit)
                path.write_text(original)
            results.append({"id": m.id, "op": m.op, "line": m.line, "function": m.function, "source": m.source,
                            "fate": fate, "seconds": round(secs, 2), "tests": len(chosen_tests)})
            line = f"[{target.module} {i}/{len(chosen)}] {fate:10} {m.id}"
            log.append(line)
            print(line, file=sys.stderr, flush=True)
    finally:
        path.write_text(original)
    counted = [r for r in results if r["fate"] != "equivalent"]
    killed = [r for r in counted if r["fate"] in ("killed", "timeout")]
    score = len(killed) / len(counted) if counted else 1.0
    return {"module": target.module, "tests": list(tests), "mutants": len(found), "run": len(chosen),
            "equivalent": len(results) - len(counted), "killed": len(killed),
            "survived": len(counted) - len(killed), "score": round(score, 4), "results": results}


def summary(modules: list[dict[str, object]]) -> str:
    lines = ["# Mutation testing (make mutation)", "",
             "| module | mutants | run | equivalent | killed | survived | score |", "|---|---|---|---|---|---|---|"]
    for m in modules:
        lines.append(f"| `{m['module']}` | {m['mutants']} | {m['run']} | {m['equivalent']} | {m['killed']} | "
                     f"{m['survived']} | {float(m['score']):.1%} |")  # type: ignore[arg-type]
    for m in modules:
        survivors = [r for r in m["results"] if r["fate"] not in ("killed", "timeout", "equivalent")]  # type: ignore[attr-defined]
        if survivors:
            lines += ["", f"## Survivors in `{m['module']}`", ""]
            lines += [f"- line {r['line']} `{r['fate']}`: {r['id']}" for r in survivors]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.tools.mutation", description=__doc__)
    ap.add_argument("--budget", type=int, default=None, help="at most N mutants per module (spread evenly)")
    ap.add_argument("--module", action="append", default=[], help="only this module (repeatable)")
    ap.add_argument("--out", default="mutation-out", help="directory for results.json and summary.md")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per mutant (default 4x the clean run)")
    ap.add_argument("--min-score", type=float, default=0.0, help="exit 1 if a module scores under this (0-1)")
    ap.add_argument("--list", action="store_true", help="list the mutant ids and exit")
    ap.add_argument("--resume", type=Path, default=None,
                    help="an earlier results.json: its killed mutants count as killed, only the rest run again")
    args = ap.parse_args(argv)
    targets = [t for t in TARGETS if not args.module or t.module in args.module]
    if args.list:
        for t in targets:
            for m in mutants(t.module, (ROOT / t.module).read_text(), t.functions):
                print(f"{m.line:5} {m.id}")
        return 0
    # Stopped with SIGTERM (or SIGINT in the background), the copy is still removed and the module restored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    equivalent = load_equivalent()
    killed_before: frozenset[str] = frozenset()
    if args.resume is not None:
        earlier = json.loads(args.resume.read_text())
        killed_before = frozenset(r["id"] for m in earlier for r in m["results"] if r["fate"] in ("killed", "timeout"))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    modules: list[dict[str, object]] = []
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix="sigaudit-mutation-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(ROOT, work, ignore=IGNORE, symlinks=True)  # scanner/reports stays a link to ../reports
        sys.dont_write_bytecode = True  # a mutant is never shadowed by the bytecode of another
        os.chdir(work)
        sys.path.insert(0, str(work))
        for name in [n for n in sys.modules if _own(n) and n != "tests.tools.mutation.__main__"]:
            del sys.modules[name]  # the copy's modules, never this checkout's (imported by the children)
        for t in targets:
            modules.append(run_target(t, work, args.budget, equivalent, args.timeout, log, killed_before))
            (out / "results.json").write_text(json.dumps(modules, indent=1))
            (out / "summary.md").write_text(summary(modules))
    print(summary(modules))
    return 1 if any(float(m["score"]) < args.min_score for m in modules) else 0  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
