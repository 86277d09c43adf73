"""The detector registry: a detector is one module and one block under `detectors:`.

This module declares a detector of its own, `click_flood` (an account whose posts are
clicked more than `max_clicks` times in a window), registers it for the duration of a
test, and runs it as the pipeline runs any detector: through `replay`, and through the
distributed runtime's stage partitions. Then what the registry derives from the
declarations: the settings schema and checks, the names a policy may use, the wiring of
derived streams between detectors.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from pipeline.contract.findings import Finding, make_finding, severity_of
from pipeline.core.settings import ConfigError, SeveritySettings, load_settings
from pipeline.core.stage import Stage, WindowSpec
from pipeline.detectors import REGISTRY, build_stages
from pipeline.detectors.hoarded_accounts import MEMBER_STREAM
from pipeline.detectors.registry import Detector, DetectorSettings, Registry
from pipeline.detectors.silent_followers import JUMP_STREAM
from pipeline.distributed.topics import Topics
from pipeline.embedded.replay import replay
from pipeline.enforcement.policy import DEFAULT_POLICY, PolicyError, load_policy
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder, read_jsonl, write_lines
from tests.stage_partitions import run_partitioned


class ClickFloodSettings(DetectorSettings):
    window_ms: int
    max_clicks: int
    idle_ttl_ms: int

    def check(self) -> None:
        if self.max_clicks < 1:
            raise ConfigError("detectors.click_flood: max_clicks must be >= 1")


class ClickFloodStage(Stage):
    """Per account: the clicks on its posts in a tumbling window, by clicker."""

    detector = "click_flood"
    key_field = "target"
    event_types = frozenset({"click"})

    def __init__(self, cfg: ClickFloodSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity

    def new_model(self) -> None:
        return None  # no history: the limit is absolute

    def new_pane(self) -> Counter[str]:
        return Counter()

    def add(self, pane: Counter[str], event: Any) -> None:
        pane[event.actor] += 1

    def evaluate(
        self, key: str, model: None, panes: list[Counter[str]], start: int, end: int
    ) -> Finding | None:
        clickers = sum(panes, Counter())
        clicks = clickers.total()
        score = 1.0 - 0.5 ** (clicks / self.cfg.max_clicks)  # 0.5 at the limit
        severity = severity_of(score, self.severity)
        if clicks <= self.cfg.max_clicks or severity is None:
            return None
        return make_finding(
            detector=self.detector,
            article=self.cfg.article,
            subject_type="account",
            subject_id=key,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=sorted(clickers),
            evidence={"clicks": clicks},
        )


CLICK_FLOOD = Detector(
    name="click_flood",
    settings=ClickFloodSettings,
    stages=lambda cfg, build: [ClickFloodStage(cfg, build.severity)],
)
BLOCK = {
    "enabled": True,
    "article": "12",
    "window_ms": 10 * MINUTE,
    "max_clicks": 25,
    "idle_ttl_ms": 2 * HOUR,
}


@pytest.fixture
def click_flood() -> Iterator[Detector]:
    with REGISTRY.registered(CLICK_FLOOD) as detector:
        yield detector


def _overlay(tmp_path: Path, **block: Any) -> Path:
    """A user's config file giving click_flood its block (`block` changes it)."""
    path = tmp_path / "click_flood.yaml"
    path.write_text(yaml.safe_dump({"detectors": {"click_flood": {**BLOCK, **block}}}))
    return path


def _clicks() -> list[str]:
    """Two hours of three clicks a minute on 30 accounts' posts, and 40 accounts clicking
    one post of `hot` within five minutes (in the window [T0 + 20 min, T0 + 30 min))."""
    b = StreamBuilder(seed=7)
    for minute in range(120):
        for _ in range(3):
            target = f"acct{b.rng.randrange(30)}"
            ts = T0 + minute * MINUTE + b.rng.randrange(MINUTE)
            b.add("click", ts, f"user{b.rng.randrange(500)}", target=target, content_id="p")
    for i in range(40):
        ts = T0 + 21 * MINUTE + b.rng.randrange(5 * MINUTE)
        b.add("click", ts, f"clicker{i}", target="hot", content_id="hot-p")
    return b.sorted_lines()


@pytest.mark.usefixtures("click_flood")
def test_a_registered_detector_runs_alike_in_replay_and_in_stage_partitions(
    tmp_path: Path,
) -> None:
    settings = load_settings(_overlay(tmp_path))
    lines = _clicks()
    replay(str(write_lines(tmp_path / "in.jsonl", lines)), tmp_path / "out", settings)
    replayed = [
        f for f in read_jsonl(tmp_path / "out" / "findings.jsonl") if f["detector"] == "click_flood"
    ]
    assert [(f["subject_id"], f["window_start"] - T0, f["evidence"]) for f in replayed] == [
        ("hot", 20 * MINUTE, {"clicks": 40})
    ]
    assert replayed[0]["members"] == sorted(f"clicker{i}" for i in range(40))

    stages = [s for s in build_stages(settings) if s.detector == "click_flood"]
    assert [type(s) for s in stages] == [ClickFloodStage]
    run = run_partitioned(settings, stages, [x.encode() for x in lines], Topics("t", 2), chunk=60)
    assert run.duplicates > 0  # a chunk was delivered twice
    assert [msgspec.to_builtins(f) for f in run.found.values()] == replayed


@pytest.mark.usefixtures("click_flood")
def test_a_registered_detector_is_known_only_while_registered(tmp_path: Path) -> None:
    assert REGISTRY.finding_detectors[-1] == "click_flood"
    with pytest.raises(ConfigError, match=r"missing required field `click_flood`"):
        load_settings()  # a registered detector needs its block
    settings = load_settings(_overlay(tmp_path, enabled=False))
    assert settings.detectors.click_flood == ClickFloodSettings(**{**BLOCK, "enabled": False})
    assert "click_flood" not in {s.detector for s in build_stages(settings)}

    with REGISTRY.registered(Detector("other", ClickFloodSettings, CLICK_FLOOD.stages)):
        assert REGISTRY.finding_detectors[-2:] == ("click_flood", "other")
    assert REGISTRY.finding_detectors[-1] == "click_flood"  # restored


def test_the_block_of_a_detector_not_registered_is_refused(tmp_path: Path) -> None:
    assert "click_flood" not in REGISTRY.finding_detectors
    with pytest.raises(ConfigError, match=r"unknown field `click_flood` - at `\$.detectors`"):
        load_settings(_overlay(tmp_path))


@pytest.mark.usefixtures("click_flood")
def test_a_typo_in_a_detector_block_is_refused(tmp_path: Path) -> None:
    typo = _overlay(tmp_path)
    typo.write_text(typo.read_text().replace("max_clicks", "max_clickz"))
    with pytest.raises(ConfigError) as caught:
        load_settings(typo)
    assert str(caught.value) == (
        "invalid config: Object contains unknown field `max_clickz` - at `$.detectors.click_flood`"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_overlay(tmp_path, max_clicks=0))  # the detector's own check
    assert str(caught.value) == "detectors.click_flood: max_clicks must be >= 1"


def test_a_policy_may_name_a_detector_only_while_it_is_registered(tmp_path: Path) -> None:
    text = DEFAULT_POLICY.read_text(encoding="utf-8")
    assert "[forced_follow]" in text
    policy = tmp_path / "policy.yaml"
    policy.write_text(text.replace("[forced_follow]", "[click_flood]", 1), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"unknown detector 'click_flood' \(one of follower_jump"):
        load_policy(policy)
    with REGISTRY.registered(CLICK_FLOOD):
        named = load_policy(policy)
    assert any(rule.detectors == ["click_flood"] for rule in named.rules)


def _emits(settings_overrides: dict[str, Any]) -> dict[str, frozenset[str]]:
    settings = load_settings(overrides={"detectors": settings_overrides})
    return {s.detector: s.emits for s in build_stages(settings)}


def test_derived_streams_are_produced_only_for_a_running_consumer() -> None:
    emits = _emits({})
    assert emits["follower_jump"] == {JUMP_STREAM} and "silent_followers" in emits
    assert emits["batch_registration"] == {MEMBER_STREAM} and "hoarded_accounts" in emits

    emits = _emits({"silent_followers": {"enabled": False}, "hoarded_accounts": {"enabled": False}})
    assert emits["follower_jump"] == emits["batch_registration"] == frozenset()
    assert not {"follower_activity", "silent_followers", "hoarded_watch"} & set(emits)

    emits = _emits({"follower_jump": {"enabled": False}, "batch_registration": {"enabled": False}})
    assert not {"follower_activity", "silent_followers", "hoarded_watch"} & set(emits)


def test_a_cross_detector_constraint_is_checked_with_the_settings_it_needs() -> None:
    with pytest.raises(ConfigError, match=r"memory_ms must cover follower_jump.window_ms"):
        load_settings(overrides={"detectors": {"follower_jump": {"window_ms": 100 * HOUR}}})


def test_declarations_that_cannot_be_wired_are_refused() -> None:
    def detector(name: str, **wiring: tuple[str, ...]) -> Detector:
        return Detector(name, ClickFloodSettings, CLICK_FLOOD.stages, **wiring)

    with pytest.raises(ValueError, match="registered twice"):
        Registry(detector("a"), detector("a"))
    with pytest.raises(ValueError, match=r"b consumes \['s'\], which no detector before it"):
        Registry(detector("b", consumes=("s",)), detector("a", feeds=("s",)))
    with pytest.raises(ValueError, match=r"b needs \['a'\], not registered before it"):
        Registry(detector("b", needs=("a",)))
    with pytest.raises(ValueError, match=r"c consumes \['s'\], already consumed"):
        Registry(detector("a", feeds=("s",)), detector("b", consumes=("s",)),
                 detector("c", consumes=("s",)))  # fmt: skip
