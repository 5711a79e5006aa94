"""The documents every importer reads (scanner/policy/imports.py ``_docs``): a malformed or hostile file is
refused (ConfigError, exit 2), never a crash or a scan held for hours."""

from __future__ import annotations

import time

import pytest

from scanner.errors import ConfigError
from scanner.policy.imports import _docs

HEAD = "apiVersion: policies.kyverno.io/v1\nkind: ImageValidatingPolicy\nmetadata: {name: x}\n"


def laughs(levels: int) -> str:
    """A "billion laughs": each level names the one before nine times (9**levels values in ~60*levels bytes)."""
    out = 'x-0: &l0 ["x","x","x","x","x","x","x","x","x"]\n'
    for i in range(1, levels):
        out += f"x-{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]\n"
    return out + f"spec: {{matchConstraints: {{namespaceSelector: {{matchLabels: *l{levels - 1}}}}}}}\n"


def test_yaml_aliases_that_expand_past_the_size_limit_are_refused_quickly() -> None:
    data = (HEAD + laughs(9)).encode()  # 387 million values in under 1 kB
    start = time.monotonic()
    with pytest.raises(ConfigError, match="aliases expand"):
        _docs(data, "kyverno:f.yaml")
    assert time.monotonic() - start < 60  # the walk stops at the limit (seconds), not at 387 million


def test_aliases_that_stay_small_are_read() -> None:
    (doc,) = _docs((HEAD + laughs(3)).encode(), "kyverno:f.yaml")
    assert len(doc["spec"]["matchConstraints"]["namespaceSelector"]["matchLabels"]) == 9


def test_nesting_deeper_than_the_parser_is_refused_not_a_crash() -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        _docs(("[" * 5000 + "]" * 5000).encode(), "kyverno:f.yaml")
