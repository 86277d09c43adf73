"""`engagement_inflation` (Article 12): fabricated clicks, reposts and comments on one item.

Keyed by content item. Volume is the trigger: a window's events well above the item's own
normal (`EngagementBaseline`, which judges an item's first window against a prior, so a
farm on a post published minutes ago is caught too). Concentration is the discriminator
(`sources_per_extra_event`): a viral post's extra volume comes from new accounts on their
own devices and networks, a click farm's from the same few accounts, devices and addresses
again and again. Networks alone are weak (a carrier NAT puts thousands of people behind one
address), so at least `min_signals` of accounts, devices and networks must be concentrated.
A missing device or address counts as the actor's own unknown one, so clients that send
neither do not look like one shared phone.

Cost: this stage sees most events, on a long tail of items that get a few clicks each.
An event costs a count and three list appends: its actor, device and address, for every
event up to `sample_events` per pane (beyond, only counted), so nothing depends on arrival
order. Distinct counts are taken from those lists only for a window with `min_events`, and
networks only for a window already suspicious on volume. An item gets a model only from its
first window with `min_events` (until then the prior stands for it).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from models.engagement import EngagementBaseline, sources_per_extra_event
from models.network import network_of
from pipeline.findings import Finding, make_finding, severity_of
from pipeline.settings import EngagementInflationSettings, SeveritySettings
from pipeline.stage import Stage, WindowSpec

UNKNOWN = "\x00"  # a missing device or address counts as UNKNOWN + actor: the actor's own


class EngagementPane(msgspec.Struct, gc=False):
    """One pane of an item. A `msgspec.Struct` with `gc=False` (like the events) rather
    than a slotted class: panes are as many as the items clicked in a window, and keeping
    them out of the garbage collector's lists saves much of this stage's cost. Structs
    pickle as they are, for the distributed runtime's table stores."""

    events: int = 0  # all of them; `seen` covers the first `sample_events`
    reposts: int = 0
    comments: int = 0
    owner: str = ""
    seen: list[str | None] = []  # actor, device, ip of each event, flat

    def sources(self) -> tuple[list[str], list[str], list[str]]:
        """Actors, devices and addresses of the sampled events, a missing device or
        address replaced by the actor's own unknown one."""
        actors = self.seen[0::3]
        devices = [d or UNKNOWN + a for a, d in zip(actors, self.seen[1::3], strict=True)]
        ips = [ip or UNKNOWN + a for a, ip in zip(actors, self.seen[2::3], strict=True)]
        return actors, devices, ips  # type: ignore[return-value]


def _network(address: str) -> str:
    return address if address.startswith(UNKNOWN) else network_of(address)


class EngagementInflationStage(Stage):
    detector = "engagement_inflation"
    key_field = "content_id"
    event_types = frozenset({"click", "repost", "comment"})

    def __init__(self, cfg: EngagementInflationSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        alpha = 1.0 - 0.5 ** (cfg.hop_ms / cfg.half_life_ms)
        self._fresh = EngagementBaseline.starting_at(
            cfg.prior_events, alpha, cfg.warmup_windows, cfg.z_threshold, cfg.clip_z
        )
        self._sample = cfg.sample_events
        self._limits = {
            "accounts": cfg.max_accounts_per_event,
            "devices": cfg.max_devices_per_event,
            "networks": cfg.max_networks_per_event,
        }

    def new_model(self) -> EngagementBaseline:
        return self._fresh.__copy__()  # a shallow copy of numbers: a tenth of building one

    def new_pane(self) -> EngagementPane:
        return EngagementPane()

    def add(self, pane: EngagementPane, event: Any) -> None:
        n = pane.events = pane.events + 1
        kind = event.type
        if kind != "click":
            if kind == "repost":
                pane.reposts += 1
            else:
                pane.comments += 1
        if n == 1:
            pane.owner = event.target
        elif n > self._sample:
            return
        seen = pane.seen
        seen.append(event.actor)
        seen.append(event.device_id)
        seen.append(event.ip)

    def evaluate(
        self,
        key: str,
        model: EngagementBaseline,
        panes: list[EngagementPane],
        start: int,
        end: int,
    ) -> Finding | None:
        cfg = self.cfg
        events = panes[0].events if len(panes) == 1 else sum(p.events for p in panes)
        if events < cfg.min_events and model.observed == 0:
            return None  # an item is modelled from its first busy window; until then, the prior
        volume_score = model.update(end // cfg.hop_ms, events)
        if (
            events >= cfg.min_events
            and volume_score >= 0.5
            and events >= cfg.min_ratio * max(model.expected, 1.0)
        ):
            finding = self._judge(key, model, panes, start, end, events, volume_score)
            if finding is not None:
                model.forget_last()  # fabricated volume is not this item's normal
                return finding
        if model.observed == 1:  # a busy item first seen mid-life: that is its normal
            model.adopt(events)
        newest = panes[-1]  # a busy ordinary window teaches the item's accounts per event
        if newest.events >= cfg.min_events:
            actors = newest.seen[0::3]
            model.learn_accounts_per_event(len(set(actors)), len(actors))
        return None

    def _judge(
        self,
        key: str,
        model: EngagementBaseline,
        panes: list[EngagementPane],
        start: int,
        end: int,
        events: int,
        volume_score: float,
    ) -> Finding | None:
        """A window whose volume is abnormal: is its extra volume concentrated?"""
        cfg = self.cfg
        sources = [p.sources() for p in panes]
        actors = Counter(a for pane_actors, _, _ in sources for a in pane_actors)
        devices = {d for _, pane_devices, _ in sources for d in pane_devices}
        ips = {ip for _, _, pane_ips in sources for ip in pane_ips}
        sampled = actors.total()
        if not sampled:
            return None
        expected, usual = model.expected, model.accounts_per_event
        distinct = {"accounts": len(actors), "devices": len(devices)}
        shares = {
            name: sources_per_extra_event(count, sampled, events, expected, usual)
            for name, count in distinct.items()
        }
        concentrated = [name for name, share in shares.items() if share <= self._limits[name]]
        if len(concentrated) + 1 < cfg.min_signals:  # networks alone cannot make up the rest
            return None
        distinct["networks"] = len({_network(ip) for ip in ips})
        shares["networks"] = sources_per_extra_event(
            distinct["networks"], sampled, events, expected, usual
        )
        if shares["networks"] <= self._limits["networks"]:
            concentrated.append("networks")
        if len(concentrated) < cfg.min_signals:
            return None
        # The weakest of the signals needed: 0.5 at its limit, towards 1 as it tightens.
        strengths = sorted(
            (1.0 - 0.5 ** (self._limits[n] / max(shares[n], 1e-6)) for n in concentrated),
            reverse=True,
        )
        score = (volume_score + strengths[cfg.min_signals - 1]) / 2
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        repeaters = sorted(
            (a for a, c in actors.items() if c >= cfg.min_member_events),
            key=lambda a: (-actors[a], a),
        )
        reposts = sum(p.reposts for p in panes)
        comments = sum(p.comments for p in panes)
        most = max(actors.values())
        minutes = (end - start) / 60_000
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="content",
            subject_id=key,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=repeaters[: cfg.max_members],
            evidence={
                "owner": next((p.owner for p in panes if p.owner), ""),
                "events": events,
                "clicks": events - reposts - comments,
                "reposts": reposts,
                "comments": comments,
                "expected": round(expected, 2),
                "z": round(model.z, 2),
                "z_threshold": cfg.z_threshold,
                "history_windows": model.observed - 1,
                "sampled_events": sampled,
                "distinct_accounts": distinct["accounts"],
                "distinct_devices": distinct["devices"],
                "distinct_networks": distinct["networks"],
                "accounts_per_event": round(distinct["accounts"] / sampled, 3),
                "devices_per_event": round(distinct["devices"] / sampled, 3),
                "networks_per_event": round(distinct["networks"] / sampled, 3),
                "usual_accounts_per_event": round(usual, 3),
                "new_sources_per_extra_event": {n: round(v, 3) for n, v in shares.items()},
                "concentrated": concentrated,
                "max_per_account": most,
                "mean_per_account": round(sampled / len(actors), 2),
                "repeat_accounts": len(repeaters),
                "explanation": (
                    f"{events} clicks, reposts and comments in {minutes:g} min where this item "
                    f"usually gets about {expected:.0f} (z={model.z:.1f}); {sampled} of them came "
                    f"from {_count(distinct['accounts'], 'account')} on "
                    f"{_count(distinct['devices'], 'device')} in "
                    f"{_count(distinct['networks'], 'network')}, up to {most} actions per "
                    f"account (concentrated: {', '.join(concentrated)})"
                ),
            },
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
