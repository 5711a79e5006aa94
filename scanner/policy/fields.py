"""What an importer does with every field of the resources it reads: the declared field tables.

An importer of somebody else's policy (Kyverno, policy-controller, kritis, ...) declares, for each
field path of the upstream schema, one of:

* ``MAPPED``   — enforced by the imported rule (or, for admission-only settings, meaningless for an
  audit of what runs; ``why`` says which);
* ``REPORTED`` — not enforced, and leaving it out can only make the rule stricter or leave the
  verdict unchanged: a note on every verdict of the rule says so;
* ``REFUSED``  — not enforced, and leaving it out could make the rule looser: a rule that sets it is
  refused (every image it matches is ``error``), never approximated.

:func:`classify` walks an input document against a table. A field the table does not know (a newer
upstream version, a typo) is refused: an importer never guesses. ``tests/unit/policy/
test_import_fields.py`` walks the upstream CRD schemas kept in ``tests/data/upstream-crds`` and proves
that every field of them is declared here, and that each declaration holds at run time.

Paths are dotted keys from the document root; ``[]`` marks the items of a list of objects
(``spec.rules[].verifyImages[].attestors[].entries[].keyless.subject``). A field whose table entry
has no declared children is a leaf: its value (a map, a list, anything) is not walked.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


class Handling(enum.Enum):
    MAPPED = "mapped"
    REPORTED = "reported"
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Field:
    handling: Handling
    why: str = ""


def mapped(why: str = "") -> Field:
    return Field(Handling.MAPPED, why)


def reported(why: str) -> Field:
    return Field(Handling.REPORTED, why)


def refused(why: str) -> Field:
    return Field(Handling.REFUSED, why)


FieldTable = Mapping[str, Field]


def is_set(value: Any) -> bool:
    """A field that says something: not null, empty or false (the schema defaults)."""
    return value is not None and value is not False and value != "" and value != [] and value != {}


def _has_children(table: FieldTable, path: str) -> bool:
    prefix = path + "."
    prefix_items = path + "[]."
    return any(k.startswith(prefix) or k.startswith(prefix_items) for k in table)


def walk(doc: Any, table: FieldTable, root: str = "") -> Iterator[tuple[str, Field | None, Any]]:
    """(path, declaration or None when unknown, value) for every field set in ``doc`` under ``root``."""
    if not isinstance(doc, Mapping):
        return
    for key, value in doc.items():
        path = f"{root}.{key}" if root else str(key)
        field = table.get(path)
        if field is None:
            # an unknown field is refused whatever its value: false, "" or [] are the defaults only of the
            # fields a table declares; of an unknown one, nothing is known (false may well be the stricter
            # setting), so it is never dropped as "unset"
            if value is not None:
                yield path, None, value
            continue
        if not is_set(value):
            continue
        yield path, field, value
        if not _has_children(table, path):
            continue
        if isinstance(value, Mapping):
            yield from walk(value, table, path)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item, table, path + "[]")


@dataclass(frozen=True, slots=True)
class Classified:
    refused: tuple[str, ...]  # "path: why" for each refused or unknown field that is set
    reported: tuple[str, ...]  # "path: why" for each reported field that is set


def classify(doc: Any, table: FieldTable, root: str = "", *, skip: tuple[str, ...] = ()) -> Classified:
    """Refused and reported fields set in ``doc``. ``skip``: subtrees another call classifies."""
    refused_: list[str] = []
    reported_: list[str] = []
    for path, field, _value in walk(doc, table, root):
        if any(path == s or path.startswith(s + ".") or path.startswith(s + "[]") for s in skip):
            continue
        if field is None:
            refused_.append(f"{path}: unknown field (not in sigaudit's field table for this resource)")
        elif field.handling is Handling.REFUSED:
            refused_.append(f"{path}: {field.why}")
        elif field.handling is Handling.REPORTED:
            reported_.append(f"{path}: {field.why}")
    return Classified(tuple(dict.fromkeys(refused_)), tuple(dict.fromkeys(reported_)))


def table(entries: Mapping[str, Field]) -> dict[str, Field]:
    """A field table: the declared entries, plus every ancestor path (mapped: it only holds fields)."""
    out: dict[str, Field] = {}
    for path in entries:
        segs = path.split(".")
        for i in range(1, len(segs)):
            anc = ".".join(segs[:i]).removesuffix("[]")  # a list of objects is declared by its name
            out.setdefault(anc, mapped("holds the fields below"))
    out.update(entries)
    return out
