"""The mutation driver of ``make mutation`` (tests/tools/mutation): each operator makes code that still
compiles and changes what it says, ids are stable, and every mutant listed as equivalent still exists
(a list that names mutants the code no longer has would hide nothing and rot)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.tools.mutation.__main__ import EQUIVALENT, ROOT, load_equivalent, sample
from tests.tools.mutation.mutants import apply, mutants
from tests.tools.mutation.targets import TARGETS

SOURCE = '''
import logging
log = logging.getLogger(__name__)

def f(a, b, xs):
    """doc"""
    log.debug("not mutated")
    if a == b and not xs:
        raise ValueError("x")
    record(a)
    return max(xs) if a in xs else True
'''


def test_every_operator_applies_and_compiles() -> None:
    ms = mutants("m.py", SOURCE)
    ops = sorted({m.op for m in ms})
    assert ops == ["boolop", "builtin", "call", "cmp", "if-false", "not", "raise", "return"]
    assert not any("not mutated" in m.id for m in ms) and not any("doc" in m.source for m in ms)
    for m in ms:
        mutated = apply(SOURCE, m)
        ast.parse(mutated)
        assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(SOURCE)), m.id
    by_op = {m.op: apply(SOURCE, m) for m in ms}
    assert "a == b or not xs" in by_op["boolop"]
    assert "min(xs)" in by_op["builtin"]
    assert "return True" not in by_op["return"] and "return max" not in by_op["return"]


def test_ids_name_the_function_and_do_not_depend_on_line_numbers() -> None:
    first = [m.id for m in mutants("m.py", SOURCE)]
    assert [m.id for m in mutants("m.py", "\n\n" + SOURCE)] == first
    assert all(i.startswith("m.py::f::") for i in first)
    assert len(set(first)) == len(first)


def test_functions_restrict_the_mutants() -> None:
    src = "def f(a):\n    return a == 1\n\ndef g(a):\n    return a == 2\n"
    assert {m.function for m in mutants("m.py", src, ("g",))} == {"g"}


def test_sample_spreads_the_budget() -> None:
    ms = mutants("m.py", SOURCE)
    assert sample(ms, None) == ms and len(sample(ms, 3)) == 3 and sample(ms, 3)[0] == ms[0]


def test_every_listed_equivalent_mutant_exists_and_says_why() -> None:
    listed = load_equivalent(EQUIVALENT)
    existing = {m.id for t in TARGETS for m in mutants(t.module, (ROOT / t.module).read_text(), t.functions)}
    assert sorted(set(listed) - existing) == []
    assert all(why for why in listed.values())


def test_every_target_and_test_file_exists() -> None:
    for t in TARGETS:
        assert (ROOT / t.module).is_file(), t.module
        for test in t.tests:
            assert Path(ROOT / test).is_file(), test
