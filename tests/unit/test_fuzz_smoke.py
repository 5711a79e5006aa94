"""A short hypothesis run of every fuzz target (``make fuzz`` runs the long one), so CI exercises the
targets and their seeds; plus the crashes fuzzing found, pinned as regressions where they are fixed."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz.run import mutations
from tests.fuzz.targets import TARGETS, Finding, run_one

FINDINGS = sorted((Path(__file__).resolve().parents[1] / "data" / "fuzz-regressions").glob("finding-*"))


@pytest.mark.parametrize("path", FINDINGS, ids=[p.name for p in FINDINGS])
def test_fuzz_findings_stay_fixed(path: Path) -> None:
    """Crashes `make fuzz` found (cryptography's lazily parsed certificate/CRL fields read outside the
    parsers' try blocks); each must now end in a typed error."""
    target = TARGETS[path.name.split("-")[1]]
    run_one(target, path.read_bytes())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seeds_are_parsed_without_untyped_exceptions(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    assert seeds, f"{name}: no seeds (are the vectors in tests/data/vectors?)"
    for data in seeds:
        run_one(target, data)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_run(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()

    @settings(max_examples=60, database=None, deadline=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(mutations(seeds))
    def fuzz(data: bytes) -> None:
        run_one(target, data)

    fuzz()


def test_run_one_flags_untyped_exceptions_and_passes_typed_ones() -> None:
    from scanner.errors import ParseError
    from tests.fuzz.targets import Target

    def boom(data: bytes) -> None:
        if data == b"typed":
            raise ParseError("fine")
        raise KeyError("not fine")

    t = Target("boom", boom)
    run_one(t, b"typed")
    with pytest.raises(Finding, match="KeyError"):
        run_one(t, b"other")
