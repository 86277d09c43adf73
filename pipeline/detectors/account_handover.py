"""`account_handover` (Article 11; 18(8) when the account was traded): an account that
passes to another person without the platform's approval.

Keyed by the actor. Each account's usual devices, networks (/24, /48), hours, scripts of
its texts and the accounts it acts on are learned online (`models.handover`), from its
logins and the actions it takes (follows, reposts, comments; clicks are most of all
events and say little the others do not). An event from a device the account has not
used opens an *episode*, judged at each window's close against the usual: how much else
is new at once (the network, the hours, the script, the targets), whether a dormant
spell came before it, and whether it turned at once to promoting one account. A new
phone keeps the networks and habits; a journey keeps the phone (its events are learned
as the usual, the new network with them); a carrier NAT's shared address vouches for
nobody, so a known network never clears an unknown device, it only adds no signal. An
episode flagged or not becomes the usual after `episode_ms`. An episode is reported when it
first shows `min_signals` signals and again whenever it shows more (each report a finding
of its own window), so the promotion that follows a takeover reaches the case.

An event without a device cannot open an episode: it joins one by its network, or is
learned from a network the account knows, or else is a sign of life only (a login with
neither address nor device may be anyone's); without an address it brings no network.
State: one profile per account, bounded (`models.handover`, about 460 bytes pickled),
evicted after `idle_ttl_ms` without an event, which bounds how long a dormant spell can
be and still be measured.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from models.handover import AccountProfile, HandoverRules, Seen, Verdict, script_of
from models.network import network_of
from pipeline.contract.events import EVENT_TYPES
from pipeline.contract.findings import Finding, make_finding, severity_of
from pipeline.core.numbers import NonNegativeInt, PositiveInt, PositiveShare
from pipeline.core.settings import ConfigError, SeveritySettings
from pipeline.core.stage import WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.registry import Detector, DetectorSettings

_order = attrgetter("ts", "event_id")
_SIGNAL_WORDS = {
    "network": "a new network",
    "hours": "other hours",
    "script": "another script",
    "targets": "other accounts acted on",
    "dormant": "after a dormant spell",
    "promotion": "a burst of promotion",
}


class AccountHandoverSettings(DetectorSettings):
    """`detectors.account_handover` in config/lockstep.yaml, which explains each field."""

    trading_article: str
    event_types: list[str]
    window_ms: PositiveInt
    half_life_ms: PositiveInt
    known_weight: PositiveShare
    min_history: PositiveInt
    episode_ms: PositiveInt
    dormant_ms: PositiveInt
    hours_history_ms: PositiveInt
    rare_hour_share: PositiveShare
    min_texts: PositiveInt
    rare_script_share: PositiveShare
    min_targeted: PositiveInt
    changed_share: PositiveShare
    min_promotions: PositiveInt
    beneficiary_share: PositiveShare
    min_signals: PositiveInt
    min_changes: NonNegativeInt
    renotify_ms: NonNegativeInt
    idle_ttl_ms: PositiveInt

    def check(self) -> None:
        where = "detectors.account_handover"
        unknown = set(self.event_types) - set(EVENT_TYPES)
        if not self.event_types or unknown:
            raise ConfigError(f"{where}: event_types must name event types, not {sorted(unknown)}")
        if self.episode_ms < self.window_ms or self.idle_ttl_ms < self.episode_ms:
            raise ConfigError(f"{where}: need window_ms <= episode_ms <= idle_ttl_ms")
        if self.min_changes > self.min_signals or self.min_signals > len(_SIGNAL_WORDS):
            raise ConfigError(f"{where}: need min_changes <= min_signals <= 6")

    def rules(self) -> HandoverRules:
        """The model's rules: the settings of the same names."""
        return HandoverRules(**{f.name: getattr(self, f.name) for f in fields(HandoverRules)})


def _seen(e: Any) -> Seen:
    """What the model reads of an event (a login has no target; a follow no text)."""
    return Seen(
        ts=e.ts,
        kind=e.type,
        device=e.device_id or "",
        network=network_of(e.ip),
        target=getattr(e, "target", None) or "",
        script=script_of(getattr(e, "text", None)),
    )


class AccountHandoverStage(WholeWindowStage):
    """Per window, each account's events in order, against its profile. A whole-window
    stage: most events are of accounts with an event or two in a window, for which a
    pane and a window of their own cost more than their judgement."""

    detector = "account_handover"
    key_field = "actor"
    event_types = frozenset()  # set from the config

    def __init__(self, cfg: AccountHandoverSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec.tumbling(cfg.window_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self.rules = cfg.rules()
        self.event_types = frozenset(cfg.event_types)  # type: ignore[misc]

    def new_model(self) -> AccountProfile:
        return AccountProfile()

    def judge(self, events: list[Any], models: Models, start: int, end: int) -> list[Finding]:
        """Each account's events of the window, in order, judged against its profile."""
        by_actor: dict[str, list[Any]] = {}
        for e in events:
            mine = by_actor.get(e.actor)
            if mine is None:
                by_actor[e.actor] = [e]
            else:
                mine.append(e)
        findings = []
        for actor in sorted(by_actor):
            model: AccountProfile | None = models.get(actor, create=True)
            if model is None:
                continue
            finding = self._account(actor, model, by_actor[actor], start, end)
            if finding is not None:
                findings.append(finding)
        return findings

    def _account(
        self, key: str, model: AccountProfile, events: list[Any], start: int, end: int
    ) -> Finding | None:
        """Close an episode that has run its course, see the window's events in order,
        judge the open episode: flagged, and flagged again as it shows more signals (a
        promotion that follows the takeover)."""
        rules = self.rules
        model.close_episode(start, rules)
        if len(events) > 1:
            events = sorted(events, key=_order)
        for e in events:
            model.see(_seen(e), rules)
        episode = model.episode
        if episode is None:
            return None
        last = model.flagged_at
        if last is not None and episode.start - last < self.cfg.renotify_ms:
            return None
        verdict = model.judge(rules)
        if verdict is None or not verdict.flagged or len(verdict.signals) <= episode.reported:
            return None  # flagged already: reported again only with more signals
        severity = severity_of(verdict.score, self.severity)
        if severity is None:
            return None
        if episode.flagged_at is None:
            episode.flagged_at = end
        episode.reported = len(verdict.signals)
        return self._finding(key, model, verdict, severity, end)

    def _finding(
        self,
        account: str,
        model: AccountProfile,
        verdict: Verdict,
        severity: str,
        end: int,
    ) -> Finding:
        cfg = self.cfg
        ep = model.episode
        assert ep is not None
        before = _usual(model)  # an episode's events are not learned as the usual
        words = [_SIGNAL_WORDS[s] for s in verdict.signals]
        promoted = verdict.beneficiary
        trading = f"; used at once to promote {promoted} (traded: {cfg.trading_article})"
        gap_h = ep.gap_ms / 3_600_000
        evidence: dict[str, Any] = {
            "signals": list(verdict.signals),
            "changes": verdict.changes,
            "unusual_shares": {k: round(v, 3) for k, v in sorted(verdict.shares.items())},
            "usual_devices": before["devices"],
            "usual_networks": before["networks"],
            "usual_hours_utc": before["hours"],
            "usual_scripts": before["scripts"],
            "usual_targets": before["targets"],
            "history_since": model.first_ts,
            "new_devices": sorted(ep.devices)[:10],
            "new_networks": sorted(ep.networks)[:10],
            "episode_start": ep.start,
            "episode_events": ep.events,
            "episode_hours_utc": [h for h in range(24) if ep.hours[h]],
            "episode_scripts": dict(sorted(ep.scripts.items())),
            "episode_targets": sorted(ep.targets, key=lambda t: (-ep.targets[t], t))[:5],
            "dormant_s": ep.gap_ms // 1000,
            "promotions": ep.promotions,
            "beneficiary": promoted or None,
            "beneficiary_actions": ep.targets.get(promoted, 0) if promoted else 0,
            "explanation": (
                f"since {_when(ep.start)} this account acts from "
                f"{len(ep.devices)} device{'s' if len(ep.devices) != 1 else ''} it had never "
                f"used, with {', '.join(words)} ({len(verdict.signals)} signals, "
                f"{cfg.min_signals} flag), {gap_h:.1f} h after its previous activity: "
                f"another person uses it (Article {cfg.article})"
                f"{trading if promoted else ''}"
            ),
        }
        if promoted:
            evidence["trading_article"] = cfg.trading_article
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="account",
            subject_id=account,
            window_start=min(ep.start - ep.start % cfg.window_ms, end - cfg.window_ms),
            window_end=end,
            score=verdict.score,
            severity=severity,
            members=[account],
            evidence=evidence,
        )


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _usual(model: AccountProfile) -> dict[str, Any]:
    """The profile's heaviest devices, networks, hours, scripts and targets."""
    return {
        "devices": model.usual(model.devices),
        "networks": model.usual(model.networks),
        "hours": model.usual_hours(),
        "scripts": model.usual(model.scripts, 3),
        "targets": model.usual(model.targets),
    }


DETECTOR = Detector(
    name="account_handover",
    settings=AccountHandoverSettings,
    stages=lambda cfg, build: [AccountHandoverStage(cfg, build.severity)],
)
