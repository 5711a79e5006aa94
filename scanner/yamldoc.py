"""YAML as sigaudit reads it: policy files, imported policy documents, notification settings.

PyYAML's ``safe_load`` keeps the *last* of two equal keys without a word, so a policy could show a
reviewer one ``identities:`` and give sigaudit another; kubectl and the API server refuse such a
document ("mapping key already defined"), and so does sigaudit: a duplicate key is an error that names
its line. Aliases are shared by PyYAML but expanded by whoever walks the result (the schema, JSON
encoders): a few lines of nested aliases ("billion laughs") expand to billions of nodes, so a document
whose aliases expand past :data:`MAX_EXPANDED_NODES` is refused before anything walks it.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

MAX_EXPANDED_NODES = 1_000_000

_MERGE = "tag:yaml.org,2002:merge"


class StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses a key written twice in one mapping (keys brought in by a ``<<`` merge
    may be overridden, as YAML 1.1 says)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                except TypeError:  # an unhashable key: construct_mapping reports it
                    continue
                if duplicate:
                    raise ConstructorError("while constructing a mapping", node.start_mark,
                                           f"found duplicate key {str(key)[:80]!r}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root: yaml.Node | None) -> int:
    """How many nodes the document has once every alias is expanded (memoised per node: linear)."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)] if root is not None else []
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        kids: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            kids = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            kids = [n for pair in node.value for n in pair]
        if children_done:
            sizes[id(node)] = min(MAX_EXPANDED_NODES + 1, 1 + sum(sizes.get(id(k), 1) for k in kids))
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in sizes)
    return sizes.get(id(root), 0) if root is not None else 0


def _check(node: yaml.Node | None) -> None:
    if node is not None and _expanded_size(node) > MAX_EXPANDED_NODES:
        mark = node.start_mark
        raise yaml.YAMLError(f"its aliases expand to more than {MAX_EXPANDED_NODES:,} nodes (line {mark.line + 1})")


def compose(text: str | bytes) -> yaml.Node | None:
    """The node tree of one document (for line numbers), size-checked."""
    node = yaml.compose(text, Loader=StrictLoader)
    _check(node)
    return node


def load(text: str | bytes) -> Any:
    """One document: ``yaml.YAMLError`` for a duplicate key, an alias bomb or bad YAML."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        _check(node)
        return loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def load_all(text: str | bytes) -> list[Any]:
    """Every document of a stream (``---``-separated), each checked as :func:`load` does."""
    loader = StrictLoader(text)
    out: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _check(node)
            out.append(loader.construct_document(node))
        return out
    finally:
        loader.dispose()
