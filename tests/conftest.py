"""Registers every ``tests/harness/fixtures_*.py`` module as a pytest plugin.

Add fixtures by dropping a new ``tests/harness/fixtures_<x>.py`` file; no edit here is needed.
"""

from __future__ import annotations

from pathlib import Path

pytest_plugins = sorted(f"tests.harness.{p.stem}" for p in (Path(__file__).parent / "harness").glob("fixtures_*.py"))
