"""Prometheus metrics for a running engine, read from its totals at scrape time.

Counting happens once per batch inside the engine; the collector below turns the totals
into metric families when Prometheus asks, so the per-event path never touches a metric.
Labels are bounded sets (event type, reason, detector, article, severity, action, mode);
account ids never become labels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.contract.events import NO_TIME
from pipeline.core.stats import Stats

_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# Every metric family Lockstep exports, as a scrape names it (dashboards are checked
# against this list, and a test checks the list against a real scrape).
EXPORTED_METRICS: tuple[str, ...] = (
    "lockstep_inputs_total",
    "lockstep_events_total",
    "lockstep_stage_events_total",
    "lockstep_dead_letters_total",
    "lockstep_duplicate_events_total",
    "lockstep_stage_redeliveries_total",
    "lockstep_stage_records_refetched_total",
    "lockstep_late_events_total",
    "lockstep_findings_total",
    "lockstep_actions_total",
    "lockstep_watermark_timestamp_seconds",
    "lockstep_watermark_lag_seconds",
    "lockstep_state_keys",
    "lockstep_processing_latency_seconds",
    "lockstep_consumer_lag_records",
)


class Observed(Protocol):
    """What the collector reads: the embedded Engine, or a distributed worker's state."""

    stats: Stats
    lock: threading.Lock

    def state_size(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class _Totals:
    """One consistent reading of an engine's totals, taken under its lock."""

    inputs: int
    duplicates: int
    events_by_type: dict[str, int]
    staged_by_stage: dict[str, int]
    stage_redeliveries: dict[str, int]
    stage_records_refetched: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    findings_by_kind: dict[tuple[str, str, str], int]
    actions_by_type: dict[tuple[str, str], int]
    watermark: int
    state_keys: dict[str, int]
    consumer_lag: dict[str, int] | None  # a distributed worker's, by input topic

    @classmethod
    def read(cls, engine: Observed) -> _Totals:
        with engine.lock:
            st = engine.stats
            return cls(
                inputs=st.inputs,
                duplicates=st.duplicates,
                events_by_type=dict(st.events_by_type),
                staged_by_stage=dict(st.staged_by_stage),
                stage_redeliveries=dict(st.stage_redeliveries),
                stage_records_refetched=dict(st.stage_records_refetched),
                dead_letters_by_reason=dict(st.dead_letters_by_reason),
                findings_by_kind=dict(st.findings_by_kind),
                actions_by_type=dict(st.actions_by_type),
                watermark=st.watermark,
                state_keys=engine.state_size(),
                consumer_lag=engine.consumer_lag() if hasattr(engine, "consumer_lag") else None,
            )


class EngineCollector(Collector):
    """An engine's totals as metric families, read when Prometheus scrapes."""

    def __init__(self, engine: Observed) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        totals = _Totals.read(self.engine)
        yield from _event_counters(totals)
        yield from _result_counters(totals)
        yield from _watermark_gauges(totals.watermark)
        yield from _state_gauges(totals)


def _event_counters(totals: _Totals) -> Iterator[CounterMetricFamily]:
    """What came in: inputs, events by type and stage, dead letters, repeats, late ones."""
    yield CounterMetricFamily(
        "lockstep_inputs", "Raw inputs read (lines or records).", value=totals.inputs
    )
    yield _labelled(
        CounterMetricFamily("lockstep_events", "Valid events processed, by type.", labels=["type"]),
        totals.events_by_type,
    )
    yield _labelled(
        CounterMetricFamily(
            "lockstep_stage_events", "Events delivered to each stage.", labels=["stage"]
        ),
        totals.staged_by_stage,
    )
    yield _labelled(
        CounterMetricFamily(
            "lockstep_dead_letters", "Rejected inputs, by reason.", labels=["reason"]
        ),
        totals.dead_letters_by_reason,
    )
    yield CounterMetricFamily(
        "lockstep_duplicate_events", "Redelivered events dropped.", value=totals.duplicates
    )
    yield _per_stage(
        "lockstep_stage_redeliveries",
        "Stage records' events consumed again after a crash or a hand-over and "
        "dropped as already applied, by stage.",
        totals.stage_redeliveries,
        totals.staged_by_stage,
    )
    yield _per_stage(
        "lockstep_stage_records_refetched",
        "Stage records the worker's stage consumer passed over without delivering, "
        "read back from the topic and applied in their place, by stage.",
        totals.stage_records_refetched,
        totals.staged_by_stage,
    )
    yield CounterMetricFamily(
        "lockstep_late_events",
        "Events behind the watermark (dead-lettered).",
        value=totals.dead_letters_by_reason.get("late", 0),
    )


def _result_counters(totals: _Totals) -> Iterator[CounterMetricFamily]:
    """What went out: findings by detector, article and severity; actions by type, mode."""
    yield _labelled(
        CounterMetricFamily(
            "lockstep_findings", "Findings emitted.", labels=["detector", "article", "severity"]
        ),
        totals.findings_by_kind,
    )
    yield _labelled(
        CounterMetricFamily("lockstep_actions", "Actions emitted.", labels=["action", "mode"]),
        totals.actions_by_type,
    )


def _watermark_gauges(watermark: int) -> Iterator[GaugeMetricFamily]:
    """The event-time watermark and how far wall clock is ahead of it; none before the
    first event has set it."""
    if watermark > NO_TIME // 2:
        yield GaugeMetricFamily(
            "lockstep_watermark_timestamp_seconds",
            "Event-time watermark.",
            value=watermark / 1000,
        )
        yield GaugeMetricFamily(
            "lockstep_watermark_lag_seconds",
            "Wall clock minus the event-time watermark.",
            value=time.time() - watermark / 1000,
        )


def _state_gauges(totals: _Totals) -> Iterator[GaugeMetricFamily]:
    """Keys held in memory by stage, and a distributed worker's consumer lag."""
    yield _labelled(
        GaugeMetricFamily(
            "lockstep_state_keys", "Keys held in memory, by stage.", labels=["stage"]
        ),
        totals.state_keys,
    )
    if totals.consumer_lag is not None:
        yield _labelled(
            GaugeMetricFamily(
                "lockstep_consumer_lag_records",
                "Records not yet consumed, by input topic.",
                labels=["topic"],
            ),
            totals.consumer_lag,
        )


def _per_stage(
    name: str, documentation: str, counts: Mapping[str, int], stages: Mapping[str, int]
) -> CounterMetricFamily:
    """A counter by stage with every stage that took events listed, at 0 if it has none
    (a dashboard tells "nothing happened" from "not exported")."""
    family = CounterMetricFamily(name, documentation, labels=["stage"])
    return _labelled(family, dict.fromkeys(stages, 0) | dict(counts))


def _labelled(family: _Family, counts: Mapping[Any, int]) -> _Family:
    """`family` with one sample per key of `counts` (a label value, or a tuple of them),
    in key order, so a scrape lists them the same way every time."""
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


class Metrics:
    """A registry for one engine, plus the batch-latency histogram the run loop observes."""

    def __init__(self, engine: Observed) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engine))
        self.latency = Histogram(
            "lockstep_processing_latency_seconds",
            "Time from a batch's first input being read to its results being written.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)
