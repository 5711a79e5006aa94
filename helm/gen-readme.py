#!/usr/bin/env python3
"""Generate the values table of the chart README from the ``# --`` comments of values.yaml.

The comment convention is helm-docs': a block that starts with ``# --`` right above a key documents
that key; following ``#`` lines continue the description; ``# @default -- text`` replaces the shown
default; ``# -- (type) text`` overrides the inferred type. Keys below a documented key (its fields) are
covered by it. The table is written between the ``<!-- values:start -->`` / ``<!-- values:end -->``
markers of README.md; the rest of the README is hand-written.

    python helm/gen-readme.py            # rewrite helm/sigaudit/README.md
    python helm/gen-readme.py --check    # exit 1 when README.md is stale or a value is undocumented
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART_DIR = Path(__file__).resolve().parent / "sigaudit"
START = "<!-- values:start -->"
END = "<!-- values:end -->"

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+|\"[^\"]+\"|'[^']+')\s*:(?:\s|$)")
_TYPE = re.compile(r"^\((?P<type>[a-z]+)\)\s*")


@dataclass(frozen=True, slots=True)
class ValueDoc:
    path: tuple[str, ...]
    description: str
    type_override: str | None
    default_override: str | None


def parse_docs(text: str) -> list[ValueDoc]:
    """The documented keys of a values.yaml text, in file order."""
    docs: list[ValueDoc] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    pending: list[str] | None = None  # lines of a `# --` block being read
    pending_default: str | None = None
    in_list_item_indent: int | None = None
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            pending, pending_default = None, None
            continue
        if stripped.startswith("#"):
            body = stripped[1:].strip()
            if body.startswith("-- ") or body == "--":
                pending, pending_default = [body[2:].strip()], None
            elif body.startswith("@default --"):
                pending_default = body[len("@default --") :].strip()
            elif pending is not None:
                pending.append(body)
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        if in_list_item_indent is not None and indent > in_list_item_indent:
            pending, pending_default = None, None
            continue  # inside a list of mappings: part of the list's default
        in_list_item_indent = None
        if stripped.startswith("- "):
            in_list_item_indent = indent
            pending, pending_default = None, None
            continue
        m = _KEY.match(raw)
        if not m:
            pending, pending_default = None, None
            continue
        key = m.group("key").strip("\"'")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = (*(k for _, k in stack), key)
        stack.append((indent, key))
        if pending is not None:
            description = " ".join(line for line in pending if line).strip()
            type_override = None
            tm = _TYPE.match(description)
            if tm:
                type_override = tm.group("type")
                description = description[tm.end() :]
            docs.append(ValueDoc(path, description, type_override, pending_default))
        pending, pending_default = None, None
    return docs


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        values = values[key]
    return values


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def _leaf_paths(values: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(values, dict) and values:
        out: list[tuple[str, ...]] = []
        for key, sub in values.items():
            out.extend(_leaf_paths(sub, (*prefix, str(key))))
        return out
    return [prefix]


def undocumented(text: str) -> list[str]:
    """Leaf keys of values.yaml with no `# --` comment on themselves or an ancestor."""
    documented = {d.path for d in parse_docs(text)}
    values = yaml.safe_load(text)
    missing = []
    for path in _leaf_paths(values):
        if not any(path[:n] in documented for n in range(1, len(path) + 1)):
            missing.append(".".join(path))
    return missing


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(text: str) -> str:
    values = yaml.safe_load(text)
    lines = ["| Key | Type | Default | Description |", "|-----|------|---------|-------------|"]
    for doc in parse_docs(text):
        value = _lookup(values, doc.path)
        type_name = doc.type_override or _type_name(value)
        if doc.default_override is not None:
            default = doc.default_override
        else:
            default = "`" + json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "`"
        key = ".".join(doc.path)
        lines.append(f"| `{key}` | {type_name} | {_cell(default)} | {_cell(doc.description)} |")
    return "\n".join(lines) + "\n"


def render_readme(readme: str, values_text: str) -> str:
    if START not in readme or END not in readme:
        raise ValueError(f"README.md lacks the {START} / {END} markers")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{render_table(values_text)}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when README.md is not up to date")
    parser.add_argument("--chart", type=Path, default=CHART_DIR)
    args = parser.parse_args(argv)
    values_text = (args.chart / "values.yaml").read_text(encoding="utf-8")
    readme_path = args.chart / "README.md"
    missing = undocumented(values_text)
    if missing:
        print("values without a `# --` comment: " + ", ".join(missing), file=sys.stderr)
        return 1
    current = readme_path.read_text(encoding="utf-8")
    wanted = render_readme(current, values_text)
    if args.check:
        if wanted != current:
            print(f"{readme_path} is stale: run python helm/gen-readme.py", file=sys.stderr)
            return 1
        return 0
    if wanted != current:
        readme_path.write_text(wanted, encoding="utf-8")
        print(f"wrote {readme_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
