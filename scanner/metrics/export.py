"""One-shot (CronJob) metrics: a textfile for node-exporter, and/or a push to a Pushgateway.

Both use :class:`~scanner.metrics.collector.SigauditCollector` over the store the scan was recorded in
(so the values equal what ``sigaudit serve`` shows for the same scan), or over the fresh result when the
scan was not stored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from scanner.errors import SigauditError
from scanner.metrics.collector import MetricsSource, ResultSource, SigauditCollector, StoreSource
from scanner.models import ScanResult
from scanner.redact import display_url
from scanner.store import Store

log = logging.getLogger(__name__)

PUSH_JOB = "sigaudit"


class MetricsExportError(SigauditError):
    """The metrics could not be written or pushed (the scan itself is unaffected)."""


def source_for(result: ScanResult, store: Store | None) -> MetricsSource:
    return StoreSource(store, result.cluster) if store is not None else ResultSource(result)


def registry_for(source: MetricsSource, *, per_image: bool = False) -> CollectorRegistry:
    """A separate registry holding only sigaudit's collector (no process/platform collectors)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SigauditCollector(source, per_image=per_image))
    return registry


def render(result: ScanResult, store: Store | None, *, per_image: bool = False) -> bytes:
    """The text exposition of the metrics after ``result``."""
    return generate_latest(registry_for(source_for(result, store), per_image=per_image))


def write_textfile(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically replace ``path`` (temp file in the same directory, fsync, rename), as node-exporter's
    textfile collector requires: it must never read a half-written file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def push(gateway: str, cluster: str, registry: CollectorRegistry, *, timeout: float = 30.0) -> None:
    """PUT the group {job="sigaudit", cluster=<name>}: the whole group is replaced, so series of a
    namespace that no longer runs anything disappear.

    ``https://user:password@host`` sends the credentials as HTTP Basic authentication; the URL handed
    to urllib never carries them (urllib would read the password as a port and put it in its error)."""
    parts = urlsplit(gateway)
    handler: Callable[..., Callable[[], None]] = default_handler
    if "@" in parts.netloc:
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        gateway = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

        def handler(url: str, method: str, timeout: float | None, headers: list[tuple[str, str]],
                    data: bytes) -> Callable[[], None]:
            return basic_auth_handler(url, method, timeout, headers, data, user, password)

    push_to_gateway(gateway, job=PUSH_JOB, registry=registry, grouping_key={"cluster": cluster}, timeout=timeout,
                    handler=handler)


def after_scan(
    result: ScanResult,
    store: Store | None,
    *,
    metrics_file: str | None = None,
    pushgateway: str | None = None,
    per_image: bool = False,
) -> None:
    """Called by ``sigaudit scan`` once the scan is recorded. Raises MetricsExportError."""
    registry = registry_for(source_for(result, store), per_image=per_image)
    if metrics_file:
        try:
            write_textfile(metrics_file, generate_latest(registry))
        except OSError as exc:
            raise MetricsExportError(f"cannot write the metrics file {metrics_file}: {exc}") from exc
        log.info("metrics written to %s", metrics_file)
    if pushgateway:
        try:
            push(pushgateway, result.cluster, registry)
        except (OSError, ValueError, HTTPException) as exc:  # URLError/HTTPError are OSErrors; InvalidURL is not
            raise MetricsExportError(f"cannot push the metrics to {display_url(pushgateway)}: {exc}") from exc
        log.info("metrics pushed to %s (job=%s, cluster=%s)", display_url(pushgateway), PUSH_JOB, result.cluster)
