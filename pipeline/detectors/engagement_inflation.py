"""`engagement_inflation` (Article 12): fabricated clicks, reposts and comments.

Every content item and every owner is judged against its own normal. Volume is the
trigger: an item's window well above the item's normal (`EngagementBaseline`, which judges
an item's first busy window against a prior, so a farm on a post published minutes ago is
caught too), or an owner's total, without the items already found, well above the owner's
(a farm spread thinly over all of an account's posts, no single one busy). Concentration
is the discriminator (`sources_per_extra_event`): a viral post's extra volume comes from
new accounts on their own devices and networks, a click farm's from the same few accounts,
devices and addresses again and again. Networks alone are weak (a carrier NAT puts
thousands of people behind one address), so at least `min_signals` of accounts, devices
and networks must be concentrated. A missing device or address counts as the actor's own
unknown one, so clients that send neither do not look like one shared phone.

Cost: this stage sees most events, on a long tail of items that get a click or two a
window. It is a whole-window stage (`pipeline.core.window_runner`): a window's events are
counted per item and per owner in C, an item gets a model only from its first window with
`min_events`, and sources are looked at only for the few items and owners whose volume is
abnormal (the first `sample_events` of them by event time and id, so arrival order
changes nothing). Keyed (and partitioned) by owner: an owner's items live with it.
"""

from __future__ import annotations

import zlib
from collections import Counter
from operator import attrgetter
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np

from models.engagement import EngagementBaseline, sources_per_extra_event
from models.network import network_of
from models.recent_windows import remember
from models.scales import decay_alpha, saturating
from pipeline.contract.findings import Finding, SubjectType, fabricated, make_finding, severity_of
from pipeline.core.event_columns import (
    EventColumns,
    Groups,
    count_lookup,
    group_hashes,
    isin_hashes,
)
from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive, PositiveInt
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.case_evidence import member_facts, series
from pipeline.detectors.registry import Detector, DetectorSettings, check_hops

UNKNOWN = "\x00"  # a missing device or address counts as UNKNOWN + actor: the actor's own
SIGNALS = ("accounts", "devices", "networks")


class EngagementInflationSettings(DetectorSettings):
    """`detectors.engagement_inflation` in config/lockstep.yaml, which explains each field."""

    window_ms: PositiveInt
    hop_ms: PositiveInt
    half_life_ms: PositiveInt
    prior_events: NonNegative
    warmup_windows: NonNegativeInt
    owner_warmup_windows: NonNegativeInt
    z_threshold: Positive
    min_events: PositiveInt
    min_ratio: Positive
    clip_z: Positive
    max_accounts_per_event: NonNegative
    max_devices_per_event: NonNegative
    max_networks_per_event: NonNegative
    max_devices_per_account: NonNegative
    source_margin_sd: NonNegative
    min_signals: Annotated[int, msgspec.Meta(ge=1, le=3)]  # of accounts, devices, networks
    sample_events: PositiveInt
    relearn_sources_windows: PositiveInt
    min_member_events: PositiveInt
    max_members: PositiveInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt

    def check(self) -> None:
        where = "detectors.engagement_inflation"
        check_hops(where, self.window_ms, self.hop_ms)
        if self.sample_events < self.min_events:
            raise ConfigError(f"{where}: sample_events must be >= min_events")


class OwnerModel(msgspec.Struct, gc=False):
    """An owner's normal: its total volume (from its first busy window) and the normal of
    each of its items that ever had a busy window."""

    volume: EngagementBaseline | None = None
    items: dict[str, EngagementBaseline] = {}
    pruned_at: int = 0  # window index of the last sweep of idle item models


class Concentration(NamedTuple):
    """Why a window's extra volume looks fabricated: which sources are concentrated."""

    strength: float  # 0.5 at the limits, towards 1 as the sources tighten
    concentrated: list[str]
    shares: dict[str, float]
    distinct: dict[str, int]
    actors: Counter[str]


class Volume(NamedTuple):
    """One subject's (an item's or an owner's) window, scored on volume."""

    subject_type: SubjectType
    subject: str
    owner: str
    baseline: EngagementBaseline
    events: int
    score: float
    abnormal: bool


_item = attrgetter("content_id")
_owner = attrgetter("target")
_item_owner = attrgetter("content_id", "target")
_actor = attrgetter("actor")
_order = attrgetter("ts", "event_id")


def _network(address: str) -> str:
    return address if address.startswith(UNKNOWN) else network_of(address)


class EngagementInflationStage(WholeWindowStage):
    detector = "engagement_inflation"
    key_field = "target"
    event_types = frozenset({"click", "repost", "comment"})

    def __init__(self, cfg: EngagementInflationSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        alpha = decay_alpha(cfg.hop_ms, cfg.half_life_ms)
        self._fresh_item = EngagementBaseline.starting_at(
            cfg.prior_events, alpha, cfg.warmup_windows, cfg.z_threshold, cfg.clip_z
        )
        self._fresh_owner = EngagementBaseline.starting_at(
            cfg.prior_events, alpha, cfg.owner_warmup_windows, cfg.z_threshold, cfg.clip_z
        )
        self._ttl_windows = max(cfg.idle_ttl_ms // cfg.hop_ms, 1)
        self._limits = {
            "accounts": cfg.max_accounts_per_event,
            "devices": cfg.max_devices_per_event,
            "networks": cfg.max_networks_per_event,
        }
        self._per_account_limit = max(cfg.max_devices_per_account, 1e-9)

    def _shared_devices(self, devices: int, accounts: int) -> bool:
        """Whether a window's accounts crowd onto few devices (a farm's phones each
        carry several accounts; people bring their own, a missing one counts as theirs)."""
        return accounts > 0 and devices <= self._per_account_limit * accounts

    def new_model(self) -> OwnerModel:
        return OwnerModel()

    def judge(self, events: list[Any], models: Models, start: int, end: int) -> list[Finding]:
        """Judge a window's events: items first, then each owner's remaining volume."""
        cfg = self.cfg
        t = end // cfg.hop_ms
        min_events = cfg.min_events
        window = EventColumns(events)
        items = window.tally("content_id")
        item_codes = window.groups("content_id").codes  # type: ignore[union-attr]
        firsts = window.events_at(items.first)  # one event per item names it and its owner
        owner_names = list(map(_owner, firsts))
        owner_keys, owner_first, owner_of_item, _ = group_hashes(
            np.fromiter(map(hash, owner_names), np.int64, len(owner_names))
        )
        window.derive("target", Groups(owner_keys, owner_of_item[item_codes]))
        per_owner = np.bincount(owner_of_item, weights=items.counts, minlength=len(owner_keys))
        totals = dict(
            zip(
                map(owner_names.__getitem__, owner_first.tolist()),
                per_owner.astype(np.int64).tolist(),
                strict=True,
            )
        )
        busy = items.counts >= min_events
        busy_window = window.where(busy[item_codes])
        busy_firsts = list(map(firsts.__getitem__, np.flatnonzero(busy).tolist()))
        owner_of = dict(map(_item_owner, busy_firsts))
        counts = dict(zip(map(_item, busy_firsts), items.counts[busy].tolist(), strict=True))
        items_of: dict[str, list[str]] = {}
        for item, owner in owner_of.items():
            items_of.setdefault(owner, []).append(item)
        owners: dict[str, OwnerModel] = {}
        for owner in sorted(totals):
            model = models.get(owner, create=totals[owner] >= min_events or owner in items_of)
            if model is not None:
                owners[owner] = model
        quiet = [c for m in owners.values() for c in m.items if c not in counts]
        counts.update(
            (c, n) for c, n in count_lookup(items.keys, items.counts, quiet).items() if n
        )  # items with a model but not busy now: their window teaches their normal

        # Items: volume against each one's normal, then sources for the abnormal ones.
        scored: list[Volume] = []
        for owner, model in owners.items():
            looked = set(items_of.get(owner, ()))
            looked.update(c for c in model.items if c in counts)
            for item in sorted(looked):
                baseline = model.items.get(item)
                if baseline is None:  # an item is modelled from its first busy window
                    baseline = model.items[item] = self._fresh_item.__copy__()
                scored.append(self._volume("content", item, owner, baseline, counts[item], t, end))
        found = self._judge_all(scored, busy_window, "content_id", t, start, end)
        flagged = {f.subject_id: f.evidence["events"] for f in found}

        # Owners: the volume their found items do not explain.
        rest = window
        if flagged:
            rest = window.where(~isin_hashes(window.hashes("content_id"), flagged))
        scored = []
        for owner, model in owners.items():
            total = totals[owner] - sum(n for c, n in flagged.items() if owner_of[c] == owner)
            if model.volume is None and total >= min_events:
                model.volume = self._fresh_owner.__copy__()
            if model.volume is not None:
                scored.append(self._volume("account", owner, owner, model.volume, total, t, end))
            if t - model.pruned_at >= self._ttl_windows:
                _forget_idle_items(model.items, t - self._ttl_windows)
                model.pruned_at = t
        return found + self._judge_all(scored, rest, "target", t, start, end)

    def _volume(
        self,
        subject_type: SubjectType,
        subject: str,
        owner: str,
        baseline: EngagementBaseline,
        events: int,
        t: int,
        end: int,
    ) -> Volume:
        cfg = self.cfg
        score = baseline.update(t, events)
        baseline.recent = remember(
            baseline.recent, end, events, baseline.expected, cfg.series_points
        )
        abnormal = (
            events >= cfg.min_events
            and score >= 0.5
            and events >= cfg.min_ratio * max(baseline.expected, 1.0)
        )
        return Volume(subject_type, subject, owner, baseline, events, score, abnormal)

    def _judge_all(
        self, scored: list[Volume], window: EventColumns, field: str, t: int, start: int, end: int
    ) -> list[Finding]:
        """Judge the abnormal subjects on their sources; let the ordinary busy ones teach
        their normal (`field` names an event's subject). How many accounts an event of a
        subject usually brings moves slowly, so it is measured on one busy window in
        `relearn_sources_windows`, each subject in its own phase (until then, one account
        per event): counting distinct accounts on every busy item in every window would
        cost more than the rest of the stage."""
        cfg = self.cfg
        min_events = cfg.min_events
        every = cfg.relearn_sources_windows
        learners = {
            v.subject
            for v in scored
            if v.events >= min_events and (t + zlib.crc32(v.subject.encode())) % every == 0
        }
        abnormal = {v.subject for v in scored if v.abnormal}
        if not learners and not abnormal:
            return []
        looked = learners | abnormal  # their distinct accounts: one count for both
        mine = window.of(field, looked)
        accounts = mine.distinct(field, "actor", looked)
        suspects = self._screen(scored, abnormal, accounts, mine, field)
        by_subject: dict[str, list[Any]] = {s: [] for s in suspects}
        if suspects:
            subject_of = attrgetter(field)
            for event in window.of(field, suspects).events:
                events = by_subject.get(subject_of(event))
                if events is not None:  # (not a hash collision)
                    events.append(event)
        findings: list[Finding] = []
        for v in scored:
            if v.subject in suspects:
                finding = self._judge_sources(v, by_subject[v.subject], start, end)
                if finding is not None:
                    v.baseline.forget_last()  # fabricated volume is not this normal
                    findings.append(finding)
                    continue
            b = v.baseline
            if b.observed == 1 or b.n <= b.warmup:  # first seen busy, or warming up (a
                b.adopt(v.events)  # stream's first window is partial): ordinary, its normal
            if v.subject in learners:  # an ordinary busy window: its usual sources
                v.baseline.learn_accounts_per_event(accounts.get(v.subject, 0), v.events)
        return findings

    def _screen(
        self,
        scored: list[Volume],
        abnormal: set[str],
        accounts: dict[str, int],
        window: EventColumns,
        field: str,
    ) -> set[str]:
        """The abnormal subjects whose sources could be concentrated. Distinct accounts
        (`accounts`) and devices per subject are counted in numpy (a missing device counts
        as one shared device, so its count is a lower bound); a subject whose accounts and
        devices are both plainly diverse cannot reach `min_signals` with networks alone
        and needs no closer look. That is most abnormal windows: every busy item in a
        run's first window, judged against the prior."""
        if not abnormal:
            return set()
        cfg = self.cfg
        devices = window.of(field, abnormal).distinct(field, "device_id", abnormal)
        margin = cfg.source_margin_sd
        suspects = set()
        for v in scored:
            if not v.abnormal:
                continue
            if v.events > cfg.sample_events:  # judged on a sample: no shortcut
                suspects.add(v.subject)
                continue
            b = v.baseline
            shares = (
                sources_per_extra_event(accounts.get(v.subject, 0), v.events, v.events,
                                        b.expected, b.accounts_per_event, margin),
                sources_per_extra_event(devices.get(v.subject, 0), v.events, v.events,
                                        b.expected, b.accounts_per_event, margin),
            )  # fmt: skip
            limits = (self._limits["accounts"], self._limits["devices"])
            possible = sum(share <= limit for share, limit in zip(shares, limits, strict=True))
            if shares[1] > limits[1] and self._shared_devices(
                devices.get(v.subject, 0), accounts.get(v.subject, 0)
            ):
                possible += 1
            if possible + 1 >= cfg.min_signals:
                suspects.add(v.subject)
        return suspects

    def _judge_sources(self, v: Volume, events: list[Any], start: int, end: int) -> Finding | None:
        """Is an abnormal window's extra volume concentrated on a few sources?"""
        cap = self.cfg.sample_events
        sample = events if len(events) <= cap else sorted(events, key=_order)[:cap]
        concentration = self._concentration(v.baseline, sample, v.events)
        if concentration is None:
            return None
        score = (v.score + concentration.strength) / 2
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        kinds = Counter(e.type for e in events)
        return self._finding(v, kinds, sample, start, end, score, severity, concentration)

    def _concentration(
        self, baseline: EngagementBaseline, sample: list[Any], events: int
    ) -> Concentration | None:
        cfg = self.cfg
        actors = Counter(map(_actor, sample))
        sampled = len(sample)
        if not sampled:
            return None
        devices = {e.device_id or UNKNOWN + e.actor for e in sample}
        expected, usual = baseline.expected, baseline.accounts_per_event
        distinct = {"accounts": len(actors), "devices": len(devices)}
        shares = {
            name: sources_per_extra_event(
                count, sampled, events, expected, usual, cfg.source_margin_sd
            )
            for name, count in distinct.items()
        }
        # how tight each source is against its limit (<= 1: concentrated); devices also
        # by accounts per device, however often each account acts
        tight = {name: share / max(self._limits[name], 1e-9) for name, share in shares.items()}
        per_account = len(devices) / len(actors)
        tight["devices"] = min(tight["devices"], per_account / self._per_account_limit)
        concentrated = [name for name, t in tight.items() if t <= 1.0]
        if len(concentrated) + 1 < cfg.min_signals:  # networks alone cannot make up the rest
            return None
        ips = {e.ip or UNKNOWN + e.actor for e in sample}
        distinct["networks"] = len({_network(ip) for ip in ips})
        shares["networks"] = sources_per_extra_event(
            distinct["networks"], sampled, events, expected, usual, cfg.source_margin_sd
        )
        tight["networks"] = shares["networks"] / max(self._limits["networks"], 1e-9)
        if tight["networks"] <= 1.0:
            concentrated.append("networks")
        if len(concentrated) < cfg.min_signals:
            return None
        # The weakest of the signals needed: 0.5 at its limit, towards 1 as it tightens.
        strengths = sorted(
            (saturating(1.0, max(tight[n], 1e-6)) for n in concentrated), reverse=True
        )
        ordered = [n for n in SIGNALS if n in concentrated]
        return Concentration(strengths[cfg.min_signals - 1], ordered, shares, distinct, actors)

    def _finding(
        self,
        v: Volume,
        kinds: Counter[str],
        sample: list[Any],
        start: int,
        end: int,
        score: float,
        severity: str,
        c: Concentration,
    ) -> Finding:
        """The finding on `v`'s window; its members are described from `sample`, the
        events its sources were counted on."""
        cfg = self.cfg
        actors = c.actors
        sampled = actors.total()
        repeaters = sorted(
            (a for a, n in actors.items() if n >= cfg.min_member_events),
            key=lambda a: (-actors[a], a),
        )
        most = max(actors.values())
        minutes = (end - start) / 60_000
        baseline, events = v.baseline, v.events
        expected = baseline.expected
        what = "this item" if v.subject_type == "content" else "this account's content"
        members = repeaters[: cfg.max_members]
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type=v.subject_type,
            subject_id=v.subject,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "owner": v.owner,
                "events": events,
                "fabricated": fabricated(  # the excess, shared out over the kinds seen
                    **{k: n * max(0.0, 1 - expected / events) for k, n in kinds.items()}
                ),
                "clicks": kinds["click"],
                "reposts": kinds["repost"],
                "comments": kinds["comment"],
                "expected": round(expected, 2),
                "z": round(baseline.z, 2),
                "z_threshold": cfg.z_threshold,
                "history_windows": baseline.observed - 1,
                "sampled_events": sampled,
                "distinct_accounts": c.distinct["accounts"],
                "distinct_devices": c.distinct["devices"],
                "distinct_networks": c.distinct["networks"],
                "accounts_per_event": round(c.distinct["accounts"] / sampled, 3),
                "devices_per_event": round(c.distinct["devices"] / sampled, 3),
                "networks_per_event": round(c.distinct["networks"] / sampled, 3),
                "devices_per_account": round(c.distinct["devices"] / len(actors), 3),
                "usual_accounts_per_event": round(baseline.accounts_per_event, 3),
                "new_sources_per_extra_event": {n: round(x, 3) for n, x in c.shares.items()},
                "concentrated": c.concentrated,
                "max_per_account": most,
                "mean_per_account": round(sampled / len(actors), 2),
                "repeat_accounts": len(repeaters),
                **series(baseline.recent),
                "member_facts": member_facts(sample, members),
                "explanation": (
                    f"{events} clicks, reposts and comments in {minutes:g} min where {what} "
                    f"usually gets about {expected:.0f} (z={baseline.z:.1f}); {sampled} of them "
                    f"came from {_count(c.distinct['accounts'], 'account')} on "
                    f"{_count(c.distinct['devices'], 'device')} in "
                    f"{_count(c.distinct['networks'], 'network')}, up to {most} actions per "
                    f"account (concentrated: {', '.join(c.concentrated)})"
                ),
            },
        )


def _forget_idle_items(models: dict[str, EngagementBaseline], before: int) -> None:
    """Drop the models of items with no window since `before` (a window index)."""
    for content_id in [c for c, m in models.items() if (m.last_t or 0) < before]:
        del models[content_id]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


DETECTOR = Detector(
    name="engagement_inflation",
    settings=EngagementInflationSettings,
    stages=lambda cfg, build: [EngagementInflationStage(cfg, build.severity)],
)
