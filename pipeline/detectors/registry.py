"""The detectors the pipeline knows, each declared once, by its own module.

A detector module ends with its `Detector`: the name of its block under `detectors:` in
config/lockstep.yaml, the settings struct that block decodes into (with its own `check`),
the stages it builds, and the derived streams (`pipeline.core.derived`) it hands other
detectors or takes from them. The rest follows from those declarations: the schema of
the `detectors:` block and its checks, the stages of the enabled detectors in order with
their streams wired, and the detector names a policy may use.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgspec

from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import Stage


class DetectorSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What every detector's block has; a detector's settings struct adds its own fields."""

    enabled: bool
    article: str  # the article its findings are evidence under

    def check(self, *needs: DetectorSettings) -> None:
        """Raise ConfigError, in one line, for values the types allow but the detector
        cannot use; `needs`: the settings of the detectors its `Detector` needs."""


def check_hops(where: str, window_ms: int, hop_ms: int) -> None:
    """ConfigError unless a detector's windows slide by whole hops (its panes are hops)."""
    if hop_ms <= 0 or window_ms <= 0 or window_ms % hop_ms:
        raise ConfigError(f"{where}: window_ms must be a positive multiple of hop_ms")


class Build(NamedTuple):
    """What a detector's stages are built from besides its own settings."""

    severity: SeveritySettings
    # per derived stream the detector feeds: the settings of the running detector that
    # consumes it (a stream nobody consumes is not produced)
    consumers: Mapping[str, DetectorSettings]


@dataclass(frozen=True)
class Detector:
    """One detector, as its module declares it."""

    name: str  # its block under `detectors:`, and the detector of its findings
    settings: type[DetectorSettings]
    # (its settings, a Build, then the settings of each of `needs`) -> its stages, in order
    stages: Callable[..., list[Stage]]
    also_finds: tuple[str, ...] = ()  # detector names its other stages' findings carry
    needs: tuple[str, ...] = ()  # detectors whose settings its check and stages read
    feeds: tuple[str, ...] = ()  # derived streams its stages can hand other detectors
    # derived streams of other detectors' stages it takes: it runs only when they run
    consumes: tuple[str, ...] = ()


class Registry:
    """Detectors in the order their stages run; a detector comes after those it needs or
    consumes from."""

    def __init__(self, *detectors: Detector) -> None:
        self._detectors: list[Detector] = []
        self._schema: type[msgspec.Struct] | None = None
        for detector in detectors:
            self._add(detector)

    def _add(self, detector: Detector) -> None:
        known = {d.name for d in self._detectors}
        fed = {s for d in self._detectors for s in d.feeds}
        consumed = {s for d in self._detectors for s in d.consumes}
        if detector.name in known:
            raise ValueError(f"detector {detector.name!r} is registered twice")
        if missing := set(detector.needs) - known:
            raise ValueError(f"{detector.name} needs {sorted(missing)}, not registered before it")
        if missing := set(detector.consumes) - fed:
            raise ValueError(
                f"{detector.name} consumes {sorted(missing)}, which no detector before it feeds"
            )
        if taken := set(detector.consumes) & consumed:
            raise ValueError(f"{detector.name} consumes {sorted(taken)}, already consumed")
        self._detectors.append(detector)
        self._schema = None

    @contextmanager
    def registered(self, detector: Detector) -> Iterator[Detector]:
        """`detector` added, last, for the duration of a with-block (a test's own)."""
        before = list(self._detectors)
        self._add(detector)
        try:
            yield detector
        finally:
            self._detectors = before
            self._schema = None

    @property
    def finding_detectors(self) -> tuple[str, ...]:
        """The detector names findings carry: those a policy may name."""
        return tuple(n for d in self._detectors for n in (d.name, *d.also_finds))

    @property
    def schema(self) -> type[msgspec.Struct]:
        """The `detectors:` block: a field per detector, its settings struct; a block
        missing or unknown, or a field unknown, is refused."""
        if self._schema is None:
            self._schema = msgspec.defstruct(
                "Detectors",
                [(d.name, d.settings) for d in self._detectors],
                module=__name__,
                forbid_unknown_fields=True,
                frozen=True,
            )
        return self._schema

    def check(self, detectors: Any) -> None:
        """Every block's own checks (of a `schema` struct), enabled or not."""
        for d in self._detectors:
            getattr(detectors, d.name).check(*self._needed(d, detectors))

    def build_stages(self, detectors: Any, severity: SeveritySettings) -> list[Stage]:
        """The stages of the running detectors, in order, each detector's told which of
        the streams it feeds are consumed, and by whose settings. A detector runs when it
        is enabled and the detectors feeding it run."""
        running = self._running(detectors)
        consumer_of = {s: getattr(detectors, d.name) for d in running for s in d.consumes}
        stages: list[Stage] = []
        for d in running:
            consumers = {s: consumer_of[s] for s in d.feeds if s in consumer_of}
            build = Build(severity, consumers)
            stages += d.stages(getattr(detectors, d.name), build, *self._needed(d, detectors))
        return stages

    def _running(self, detectors: Any) -> list[Detector]:
        fed: set[str] = set()
        running = []
        for d in self._detectors:
            if getattr(detectors, d.name).enabled and fed.issuperset(d.consumes):
                running.append(d)
                fed.update(d.feeds)
        return running

    @staticmethod
    def _needed(detector: Detector, detectors: Any) -> tuple[DetectorSettings, ...]:
        return tuple(getattr(detectors, name) for name in detector.needs)
