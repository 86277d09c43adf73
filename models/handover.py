"""An account's usual ways, learned online, and whether a new episode breaks them all at
once, as when the account passes to another person (Article 11; sold: 18(8)).

A person's phone, networks (/24, /48), hours, languages and the accounts they act on
change one at a time: a new phone keeps the networks and the habits, a journey keeps the
phone, a carrier NAT puts thousands of people behind one address. So no one of these
decides, and a known network never vouches for an unknown device (an address many
accounts share is not anyone's identity): an episode opens on a device the account has
not used, and is judged by how much else is new at the same time: the network, the
hours, the script of its texts, the accounts it acts on, whether it follows a dormant
spell and whether it turns at once to promoting one beneficiary.

State per account is small and bounded: decayed weights of at most `MAX_SOURCES` devices
and networks and `MAX_TARGETS` targets, 24 hourly weights, a few scripts, and the open
episode's counts (as bounded). Pure Python: it is pickled into a table per key.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import NamedTuple

MAX_SOURCES = 8  # devices (and networks) remembered per account, the lightest go first
MAX_TARGETS = 32  # accounts acted on remembered per account (and per episode)
HOUR_MS = 3_600_000
PROMOTING = frozenset({"follow", "repost", "comment"})

# Unicode blocks of the scripts told apart (first code point, last, name); anything else
# with letters is "other". A text's script is the one most of its letters are in.
_SCRIPTS = (
    (0x0041, 0x024F, "latin"),
    (0x0370, 0x03FF, "greek"),
    (0x0400, 0x04FF, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"),
    (0x1E00, 0x1EFF, "latin"),
    (0x3040, 0x30FF, "kana"),
    (0x3400, 0x4DBF, "han"),
    (0x4E00, 0x9FFF, "han"),
    (0xAC00, 0xD7AF, "hangul"),
    (0xF900, 0xFAFF, "han"),
)


def script_of(text: str | None) -> str | None:
    """The script most letters of `text` are written in; None without letters."""
    if not text:
        return None
    if text.isascii():
        return "latin" if any(ch.isalpha() for ch in text) else None
    counts: dict[str, int] = {}
    for ch in text:
        name = _CHAR_SCRIPT.get(ch)
        if name is None:
            name = _CHAR_SCRIPT[ch] = _script_of_char(ch)
        if name:
            counts[name] = counts.get(name, 0) + 1
    if not counts:
        return None
    return max(sorted(counts), key=counts.__getitem__)


_CHAR_SCRIPT: dict[str, str] = {}  # characters met so far -> their script ('' for none)


def _script_of_char(ch: str) -> str:
    if not ch.isalpha():
        return ""
    code = ord(ch)
    for lo, hi, script in _SCRIPTS:
        if lo <= code <= hi:
            return script
    return "other"


class Seen(NamedTuple):
    """One event as the model sees it (its device and network may be unknown: '')."""

    ts: int
    kind: str
    device: str
    network: str
    target: str  # the account acted on ('' for a login)
    script: str | None  # of its text, if it has letters


@dataclass(frozen=True)
class HandoverRules:
    """What counts as new, and how much newness makes a handover (see config)."""

    half_life_ms: int  # how fast the usual profile forgets
    known_weight: float  # a device or network with this decayed weight is the account's
    min_history: int  # events a profile needs before an episode can open (decayed counts,
    # here and below, are rounded: an event of a week ago still counts as one)
    episode_ms: int  # an episode is judged for this long, then becomes the usual
    dormant_ms: int  # silence before an episode this long is a dormant spell
    hours_history_ms: int  # hours are judged only with this much history (days)
    rare_hour_share: float  # an hour holding less of the profile's events is unusual
    min_texts: int  # texts each side needs before scripts are compared
    rare_script_share: float  # a script under this share of the profile's texts is new
    min_targeted: int  # actions on accounts each side needs before targets are compared
    changed_share: float  # this share of the episode unusual (hours, scripts, targets)
    min_promotions: int  # follows, reposts, comments in the episode that make a promotion
    beneficiary_share: float  # ... with this share of them on one account
    min_signals: int  # signals (network, hours, script, targets, dormant, promotion) needed
    min_changes: int  # of which changes of habit (hours, script, targets) at least


@dataclass(frozen=True)
class Verdict:
    """What an episode breaks, and how surely it is another person."""

    signals: tuple[str, ...]  # in a fixed order: network, hours, script, targets, ...
    changes: int
    score: float
    flagged: bool
    beneficiary: str  # the account the promotion is for ('' without one)
    shares: dict[str, float]  # the unusual share of each habit judged


class _Slotted:
    """Pickled as its slots' values, in the order of its `__slots__` (a table per key)."""

    __slots__ = ()

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


class Episode(_Slotted):
    """Events from a device the account had not used, since the first of them."""

    __slots__ = (
        "devices",
        "events",
        "flagged_at",
        "gap_ms",
        "hours",
        "last_ts",
        "networks",
        "new_network",
        "promotions",
        "reported",
        "scripts",
        "start",
        "targets",
    )

    def __init__(self, ts: int, gap_ms: int) -> None:
        self.start = ts
        self.last_ts = ts
        self.gap_ms = gap_ms  # since the account's latest usual event
        self.events = 0
        self.devices: dict[str, int] = {}  # at most MAX_SOURCES (and networks), the
        self.networks: dict[str, int] = {}  # first ones: later ones are counted in `events`
        self.new_network = False  # some event of it came from a network new to the account
        self.hours = array("H", bytes(48))  # events per hour of day (UTC)
        self.scripts: dict[str, int] = {}
        self.targets: dict[str, int] = {}  # at most MAX_TARGETS, the first ones
        self.promotions = 0
        self.flagged_at: int | None = None  # when it was first flagged
        self.reported = 0  # the signals it was last flagged with (0: never)

    def add(self, e: Seen, network_new: bool) -> None:
        self.events += 1
        self.last_ts = max(self.last_ts, e.ts)
        if e.device:
            _count(self.devices, e.device, MAX_SOURCES)
        if e.network:
            _count(self.networks, e.network, MAX_SOURCES)
            self.new_network |= network_new
        hour = (e.ts // HOUR_MS) % 24
        self.hours[hour] = min(self.hours[hour] + 1, 65535)
        if e.script:
            self.scripts[e.script] = self.scripts.get(e.script, 0) + 1
        if e.target:
            _count(self.targets, e.target, MAX_TARGETS)
        if e.kind in PROMOTING:
            self.promotions += 1

    def owns(self, e: Seen) -> bool:
        """Whether an event comes from this episode's device or network."""
        return (e.device != "" and e.device in self.devices) or (
            e.network != "" and e.network in self.networks
        )


def _count(counts: dict[str, int], key: str, most: int) -> None:
    """Count a key, if it is one of the first `most` (an episode's counts stay bounded)."""
    n = counts.get(key)
    if n is not None:
        counts[key] = n + 1
    elif len(counts) < most:
        counts[key] = 1


def _decay(weights: dict[str, float], factor: float) -> None:
    for k in weights:
        weights[k] *= factor


def _bump(weights: dict[str, float], key: str, by: float, most: int) -> None:
    """Add to a decayed weight; past `most` keys, the lightest one goes."""
    weights[key] = weights.get(key, 0.0) + by
    if len(weights) > most:
        del weights[min(sorted(weights), key=weights.__getitem__)]


class AccountProfile(_Slotted):
    """An account's usual devices, networks, hours, scripts and targets (decayed), and the
    episode open on a new device, if any."""

    __slots__ = (
        "devices",
        "episode",
        "first_ts",
        "flagged_at",
        "hours",
        "last_ts",
        "networks",
        "scripts",
        "targets",
        "updated",
        "usual_ts",
        "weight",
    )

    def __init__(self) -> None:
        self.devices: dict[str, float] = {}
        self.networks: dict[str, float] = {}
        self.hours = array("f", bytes(96))  # decayed events per hour of day (UTC)
        self.scripts: dict[str, float] = {}
        self.targets: dict[str, float] = {}
        self.weight = 0.0  # decayed events learned
        self.first_ts: int | None = None
        self.last_ts: int | None = None  # the latest event seen
        self.usual_ts: int | None = None  # the latest event learned as the usual
        self.updated = 0  # the time the weights are decayed to
        self.episode: Episode | None = None
        self.flagged_at: int | None = None  # the latest flagged episode's start

    # ---- learning ------------------------------------------------------------------
    def _age_to(self, ts: int, half_life_ms: int) -> None:
        if ts <= self.updated:
            return
        factor = 0.5 ** ((ts - self.updated) / half_life_ms)
        if factor < 0.999:
            for weights in (self.devices, self.networks, self.scripts, self.targets):
                _decay(weights, factor)
            self.hours = array("f", [h * factor for h in self.hours])
            self.weight *= factor
        self.updated = ts

    def _learn(self, e: Seen, by: float = 1.0) -> None:
        if e.device:
            _bump(self.devices, e.device, by, MAX_SOURCES)
        if e.network:
            _bump(self.networks, e.network, by, MAX_SOURCES)
        self.hours[(e.ts // HOUR_MS) % 24] += by
        if e.script:
            _bump(self.scripts, e.script, by, MAX_SOURCES)
        if e.target:
            _bump(self.targets, e.target, by, MAX_TARGETS)
        self.weight += by
        self.usual_ts = e.ts if self.usual_ts is None else max(self.usual_ts, e.ts)

    def knows(self, weights: dict[str, float], key: str, rules: HandoverRules) -> bool:
        return weights.get(key, 0.0) >= rules.known_weight

    def see(self, e: Seen, rules: HandoverRules) -> None:
        """One event, in time order. From a device the account knows: learned as the
        usual. From an unknown device: to the open episode if it shares the episode's
        device or network; else it opens a new episode (once the profile is established),
        the open one, another device of the owner's, becoming the usual. Without a
        device: to the episode by its network, or learned from a network the account
        knows; else it is a sign of life and teaches nothing (it may be anyone's)."""
        self._age_to(e.ts, rules.half_life_ms)
        episode = self.episode
        network_known = e.network != "" and self.knows(self.networks, e.network, rules)
        network_new = e.network != "" and not network_known
        if e.device == "":
            if episode is not None and episode.owns(e):
                episode.add(e, network_new)
            elif network_known:
                self._learn(e)
        elif self.knows(self.devices, e.device, rules):
            self._learn(e)
        elif episode is not None and episode.owns(e):
            episode.add(e, network_new)
        else:
            if episode is not None:
                self._merge(episode)
            if round(self.weight) >= rules.min_history and self.usual_ts is not None:
                self.episode = Episode(e.ts, e.ts - self.usual_ts)
                self.episode.add(e, network_new)
            else:
                self._learn(e)
        if self.first_ts is None:
            self.first_ts = e.ts
        self.last_ts = e.ts if self.last_ts is None else max(self.last_ts, e.ts)

    def close_episode(self, now: int, rules: HandoverRules) -> bool:
        """An episode older than `episode_ms` becomes the usual (the new phone, or the
        new owner, is now the account's); whether one was closed."""
        episode = self.episode
        if episode is None or now - episode.start < rules.episode_ms:
            return False
        self._age_to(now, rules.half_life_ms)
        self._merge(episode)
        return True

    def _merge(self, episode: Episode) -> None:
        """An episode's devices, networks and habits, learned as the usual."""
        for weights, counts in (
            (self.devices, episode.devices),
            (self.networks, episode.networks),
            (self.scripts, episode.scripts),
        ):
            for key in sorted(counts):
                _bump(weights, key, float(counts[key]), MAX_SOURCES)
        for key in sorted(episode.targets):
            _bump(self.targets, key, float(episode.targets[key]), MAX_TARGETS)
        self.hours = array("f", [h + c for h, c in zip(self.hours, episode.hours, strict=True)])
        self.weight += episode.events
        if self.usual_ts is None or episode.last_ts > self.usual_ts:
            self.usual_ts = episode.last_ts
        if episode.flagged_at is not None:
            self.flagged_at = episode.start
        self.episode = None

    # ---- judging -------------------------------------------------------------------
    def judge(self, rules: HandoverRules) -> Verdict | None:
        """The open episode against the usual profile; None without an episode."""
        ep = self.episode
        if ep is None:
            return None
        signals: list[str] = []
        shares: dict[str, float] = {}
        if ep.new_network:
            signals.append("network")
        span = (self.last_ts or 0) - (self.first_ts or 0)
        hour_mass = sum(self.hours)
        if span >= rules.hours_history_ms and hour_mass > 0 and ep.events:
            bar = rules.rare_hour_share * hour_mass
            rare = sum(c for h, c in zip(self.hours, ep.hours, strict=True) if h < bar)
            shares["hours"] = rare / ep.events
        texts_before = sum(self.scripts.values())
        texts_now = sum(ep.scripts.values())
        if round(texts_before) >= rules.min_texts and texts_now >= rules.min_texts:
            rare = sum(
                n
                for s, n in ep.scripts.items()
                if self.scripts.get(s, 0.0) < rules.rare_script_share * texts_before
            )
            shares["script"] = rare / texts_now
        targeted_before = sum(self.targets.values())
        targeted_now = sum(ep.targets.values())
        if round(targeted_before) >= rules.min_targeted and targeted_now >= rules.min_targeted:
            fresh = sum(n for t, n in ep.targets.items() if t not in self.targets)
            shares["targets"] = fresh / targeted_now
        changes = 0
        for habit in ("hours", "script", "targets"):
            if shares.get(habit, 0.0) >= rules.changed_share:
                signals.append(habit)
                changes += 1
        if ep.gap_ms >= rules.dormant_ms:
            signals.append("dormant")
        beneficiary = ""
        if ep.promotions >= rules.min_promotions and ep.targets:
            top = max(sorted(ep.targets), key=ep.targets.__getitem__)
            if ep.targets[top] >= rules.beneficiary_share * ep.promotions:
                signals.append("promotion")
                beneficiary = top
        extra = len(signals) - rules.min_signals
        flagged = extra >= 0 and changes >= rules.min_changes
        score = 1.0 - 0.5 ** (extra + 1) if flagged else 0.0
        return Verdict(tuple(signals), changes, score, flagged, beneficiary, shares)

    def usual(self, weights: dict[str, float], most: int = 5) -> list[str]:
        """The heaviest keys of one of the profile's weights, heaviest first."""
        return sorted(weights, key=lambda k: (-weights[k], k))[:most]

    def usual_hours(self, most: int = 6) -> list[int]:
        busiest = sorted(range(24), key=lambda h: -self.hours[h])[:most]
        return sorted(h for h in busiest if self.hours[h] > 0)
