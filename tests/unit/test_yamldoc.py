"""YAML as sigaudit reads it: a key written twice is an error (PyYAML keeps the last silently), merges may
override, and aliases that expand to billions of nodes are refused before anything walks them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from scanner import yamldoc
from scanner.errors import ConfigError
from scanner.policy.loader import parse_policy_document

POLICY = """\
apiVersion: sigaudit.io/v1alpha1
kind: AuditPolicy
spec:
  rules:
    - name: prod
      images: ["registry.example/*"]
      verifiers:
        - cosign:
            key: {key}
"""


def test_a_key_written_twice_is_refused_with_its_line() -> None:
    with pytest.raises(yaml.YAMLError) as err:
        yamldoc.load("a: 1\nb: 2\na: 3\n")
    assert "duplicate key 'a'" in str(err.value)
    assert err.value.problem_mark.line == 2  # type: ignore[attr-defined]


def test_nested_and_multi_document_duplicates_are_refused_too() -> None:
    with pytest.raises(yaml.YAMLError, match="duplicate key 'x'"):
        yamldoc.load("top:\n  - {x: 1, x: 2}\n")
    with pytest.raises(yaml.YAMLError, match="duplicate key 'kind'"):
        yamldoc.load_all("kind: A\n---\nkind: B\nkind: C\n")


def test_what_safe_load_reads_is_read_the_same() -> None:
    text = "a: [1, 2.5, true, null, '3']\nb: {c: d}\n1: one\n'1': quoted one\n"
    assert yamldoc.load(text) == yaml.safe_load(text)
    assert yamldoc.load_all("a: 1\n---\n---\nb: 2\n") == [{"a": 1}, None, {"b": 2}]
    assert yamldoc.load("") is None


def test_a_merge_may_override_what_it_brings_in() -> None:
    assert yamldoc.load("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 9\n")["use"] == {"x": 9, "y": 2}


def test_an_alias_bomb_is_refused_quickly() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        refs = ",".join([f"*a{i - 1}"] * 10)
        lines.append(f"a{i}: &a{i} [{refs}]")
    t0 = time.monotonic()
    with pytest.raises(yaml.YAMLError, match="aliases expand to more than"):
        yamldoc.load("\n".join(lines))
    assert time.monotonic() - t0 < 5
    # A few shared anchors are fine.
    assert yamldoc.load("a: &x [1, 2]\nb: *x\nc: *x\n")["c"] == [1, 2]


def test_a_policy_with_a_repeated_field_is_a_config_error_naming_the_line(tmp_path: Path) -> None:
    text = POLICY.format(key="trusted.pub") + "            key: attacker.pub\n"
    with pytest.raises(ConfigError) as err:
        parse_policy_document(text.encode(), "policy.yaml")
    assert "duplicate key 'key'" in str(err.value)
    assert err.value.line == 10
    # The same document without the repetition loads.
    parse_policy_document(POLICY.format(key="trusted.pub").encode(), "policy.yaml")
