"""Test harness: real peer processes (registries, Prometheus, Pushgateway) and tool lookup.

``tests/conftest.py`` registers every ``tests/harness/fixtures_*.py`` module as a pytest plugin.
"""

from tests.harness.tools import free_port, require_binary, require_tool, tool_path, wait_for_http

__all__ = ["free_port", "require_binary", "require_tool", "tool_path", "wait_for_http"]
