"""sigaudit: audit the signatures of the container images running in a Kubernetes cluster."""

import sys
import types
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sigaudit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+source"


def _defer_httpx_cli() -> None:
    """httpx's ``__init__`` imports its command-line entry point (``httpx._main``: rich, pygments and
    their lexers, a third of httpx's import time on every start) only to re-export ``httpx.main``;
    sigaudit never runs httpx's CLI. Stand in a module whose ``main`` loads the real one on first
    call, so the CLI still works for anyone calling ``httpx.main()`` in this process."""
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return
    stub = types.ModuleType("httpx._main")

    def main(*args: object, **kwargs: object) -> object:
        import importlib

        if sys.modules.get("httpx._main") is stub:
            del sys.modules["httpx._main"]
        real = importlib.import_module("httpx._main")
        return real.main(*args, **kwargs)

    stub.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stub


_defer_httpx_cli()
