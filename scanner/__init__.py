"""sigaudit: audit the signatures of the container images running in a Kubernetes cluster."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sigaudit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+source"
