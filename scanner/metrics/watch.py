"""The ``serve --watch`` series: the watch's queue, verdicts, drops and freshness (from the live
:class:`scanner.watch.Watcher`, not from the store; its verdicts reach the verdict series through the
store like a scan's)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from scanner.metrics import names as n


class WatchHealth(Protocol):
    def health(self) -> tuple[bool, dict[str, Any]]: ...


class WatchCollector(Collector):
    def __init__(self, watch: WatchHealth, cluster: str) -> None:
        self.watch = watch
        self.cluster = cluster

    def collect(self) -> Iterator[Metric]:
        fresh, detail = self.watch.health()
        for series, value in ((n.WATCH_QUEUE, detail["queue"]), (n.WATCH_VERDICTS, detail["verdicts"]),
                              (n.WATCH_DROPPED, detail["dropped"]), (n.WATCH_FRESH, 1 if fresh else 0)):
            family = GaugeMetricFamily(series.name, series.help, labels=["cluster"])
            family.add_metric([self.cluster], float(value))
            yield family
