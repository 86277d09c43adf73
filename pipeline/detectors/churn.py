"""`churn` (Article 18(4)): follow-for-follow growth hacking, a form of fake traffic.

Keyed by the actor (the follower). An account that follows dozens of accounts and drops
them again within minutes, round after round, fakes attention to harvest follow-backs.
The evidence is the *quick undo* (`models.churn.quick_undos`): an unfollow of a pair the
actor followed at most `undo_within_ms` before. Each actor's quick undos are remembered
over `horizon_ms` (`ChurnHistory`) and their number is judged against what a real user
makes (`prior_undos` per horizon: regret within minutes is rare), never against the
actor's own past, so a sustained churner does not become its own normal. A user who
drops a couple of accounts stays far below `min_undos`; a popular account losing many
followers after a scandal is many actors with one undo each, nothing for any of them.

Cost: follows are about a tenth of all events, unfollows a fiftieth, and quick undos
far fewer. It is a whole-window stage (`pipeline.core.window_runner`): windows are
`undo_within_ms` plus one hop long and slide by `hop_ms`, so each unfollow of the newest
pane meets every follow it may undo, and is judged exactly once. Per window the stage
finds the newest pane at the tail of the window's events by a binary search (runners
hand panes oldest first), picks its unfollows (a type test per event, so each event is
tested once, not once per window), then the follows of just those actors (a pass in C,
`itertools.compress`); only actors with a quick undo get a model. A `KeyedRunner` stage
keyed by shards of actors (follows filed per actor in `add`, nothing scanned at close)
was measured too: its per-event `add` cost as much as this whole stage. State: a
`ChurnHistory` per actor with a quick undo in the last `idle_ttl_ms`, at most
`max_undos` entries each, and the window's events (`undo_within_ms` + `hop_ms`).

Evidence: `series` charts the count judged as it built up over the horizon, from the
quick undos the actor's history holds (nothing more is kept for it): at the end of each
hop of the horizon (at most `series_points`; 0 leaves it out), the quick undos remembered
up to then, and the prior's share of the horizon up to then; the last point is the
finding's own `quick_undos` and `expected`.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from itertools import compress, islice
from operator import attrgetter
from typing import Any

from models.churn import ChurnHistory, quick_undos, surprise
from models.scales import saturating
from pipeline.contract.events import Follow, Unfollow
from pipeline.contract.findings import Finding, make_finding, severity_of
from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive, PositiveInt
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.registry import Detector, DetectorSettings

_actor = attrgetter("actor")
_ts = attrgetter("ts")


class ChurnSettings(DetectorSettings):
    """`detectors.churn` in config/lockstep.yaml, which explains each field."""

    hop_ms: PositiveInt
    undo_within_ms: PositiveInt
    horizon_ms: PositiveInt
    prior_undos: NonNegative
    z_threshold: Positive
    min_undos: PositiveInt
    min_targets: PositiveInt
    round_gap_ms: PositiveInt
    renotify_ms: NonNegativeInt
    max_undos: PositiveInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.churn"
        if self.horizon_ms < self.hop_ms or self.idle_ttl_ms < self.horizon_ms:
            raise ConfigError(f"{where}: need hop_ms <= horizon_ms <= idle_ttl_ms")
        if self.max_undos < self.min_undos:
            raise ConfigError(f"{where}: need min_undos <= max_undos")


class ChurnStage(WholeWindowStage):
    detector = "churn"
    key_field = "actor"
    event_types = frozenset({"follow", "unfollow"})

    def __init__(self, cfg: ChurnSettings, severity: SeveritySettings) -> None:
        hop = cfg.hop_ms
        reach = -(-cfg.undo_within_ms // hop) * hop  # whole panes covering undo_within_ms
        super().__init__(WindowSpec(reach + hop, hop), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity

    def new_model(self) -> ChurnHistory:
        return ChurnHistory()

    def judge(self, events: list[Any], models: Models, start: int, end: int) -> list[Finding]:
        """Pair the newest pane's unfollows with the window's follows; judge the actors
        that made quick undos."""
        cfg = self.cfg
        newest = end - cfg.hop_ms
        # Both runtimes hand a window's events pane by pane, oldest pane first, and a
        # pane holds the events stamped in it: the newest pane's are the list's tail.
        tail = bisect_left(events, newest, key=_ts)
        unfollows = sorted(
            (e.actor, e.target, e.ts)
            for e in islice(events, tail, None)
            if type(e) is Unfollow  # the exact class: the cheapest test
        )
        if not unfollows:
            return []
        actors = {actor for actor, _, _ in unfollows}
        follows = [  # those actors' follows: picked in C, then the few looked at in Python
            (e.actor, e.target, e.ts)
            for e in compress(events, map(actors.__contains__, map(_actor, events)))
            if type(e) is Follow
        ]
        found = quick_undos(follows, unfollows, cfg.undo_within_ms)
        by_actor: dict[str, dict[tuple[str, int], int]] = {}
        for actor, target, followed, undone in found:  # one undo per follow, however
            by_actor.setdefault(actor, {}).setdefault((target, followed), undone)  # repeated
        findings = []
        for actor in sorted(by_actor):
            model: ChurnHistory = models.get(actor, create=True)
            undos = by_actor[actor]
            for (target, _), undone in sorted(undos.items(), key=lambda kv: (kv[1], kv[0])):
                model.learn(undone, target, cfg.horizon_ms, cfg.max_undos)
            finding = self._judge(actor, model, undos, start, end)
            if finding is not None:
                findings.append(finding)
        return findings

    def _judge(
        self,
        actor: str,
        model: ChurnHistory,
        undos: dict[tuple[str, int], int],
        start: int,
        end: int,
    ) -> Finding | None:
        cfg = self.cfg
        count = model.count
        if count < cfg.min_undos:
            return None
        if model.flagged_at is not None and end - model.flagged_at < cfg.renotify_ms:
            return None
        targets = model.targets()
        z = surprise(count, cfg.prior_undos)
        if targets < cfg.min_targets or z < cfg.z_threshold:
            return None
        score = saturating(z, cfg.z_threshold)
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        model.flagged_at = end
        rounds = model.rounds(cfg.round_gap_ms)
        delay_s = statistics.median(u - f for (_, f), u in undos.items()) / 1000
        first = model.undos[0][0]
        minutes = (end - first) / 60_000
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="account",
            subject_id=actor,
            window_start=min(start, first),
            window_end=end,
            score=score,
            severity=severity,
            members=[actor],
            evidence={
                "quick_undos": count,
                "distinct_targets": targets,
                "rounds": rounds,
                "undo_within_s": cfg.undo_within_ms // 1000,
                "median_undo_delay_s": round(delay_s, 1),
                "horizon_s": cfg.horizon_ms // 1000,
                "expected": cfg.prior_undos,
                "z": round(z, 2),
                "z_threshold": cfg.z_threshold,
                **_build_up(model, end, cfg),
                "explanation": (
                    f"followed and unfollowed again within {cfg.undo_within_ms // 60_000} min "
                    f"{count} times ({targets} distinct accounts, {rounds} "
                    f"round{'s' if rounds != 1 else ''}) in the last {minutes:.0f} min, where "
                    f"a real user does so about {cfg.prior_undos:g} times in "
                    f"{cfg.horizon_ms // 60_000} min (z={z:.1f})"
                ),
            },
        )


def _build_up(model: ChurnHistory, end: int, cfg: ChurnSettings) -> dict[str, Any]:
    """`{"series": ...}`: the actor's quick undos as they built up to the count judged at
    `end`: at each hop's end over the horizon (the last `series_points`), those remembered
    before it, against the prior's share of the horizon up to it. Nothing with
    `series_points` 0, as the detectors that keep a record of their windows."""
    hop, horizon = cfg.hop_ms, cfg.horizon_ms
    points = min(max(horizon // hop, 1), cfg.series_points)
    if points <= 0:
        return {}
    t = [end - k * hop for k in range(points - 1, -1, -1)]
    stamps = [ts for ts, _ in model.undos]  # sorted, oldest first
    since = end - horizon
    return {
        "series": {
            "t": t,
            "value": [bisect_left(stamps, x) for x in t],  # undos stamped before the hop's end
            "expected": [round(cfg.prior_undos * max(x - since, 0) / horizon, 2) for x in t],
        }
    }


DETECTOR = Detector(
    name="churn",
    settings=ChurnSettings,
    stages=lambda cfg, build: [ChurnStage(cfg, build.severity)],
)
