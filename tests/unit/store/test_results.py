"""Rows made storable before a bulk write (``scanner.store.results``): a hostile cell (NUL, a lone
surrogate, text past its column's length) is fixed wherever it sits in a batch, and a clean batch is
judged per column in C, not with a Python call per cell (issue 20: a cold 10,000-container write)."""

from __future__ import annotations

import pytest

from scanner.store import results
from scanner.store.core import containers, images

CLEAN = {"namespace": "team-01", "pod": "app-7d9fac00001-x01q", "container": "main", "image": "reg/app:v1",
         "pull_secrets": ["regcred"]}


def _rows(n: int, **cell: object) -> list[dict[str, object]]:
    rows = [dict(CLEAN) for _ in range(n)]
    rows[n // 2].update(cell)
    return rows


@pytest.mark.parametrize(("column", "hostile", "fixed"), [
    ("pod", "a\x00b", "a\ufffdb"),
    ("image", "x\ud800y", "x\ufffdy"),
    ("namespace", "n" * 300, None),  # cut to the column's length, ending in an ellipsis
    ("pull_secrets", ["ok", "s\x00"], ["ok", "s\ufffd"]),
    ("pull_secrets", ["\udfff"], ["\ufffd"]),
])
def test_a_hostile_cell_anywhere_in_a_batch_is_fixed(column: str, hostile: object, fixed: object) -> None:
    if fixed is None:
        limit = containers.c[column].type.length  # type: ignore[attr-defined]
        fixed = "n" * (limit - 1) + "\u2026"
    rows = results._storable_rows(containers, _rows(1000, **{column: hostile}))
    assert rows[500][column] == fixed
    assert all(r == CLEAN for i, r in enumerate(rows) if i != 500)


def test_a_clean_batch_makes_no_call_per_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    real_text, real_json = results.storable_text, results._storable_json

    def text(value: str, limit: int | None = None) -> str:
        calls.append(value)
        return real_text(value, limit)

    def as_json(value: object) -> object:
        calls.append(value)
        return real_json(value)

    monkeypatch.setattr(results, "storable_text", text)
    monkeypatch.setattr(results, "_storable_json", as_json)
    rows = results._storable_rows(containers, _rows(1000))
    assert rows == [CLEAN] * 1000 and calls == []
    results._storable_rows(images, [{"image": "r/a:1", "reasons": ["ok"]}, {"image": "r/b:1", "reasons": ["\x00"]}])
    assert calls  # a column with a hostile cell is fixed cell by cell
