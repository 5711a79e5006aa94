"""bench/threadcpu.py: a function's CPU is its own thread's, counted once per outer call, and the
wrapped functions are put back afterwards."""

from __future__ import annotations

import threading
import time
import types

import pytest

from bench import threadcpu


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_each_thread_is_charged_its_own_cpu_and_nesting_counts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    mod = types.ModuleType("cpu_probe")

    def busy(depth: int) -> None:
        _spin(0.02)
        if depth:
            mod.busy(depth - 1)

    def idle() -> None:
        time.sleep(0.1)  # waiting is no CPU

    mod.busy, mod.idle = busy, idle  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "cpu_probe", mod)
    timing = threadcpu.ThreadCPU()
    timing.wrap("cpu_probe:busy")
    timing.wrap("cpu_probe:idle")
    threads = [threading.Thread(target=mod.busy, args=(1,)) for _ in range(3)] + [threading.Thread(target=mod.idle)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    timing.restore()
    assert timing.calls["cpu_probe.busy"] == 3  # the nested call is inside the outer one
    assert 0.11 <= timing.seconds["cpu_probe.busy"] < 0.5  # 3 x 2 x 20 ms of CPU
    assert timing.seconds["cpu_probe.idle"] < 0.05
    assert mod.busy is busy and mod.idle is idle
    assert timing.table()[0].endswith("cpu_probe.busy")


def test_every_phase_names_a_function_that_exists_and_is_put_back() -> None:
    """``--phases`` wraps the scan's stages outside the workers: a renamed stage must fail here, not
    silently drop out of the table."""
    import importlib

    timing = threadcpu.ThreadCPU()
    originals = []
    for spec in threadcpu.PHASES:
        module, _, qual = spec.partition(":")
        owner = importlib.import_module(module)
        *path, name = qual.split(".")
        for part in path:
            owner = getattr(owner, part)
        originals.append((owner, name, getattr(owner, name)))
        timing.wrap(spec)
    assert all(getattr(o, n) is not f for o, n, f in originals)
    timing.restore()
    assert all(getattr(o, n) is f for o, n, f in originals)


def test_the_collector_s_cpu_is_counted_per_generation() -> None:
    import gc

    with threadcpu.CollectorCPU() as collector:
        gc.collect()
    assert collector.collections[2] >= 1 and collector.seconds >= 0.0
    assert collector not in gc.callbacks
