"""Where a scan's worker threads spend their CPU, per function (issue 19: the per-request cost).

    cd <bench work dir> && PYTHONPATH=<checkout> python -m bench.threadcpu --out cpu.txt -- \\
        scan --pods-file pods.json --policy policy.yaml --db sqlite:///cold.db --cluster bench -o none \\
        --json-out x.json --no-progress

Runs ``scanner.cli`` in process with the functions in :data:`FUNCTIONS` (or ``--function
module:Qual.name``, repeatable) wrapped: each call's **own thread's CPU** (``time.thread_time``) is
added to the function's total, inclusive of what it calls (a recursive or nested call of the same
function is counted once). Written: total CPU-s, calls and µs per call, largest first, and the process
CPU. Why not the usual tools: cProfile (with ``time.thread_time`` as its clock, one profiler per
thread) costs a few µs per Python call and so triples the scan and ranks by call count; py-spy (and a
sampler of per-thread CPU clocks) puts a thread's CPU on the frame it is found in, which for a worker
is mostly the ``recv`` it then waits in. A wrapper costs ~2 µs per wrapped call and nothing elsewhere.
A function imported by name into another module (``from x import f``) must be named where it is
called (``scanner.pipeline:discover``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

FUNCTIONS = (
    "scanner.pipeline:verify_image", "scanner.pipeline:discover", "scanner.pipeline:_run_verifier",
    "scanner.pipeline:evaluate_rules", "scanner.pipeline:run_scan", "scanner.pipeline:build_inventory",
    "scanner.registry.client:RegistryClient._request", "scanner.registry.client:RegistryClient._exchange",
    "scanner.registry.client:RegistryClient.get_manifest", "scanner.registry.client:RegistryClient.get_blob",
    "scanner.registry.client:RegistryClient.referrers", "scanner.registry.client:RegistryClient.tag_set",
    "scanner.registry.client:_read_capped", "scanner.registry.client:verify_digest",
    "scanner.registry.client:parse_manifest", "scanner.registry.transport:Transport.open",
    "scanner.registry.auth:CredentialStore.candidates",
    "scanner.evidence.capture:RecordingReader.get_manifest", "scanner.evidence.capture:RecordingReader.get_blob",
    "scanner.verify.cosign:CosignKeyVerifier.verify", "scanner.verify.notation:NotationVerifier.verify_signature",
    "scanner.verify.notation:parse_envelope", "scanner.verify.notation:validate_signing_chain",
)

# ``--phases``: the whole process outside the registry worker threads, stage by stage (issue 19, the
# window scan's fixed per-scan CPU), beside the workers' own total. Inclusive, so a line contains the
# lines of what it calls (build_inventory holds the pod-file parse); the imports of these modules are
# made before the scan starts and reported on their own line, as is the cyclic collector's CPU.
PHASES = (
    "scanner.scan:load_inputs", "scanner.store:open_store", "scanner.scan:run_once",
    "scanner.pipeline:run_scan", "scanner.pipeline:build_inventory", "scanner.pipeline:resolve",
    "scanner.pipeline:_groups", "scanner.pipeline:image_cache_keys",
    "scanner.store.cache:Cache.cache_get_many", "scanner.store.cache:Cache.relists_get_many",
    "scanner.pipeline:verify_image", "scanner.pipeline:_from_window", "scanner.pipeline:_from_cache",
    "scanner.pipeline:evaluate_rules", "scanner.store.cache:Cache.cache_put_many",
    "scanner.store.cache:Cache.relists_put_many", "scanner.store.results:_write_content",
    "scanner.store.store:Store.finish_scan", "scanner.scan:_keep_evidence", "scanner.document:write_scan_json",
)


class CollectorCPU:
    """The process CPU spent in the cyclic garbage collector (``gc.callbacks``), and its collections per
    generation."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections: Counter[int] = Counter()
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start
            self.collections[int(info["generation"])] += 1

    def __enter__(self) -> CollectorCPU:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class ThreadCPU:
    """Inclusive thread-CPU totals of wrapped functions, safe across threads."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._undo: list[Callable[[], None]] = []

    def wrap(self, spec: str) -> None:
        """Wrap ``module:Qual.name`` in place (undone by :meth:`restore`)."""
        module, _, qual = spec.partition(":")
        owner: Any = importlib.import_module(module)
        *path, name = qual.split(".")
        for part in path:
            owner = getattr(owner, part)
        fn = getattr(owner, name)
        label = f"{module.rsplit('.', 1)[-1]}.{qual}"

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            active = self._local.__dict__.setdefault("active", set())
            if label in active:  # nested in itself: the outer call counts it
                return fn(*args, **kwargs)
            active.add(label)
            start = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - start
                active.discard(label)
                with self._lock:
                    self.seconds[label] += spent
                    self.calls[label] += 1

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, fn))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def table(self) -> list[str]:
        return [f"{s:8.3f} {self.calls[k]:7d} {1e6 * s / self.calls[k]:9.1f} us  {k}"
                for k, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--out", default="-", help="where the table goes (default stdout)")
    ap.add_argument("--function", action="append", default=[],
                    help="module:Qual.name to time instead of the default set (repeatable)")
    ap.add_argument("--phases", action="store_true",
                    help="time the scan's stages outside the worker threads too (PHASES), with the imports "
                         "made before it and the cyclic collector's CPU")
    ap.add_argument("cli", nargs=argparse.REMAINDER, help="-- and the sigaudit arguments")
    args = ap.parse_args(argv)
    cli_args = args.cli[1:] if args.cli[:1] == ["--"] else args.cli
    timing = ThreadCPU()
    for spec in args.function or (PHASES if args.phases else FUNCTIONS):
        timing.wrap(spec)
    from scanner import cli

    before = time.process_time()  # the interpreter, and the imports of the wrapped modules and the CLI
    code: Any = 0
    with CollectorCPU() as collector:
        try:
            cli.main.main(args=cli_args, prog_name="sigaudit", standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
        finally:
            timing.restore()
    lines = [f"process CPU {time.process_time():.2f} s (before the command: {before:.2f} s; cyclic collector: "
             f"{collector.seconds:.3f} s in {dict(sorted(collector.collections.items()))} collections by "
             "generation); per function: thread CPU s, calls, per call", *timing.table()]
    text = "\n".join(lines) + "\n"
    if args.out == "-":
        sys.stdout.write(text)
    else:
        with open(args.out, "w") as fh:
            fh.write(text)
    return int(code) if isinstance(code, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
