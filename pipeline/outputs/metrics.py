"""Prometheus metrics for a running engine, read from its totals at scrape time.

Counting happens once per batch inside the engine; the collector below turns the totals
into metric families when Prometheus asks, so the per-event path never touches a metric.
Labels are bounded sets (event type, reason, detector, article, severity, action, mode);
account ids never become labels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from pipeline.contract.events import NO_TIME
from pipeline.core.engine import Stats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# Every metric family Lockstep exports, as a scrape names it (dashboards are checked
# against this list, and a test checks the list against a real scrape).
EXPORTED_METRICS: tuple[str, ...] = (
    "lockstep_inputs_total",
    "lockstep_events_total",
    "lockstep_stage_events_total",
    "lockstep_dead_letters_total",
    "lockstep_duplicate_events_total",
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


class EngineCollector(Collector):
    def __init__(self, engine: Observed) -> None:
        self.engine = engine

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        engine = self.engine
        with engine.lock:
            st = engine.stats
            inputs, duplicates = st.inputs, st.duplicates
            by_type = dict(st.events_by_type)
            staged = dict(st.staged_by_stage)
            dead = dict(st.dead_letters_by_reason)
            findings = dict(st.findings_by_kind)
            actions = dict(st.actions_by_type)
            watermark = st.watermark
            sizes = engine.state_size()
            lag = engine.consumer_lag() if hasattr(engine, "consumer_lag") else None
        yield _counter("lockstep_inputs", "Raw inputs read (lines or records).", inputs)
        events = CounterMetricFamily(
            "lockstep_events", "Valid events processed, by type.", labels=["type"]
        )
        for event_type, n in sorted(by_type.items()):
            events.add_metric([event_type], n)
        yield events
        stage_events = CounterMetricFamily(
            "lockstep_stage_events", "Events delivered to each stage.", labels=["stage"]
        )
        for stage, n in sorted(staged.items()):
            stage_events.add_metric([stage], n)
        yield stage_events
        dl = CounterMetricFamily(
            "lockstep_dead_letters", "Rejected inputs, by reason.", labels=["reason"]
        )
        for reason, n in sorted(dead.items()):
            dl.add_metric([reason], n)
        yield dl
        yield _counter("lockstep_duplicate_events", "Redelivered events dropped.", duplicates)
        yield _counter(
            "lockstep_late_events",
            "Events behind the watermark (dead-lettered).",
            dead.get("late", 0),
        )
        found = CounterMetricFamily(
            "lockstep_findings", "Findings emitted.", labels=["detector", "article", "severity"]
        )
        for kind, n in sorted(findings.items()):
            found.add_metric(list(kind), n)
        yield found
        acts = CounterMetricFamily(
            "lockstep_actions", "Actions emitted.", labels=["action", "mode"]
        )
        for kind, n in sorted(actions.items()):
            acts.add_metric(list(kind), n)
        yield acts
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
        keys = GaugeMetricFamily(
            "lockstep_state_keys", "Keys held in memory, by stage.", labels=["stage"]
        )
        for stage, n in sorted(sizes.items()):
            keys.add_metric([stage], n)
        yield keys
        if lag is not None:
            behind = GaugeMetricFamily(
                "lockstep_consumer_lag_records",
                "Records not yet consumed, by input topic.",
                labels=["topic"],
            )
            for topic, n in sorted(lag.items()):
                behind.add_metric([topic], n)
            yield behind


def _counter(name: str, doc: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


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
