"""Test harness: real peer processes (registries, Prometheus, Pushgateway) and tool lookup.

``tests/conftest.py`` registers every ``tests/harness/fixtures_*.py`` module as a pytest plugin.
Helpers live in submodules (``tests.harness.tools``: ``tool_path``, ``require_tool``,
``require_binary``, ``free_port``; ``tests.harness.oci``: push/pull helpers). Nothing is imported
here, so ``tests.harness.oci`` stays importable without pytest (``make demo``, the bench).
"""
