"""What ``--policy-from KIND:cluster`` needs from the cluster, as a protocol the importers take (issue #18):
the policy layer maps documents and never speaks to the Kubernetes API. The implementation is the edge's
(``scanner/sources/kube.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Protocol

ImportKind = Literal["kyverno", "clusterimagepolicy", "notation", "kritis"]


class ClusterReadError(Exception):
    """A read the cluster refused or could not answer; the message says which (``403 Forbidden``)."""


class ClusterReader(Protocol):
    def policy_documents(self, kind: ImportKind) -> list[dict[str, Any]]:
        """Every object of the resources an importer of ``kind`` maps, each with its ``apiVersion`` and
        ``kind``. A resource whose CRD is not installed is skipped; any other failure is a ConfigError."""
        ...

    def secret_data(self, namespace: str, name: str) -> Mapping[str, Any]:
        """The ``data`` of a Secret (base64 values). Raises :class:`ClusterReadError`."""
        ...

    def validating_webhook_configurations(self) -> list[Any]:
        """The ``items`` of validatingwebhookconfigurations. Raises :class:`ClusterReadError` (the message
        names the failure, e.g. ``cannot list validatingwebhookconfigurations (403 Forbidden)``)."""
        ...
