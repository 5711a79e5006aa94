"""Mutants of one module, made from its syntax tree (``ast``), each with a stable id.

Operators (those of issue #28):

- ``cmp``: a comparison flipped (``==``/``!=``, ``<``/``>=``, ``>``/``<=``, ``in``/``not in``, ``is``/``is not``)
- ``boolop``: ``and`` <-> ``or``
- ``not``: a ``not`` dropped
- ``if-false``: an ``if``/``elif``/``while``/conditional-expression test replaced by ``False``
- ``raise``: a ``raise`` replaced by ``pass``
- ``call``: a call statement deleted (``pass``)
- ``return``: a returned value replaced (``True``<->``False``, anything else -> ``None``)
- ``builtin``: ``max``<->``min``, ``any``<->``all``

A mutant id is ``<module>::<function>::<op>::<source of the node>#<n>`` (n counts equal ids in
one function): line numbers would change the ids of every mutant below an edit.

Calls to the module logger (``log.*``) are not mutated: logging is not a trust decision.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterator
from dataclasses import dataclass

CMP_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
BUILTIN_SWAP = {"max": "min", "min": "max", "any": "all", "all": "any"}
Path = tuple[tuple[str, int | None], ...]  # (field, index in a list field or None) from the module root


@dataclass(frozen=True, slots=True)
class Mutant:
    id: str
    module: str
    function: str
    op: str
    line: int
    end_line: int  # the mutated node's last line (tests that run any of line..end_line judge it)
    source: str  # the original node's source, shortened
    path: Path
    index: int  # which operand of a comparison (``cmp``); 0 otherwise


def _is_log_call(node: ast.AST) -> bool:
    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)):
        return False
    f = node.value.func
    return isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in ("log", "logger", "logging")


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _walk(node: ast.AST, path: Path, func: str) -> Iterator[tuple[ast.AST, Path, str]]:
    yield node, path, func
    for name, value in ast.iter_fields(node):
        if name in ("annotation", "returns", "decorator_list", "type_comment"):
            continue  # annotations are strings under `from __future__ import annotations`
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, ast.AST):
                    inner = func
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inner = f"{func}.{item.name}" if func else item.name
                    yield from _walk(item, (*path, (name, i)), inner)
        elif isinstance(value, ast.AST):
            yield from _walk(value, (*path, (name, None)), func)


def _short(text: str | None) -> str:
    return " ".join((text or "?").split())[:100]


def _candidates(node: ast.AST) -> Iterator[tuple[str, int]]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in CMP_FLIP:
                yield "cmp", i
    elif isinstance(node, ast.BoolOp):
        yield "boolop", 0
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield "not", 0
    elif isinstance(node, (ast.If, ast.While, ast.IfExp)):
        yield "if-false", 0
    elif isinstance(node, ast.Raise):
        yield "raise", 0
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and not _is_log_call(node):
        yield "call", 0
    elif isinstance(node, ast.Return) and node.value is not None:
        if not (isinstance(node.value, ast.Constant) and node.value.value is None):
            yield "return", 0
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BUILTIN_SWAP:
        yield "builtin", 0


def mutants(module: str, source: str, functions: tuple[str, ...] = ()) -> list[Mutant]:
    """Every mutant of ``source`` (the file ``module``), only inside ``functions`` (qualified names,
    e.g. ``verify_image`` or ``CosignKeyVerifier.verify``) when given."""
    tree = ast.parse(source)
    out: list[Mutant] = []
    seen: dict[str, int] = {}
    for node, path, func in _walk(tree, (), ""):
        if functions and not any(func == f or func.startswith(f + ".") for f in functions):
            continue
        if _is_docstring(node):
            continue
        for op, index in _candidates(node):
            shown = node.test if isinstance(node, (ast.If, ast.While, ast.IfExp)) else node
            text = _short(ast.get_source_segment(source, shown))
            if op == "cmp":
                assert isinstance(node, ast.Compare)
                text += f" [{type(node.ops[index]).__name__}]"
            base = f"{module}::{func or '<module>'}::{op}::{text}"
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.append(Mutant(f"{base}#{n}", module, func or "<module>", op, getattr(shown, "lineno", 0),
                              getattr(shown, "end_lineno", None) or getattr(shown, "lineno", 0), text, path, index))
    return out


def _resolve(tree: ast.AST, path: Path) -> tuple[ast.AST, str, int | None, ast.AST]:
    parent, node = tree, tree
    field, idx = "", None
    for field, idx in path:
        parent = node
        value = getattr(node, field)
        node = value[idx] if idx is not None else value
    return parent, field, idx, node


def apply(source: str, mutant: Mutant) -> str:
    """The module's source with ``mutant`` applied (unparsed from the tree: formatting is lost)."""
    tree = copy.deepcopy(ast.parse(source))
    parent, field, idx, node = _resolve(tree, mutant.path)

    def put(new: ast.AST) -> None:
        ast.copy_location(new, node)
        if idx is None:
            setattr(parent, field, new)
        else:
            getattr(parent, field)[idx] = new

    op = mutant.op
    if op == "cmp":
        assert isinstance(node, ast.Compare)
        node.ops[mutant.index] = CMP_FLIP[type(node.ops[mutant.index])]()
    elif op == "boolop":
        assert isinstance(node, ast.BoolOp)
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif op == "not":
        assert isinstance(node, ast.UnaryOp)
        put(node.operand)
    elif op == "if-false":
        assert isinstance(node, (ast.If, ast.While, ast.IfExp))
        node.test = ast.Constant(False)
    elif op in ("raise", "call"):
        put(ast.Pass())
    elif op == "return":
        assert isinstance(node, ast.Return)
        v = node.value
        node.value = ast.Constant(not v.value) if isinstance(v, ast.Constant) and isinstance(v.value, bool) \
            else ast.Constant(None)
    elif op == "builtin":
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        node.func = ast.Name(BUILTIN_SWAP[node.func.id], ast.Load())
    else:  # pragma: no cover
        raise ValueError(op)
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n"
