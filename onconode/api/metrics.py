"""Prometheus metrics: counters fed by the DICOM listener, the rest read from the state at scrape time.

Input: ``AssociationSummary`` objects (``StorageSCP.add_association_listener``) and the state
database. Output: the Prometheus text exposition format for ``GET /metrics``.

Studies by state, stored instances, stage latencies and deliveries are read from the database at
each scrape, so they are right after a restart and agree with ``GET /studies``; only what the
database does not hold (associations and what they carried) is counted in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from onconode.state import Delivery, StateDB
from onconode.values import AssociationSummary

# Stage latency buckets in seconds: a slice decode is milliseconds, a whole CT analysis tens of seconds.
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NodeMetrics:
    """One registry per node (never the global one), so tests and several apps do not collide."""

    def __init__(self, db: StateDB) -> None:
        self.registry = CollectorRegistry()
        self.associations = Counter("onconode_associations", "DICOM associations by outcome",
                                    ["outcome"], registry=self.registry)
        self.instances = Counter("onconode_instances_received", "New instances stored over DICOM",
                                 registry=self.registry)
        self.bytes = Counter("onconode_received_bytes", "Bytes of new instances stored over DICOM",
                             registry=self.registry)
        self.store_failures = Counter("onconode_store_failures", "C-STORE requests answered with a failure",
                                      registry=self.registry)
        self.delivery_attempts = Counter("onconode_delivery_attempts", "Delivery attempts by outcome "
                                         "(sent, retry = failed and will be tried again, dead)", ["outcome"],
                                         registry=self.registry)
        self.registry.register(_StateCollector(db))

    def on_association(self, summary: AssociationSummary) -> None:
        self.associations.labels(summary.outcome).inc()
        self.instances.inc(summary.instances)
        self.bytes.inc(summary.bytes)
        self.store_failures.inc(summary.failures)

    def on_delivery(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        self.delivery_attempts.labels(outcome).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, db: StateDB) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        studies = GaugeMetricFamily("onconode_studies", "Studies by state", labels=["state"])
        for state, count in self._db.count_by_state().items():
            studies.add_metric([state.value], count)
        yield studies
        count, size = self._db.instance_totals()
        yield GaugeMetricFamily("onconode_stored_instances", "Instances in the index", value=count)
        yield GaugeMetricFamily("onconode_stored_bytes", "Bytes of the instances in the index", value=size)
        yield _latency_histogram(self._db.result_timings())
        deliveries = GaugeMetricFamily("onconode_deliveries", "Deliveries (object x destination) by state; "
                                       "dead = failed for good (the dead letter)", labels=["state"])
        for delivery_state, n in self._db.delivery_totals().items():
            deliveries.add_metric([delivery_state.value], n)
        yield deliveries


def _latency_histogram(timings: list[dict[str, float]]) -> HistogramMetricFamily:
    family = HistogramMetricFamily("onconode_stage_seconds", "Analysis time per stage and study",
                                   labels=["stage"])
    by_stage: dict[str, list[float]] = {}
    for study in timings:
        for stage, ms in study.items():
            by_stage.setdefault(stage, []).append(ms / 1000.0)
    for stage, values in sorted(by_stage.items()):
        buckets = [(repr(b), float(sum(v <= b for v in values))) for b in LATENCY_BUCKETS]
        buckets.append(("+Inf", float(len(values))))
        family.add_metric([stage], buckets, sum_value=sum(values))
    return family
