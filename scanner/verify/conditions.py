"""Conditions on what a verified attestation says: CEL expressions over its in-toto statement.

A cosign verifier's ``attestations: [{predicateType, conditions: [CEL]}]`` asks, for each entry, a
verified attestation of that predicate type whose statement satisfies every condition. The
expressions run only over a statement whose signature, signer and binding to the running digest
were verified (:func:`scanner.verify.sigstore_bundle.verify_bundle` calls :func:`evaluate` after
that); never over unverified bytes. Variables:

* ``predicate`` — the statement's ``predicate``;
* ``statement`` — the whole in-toto statement;
* ``subject`` — the statement's subject naming the running digest;
* ``now`` — the scan clock (a CEL timestamp), never a time the signer claims.

Outcomes: every condition ``true`` → ``passed``; a condition ``false`` → ``failed`` (the verdict is
``invalid``, naming the expression and its value); a condition that cannot be evaluated (a missing
field, a type error, a result that is not a bool, a statement over the size bound) → ``error``.

CEL implementation: ``common-expression-language`` (Python bindings of the Rust ``cel`` crate).
Measured against ``cel-python`` on an SLSA provenance with a 2,000-entry predicate list, one
``exists`` macro: 63 ms against 553 ms per evaluation, 0.09 ms against 1 ms per compilation, and
fewer dependencies. Neither offers a cost limit, and the Rust evaluation holds the GIL (no thread
time-out can stop it), so cost is bounded before evaluation, on the expression's code (comments and
string literals taken out): its length; at most :data:`MAX_COMPREHENSIONS` comprehension macro, and
only the boolean ones (``all``, ``exists``, ``exists_one``: the Rust engine builds ``map`` and
``filter`` lists in quadratic time, 15 s for 10,000 elements); from that macro's opening parenthesis
on, no input variable but its iteration variable (no nesting, no second walk of the statement per
element) and no ``matches()`` (a regular expression compiled per element) — so the cost stays
linear in the statement — and the statement's number of JSON values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scanner.verify.cosign_rules import COSIGN_SIGN_PREDICATE

MAX_EXPRESSION_CHARS = 1024
MAX_CONDITIONS = 16  # per predicate type
MAX_ENTRIES = 16  # attestation entries per verifier
MAX_COMPREHENSIONS = 1
# JSON values (objects, arrays, scalars) handed to CEL. Handing over costs about 10 µs a value, once per
# attestation; each evaluation then copies the context again (about 1.5 µs a value).
MAX_STATEMENT_VALUES = 50_000
VARIABLES = ("predicate", "statement", "subject", "now")
PASSED, FAILED, ERROR = "passed", "failed", "error"

# CEL's comprehension macros (cel-spec "Macros"): each iterates over a list or map. Counted in the
# code (comments and string literals taken out by :func:`_code_only`), with or without the receiver's
# dot: a count too high refuses an expression, never admits one.
_COMPREHENSION = re.compile(r"\b(all|exists_one|exists|map|filter)\s*\(")
_SHOWN = 200  # characters of a value shown in a reason
_PATH = re.compile(r"\b(?:predicate|statement|subject)(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_MAX_PATHS = 4
_READS_INPUT = re.compile(r"\b(?:predicate|statement|subject)\b")
_LIST_BUILDERS = re.compile(r"\b(map|filter)\s*\(")
_SLOW_IN_LOOP = re.compile(r"\bmatches\s*\(")


class ConditionError(ValueError):
    """A condition that cannot be compiled or breaks a bound: a policy error, found at load."""


@dataclass(frozen=True, slots=True)
class Condition:
    source: str
    program: Any  # cel.Program
    uses_now: bool
    # The field paths the expression reads (``predicate.runDetails.builder.id``), compiled: their
    # values are shown when the condition is false, so the reason names the value that failed.
    paths: tuple[tuple[str, Any], ...] = ()
    variables: frozenset[str] = frozenset(VARIABLES)  # the input variables the expression reads


@dataclass(frozen=True, slots=True)
class AttestationRequirement:
    """A verified attestation of ``predicate_type`` must satisfy every condition."""

    predicate_type: str
    conditions: tuple[Condition, ...]


def compile_condition(source: str) -> Condition:
    try:
        import cel
    except ImportError as exc:  # a product dependency; a broken install is a policy that cannot load
        raise ConditionError("CEL conditions need the common-expression-language package, which is not "
                             "installed") from exc

    if not isinstance(source, str) or not source.strip():
        raise ConditionError("a condition is an empty expression")
    if len(source) > MAX_EXPRESSION_CHARS:
        raise ConditionError(f"condition is {len(source)} characters, more than the {MAX_EXPRESSION_CHARS} allowed")
    code = _code_only(source)
    macros = len(_COMPREHENSION.findall(code))
    if macros > MAX_COMPREHENSIONS:
        raise ConditionError(f"condition {source[:_SHOWN]!r} uses {macros} comprehension macros (all, exists, "
                             f"exists_one, map, filter); at most {MAX_COMPREHENSIONS} is allowed (split it into "
                             "several conditions)")
    builders = sorted(set(_LIST_BUILDERS.findall(code)))
    if builders:
        raise ConditionError(f"condition {source[:_SHOWN]!r} uses {', '.join(builders)}: the CEL engine builds their "
                             "lists in quadratic time (15 s for 10,000 elements); test with all, exists or "
                             "exists_one instead")
    m = _COMPREHENSION.search(code)
    if m is not None and _SLOW_IN_LOOP.search(code, m.end()):
        raise ConditionError(f"condition {source[:_SHOWN]!r} calls matches() inside a comprehension (a regular "
                             "expression compiled per element); use startsWith, endsWith or contains there, or "
                             "matches() outside")
    if m is not None and _READS_INPUT.search(code, m.end()):
        # A macro body that reads the statement again walks it once per element: quadratic cost.
        raise ConditionError(f"condition {source[:_SHOWN]!r}: after a comprehension macro opens, the expression "
                             "may read only its iteration variable, literals and now (not predicate, statement or "
                             "subject); put other tests in a condition of their own")
    try:
        program = cel.compile(source)
    except Exception as exc:  # the binding raises ValueError for syntax errors; anything else is one too
        raise ConditionError(f"condition {source[:_SHOWN]!r} is not valid CEL: {_first_line(str(exc))}") from exc
    paths = []
    for path in dict.fromkeys(_paths(source)):
        try:
            paths.append((path, cel.compile(path)))
        except Exception:  # noqa: S112 - a path inside a string literal, say: shown values are a help only
            continue
    names = frozenset(program.variables()) & frozenset(VARIABLES)
    return Condition(source, program, "now" in names, tuple(paths[:_MAX_PATHS]), names)


def _code_only(source: str) -> str:
    """``source`` with each string literal replaced by ``""`` and each ``//`` comment by a space
    (cel-spec "Syntax": quoted, triple-quoted and raw strings; comments to the end of the line), so
    that a comment cannot hide a macro from the bounds."""
    out: list[str] = []
    i, n = 0, len(source)
    while i < n:
        ch = source[i]
        if source.startswith("//", i):
            j = source.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
            continue
        if ch in "'\"":
            prefix = "".join(out[-2:]).lower()
            raw = prefix.endswith("r") or prefix in ("rb", "br")
            quote = ch * 3 if source.startswith(ch * 3, i) else ch
            j = i + len(quote)
            while j < n and not source.startswith(quote, j):
                j += 2 if source[j] == "\\" and not raw else 1
            i = j + len(quote)
            out.append('""')
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _paths(source: str) -> list[str]:
    out = []
    for m in _PATH.finditer(source):
        path = m.group(0)
        if source[m.end():].lstrip().startswith("(") and "." in path:
            path = path.rsplit(".", 1)[0]  # a method call (``.startsWith(``): its receiver
        out.append(path)
    return out


def compile_requirements(entries: Sequence[tuple[str, Sequence[str]]]) -> tuple[AttestationRequirement, ...]:
    """``(predicateType, [conditions])`` pairs from a policy, compiled; :class:`ConditionError` on the
    first that is wrong."""
    if len(entries) > MAX_ENTRIES:
        raise ConditionError(f"{len(entries)} attestation entries; at most {MAX_ENTRIES} are allowed")
    seen: set[str] = set()
    out = []
    for ptype, sources in entries:
        if not ptype or ptype.strip() != ptype:
            raise ConditionError(f"bad predicateType {ptype!r}")
        if ptype == COSIGN_SIGN_PREDICATE:
            raise ConditionError(f"{ptype} is cosign's image signature, not an attestation: its statement carries "
                                 "no predicate to put conditions on (use annotations)")
        if ptype in seen:
            raise ConditionError(f"predicateType {ptype!r} is listed twice: give all its conditions in one entry")
        seen.add(ptype)
        if len(sources) > MAX_CONDITIONS:
            raise ConditionError(f"{len(sources)} conditions for {ptype!r}; at most {MAX_CONDITIONS} are allowed")
        out.append(AttestationRequirement(ptype, tuple(compile_condition(s) for s in sources)))
    return tuple(out)


def requirements_from(entries: Sequence[tuple[str, Sequence[str]]]) -> tuple[AttestationRequirement, ...]:
    """:func:`compile_requirements` for a verifier's construction: a policy error is a ConfigError."""
    from scanner.errors import ConfigError

    try:
        return compile_requirements(entries)
    except ConditionError as exc:
        raise ConfigError(str(exc), field="attestations") from exc


def attestations_identity(requirements: Sequence[AttestationRequirement]) -> dict[str, Any]:
    """What the requirements add to a verifier's decision identity (nothing when there are none, so
    the identities of policies without them do not change)."""
    if not requirements:
        return {}
    return {"attestations": [[r.predicate_type, [c.source for c in r.conditions]] for r in requirements]}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else "(no message)"


def _count_values(value: Any, limit: int) -> int:
    """JSON values in ``value``, counting stops past ``limit`` (no recursion: depth is the attacker's)."""
    n = 0
    stack = [value]
    while stack:
        v = stack.pop()
        n += 1
        if n > limit:
            return n
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


def _values_read(cond: Condition, context: Any) -> str:
    """``false``, with the values of the fields the expression reads (absent when missing)."""
    shown = []
    for path, program in cond.paths:
        try:
            shown.append(f"{path} = {_shown(program.execute(context))}")
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # a missing field
            shown.append(f"{path} absent")
    return "false" + (f" ({'; '.join(shown)})" if shown else "")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + "…"


@dataclass(frozen=True, slots=True)
class ConditionResult:
    expression: str
    outcome: str  # passed / failed / error
    value: str  # what the expression gave (failed), or why it could not be evaluated (error)

    def as_details(self) -> dict[str, str]:
        return {"expression": self.expression, "outcome": self.outcome, "value": self.value}


def evaluate(requirement: AttestationRequirement, statement: Mapping[str, Any], subject: Mapping[str, Any],
             now: datetime) -> tuple[str, tuple[ConditionResult, ...]]:
    """The outcome of ``requirement``'s conditions over a *verified* statement, and each condition's
    result, in order; evaluation stops at the first that does not pass."""
    if now.tzinfo is None:
        raise ValueError("the scan clock must be timezone-aware")
    if _count_values(statement, MAX_STATEMENT_VALUES) > MAX_STATEMENT_VALUES:
        why = f"the statement holds more than {MAX_STATEMENT_VALUES} JSON values: conditions are not evaluated"
        return ERROR, (ConditionResult(requirement.conditions[0].source if requirement.conditions else "", ERROR,
                                       why),)
    import cel

    values = {"predicate": statement.get("predicate"), "statement": statement, "subject": subject, "now": now}
    # Converted to CEL once for all the conditions, and only what they read (``statement`` holds the
    # predicate: both would convert it twice).
    context = cel.Context()
    try:
        for name in sorted(set().union(*(c.variables for c in requirement.conditions))):
            context.add_variable(name, values[name])
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a value CEL cannot hold
        return ERROR, (ConditionResult(requirement.conditions[0].source, ERROR,
                                       f"the statement cannot be given to CEL: {type(exc).__name__}: "
                                       f"{_first_line(str(exc))}"),)
    results: list[ConditionResult] = []
    for cond in requirement.conditions:
        try:
            value = cond.program.execute(context)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # pyo3 panics derive from BaseException
            results.append(ConditionResult(cond.source, ERROR,
                                           f"cannot be evaluated: {type(exc).__name__}: {_first_line(str(exc))}"))
            return ERROR, tuple(results)
        if value is True:
            results.append(ConditionResult(cond.source, PASSED, "true"))
            continue
        if value is False:
            results.append(ConditionResult(cond.source, FAILED, _values_read(cond, context)))
            return FAILED, tuple(results)
        results.append(ConditionResult(cond.source, ERROR, f"evaluated to {_shown(value)}, not a bool"))
        return ERROR, tuple(results)
    return PASSED, tuple(results)
