"""Bot-likeness of a finding's members, as supporting evidence for group detectors.

A group detector (lockstep, duplicate content, churn) implicates accounts for what they
did together. How each of them behaves on its own (`models.actor_features`: pace,
regularity, breadth, time of day, one kind of action) says which members look most like
scripts: it orders the members and goes into the finding's evidence as `bot_scores`. It
never makes a finding, nor implicates an account, on its own: an account is unusual for
many innocent reasons (`models.bot_score`).

Use, per key and window, inside a detector's `judge` / `evaluate` (the scorer lives in
the key's model, so both runtimes keep it in the key's state):

    learn_window(model.bot_scorer, events, end - start)         # every window
    bots = member_bots(members, events, model.bot_scorer, end - start)
    members = rank_members(members, bots)                        # most bot-like first
    evidence.update(bot_evidence(bots))                          # {"bot_scores": ...}

`learn_window` caps its work (a uniform sample of `max_actors` accounts), and scoring
touches only the members' events, so both stay cheap on a window of 100k accounts.

    >>> from pipeline.contract.events import Follow
    >>> from models.bot_score import BotScorer
    >>> def follow(n, actor, ts, target):
    ...     return Follow(event_id=str(n), ts=ts, actor=actor, target=target)
    >>> events = [follow(i, "bot", 60_000 * i, f"t{i}") for i in range(10)]
    >>> events += [follow(100 + i, "ann", 37_000 * i * i, "t1") for i in range(5)]
    >>> names, rows = window_features(events, window_ms=600_000)
    >>> names, rows[:, 1].round(2).tolist()  # gap CV: the bot's metronome against ann's
    (['bot', 'ann'], [0.0, 0.56])
    >>> member_bots(["bot", "ann"], events, BotScorer(), 600_000)  # nothing learned yet
    {}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import compress
from operator import attrgetter
from typing import Any, NamedTuple

import numpy as np

from models.actor_features import FEATURES, actor_features, to_unit
from models.bot_score import BotScorer
from pipeline.contract.events import EVENT_TYPES, to_epoch_ms
from pipeline.core.event_columns import group_hashes

KIND_OF: dict[str, int] = {kind: code for code, kind in enumerate(EVENT_TYPES)}
MIN_RARITY = 0.8  # a feature is named as a reason when it is further out than 80% of rows

_actor_of = attrgetter("actor")
_ts_of = attrgetter("ts")
_type_of = attrgetter("type")
_canonical = attrgetter("ts", "event_id")


class MemberBot(NamedTuple):
    """One member's bot-likeness in a window."""

    score: float  # `BotScorer.score_many`: in [0, 1], the rank of its unusualness
    features: dict[str, float]  # its raw window features (`models.actor_features`)
    top: tuple[str, ...]  # the features that make it unusual, most unusual first


def window_features(events: Sequence[Any], window_ms: int) -> tuple[list[str], np.ndarray]:
    """The accounts acting in `events`, in the order they first act, and their raw
    feature rows (one Python step per event and field: pass members' events, or a
    sample, rather than a whole busy window)."""
    if not events:
        return [], np.zeros((0, len(FEATURES)))
    keys, first, codes, _ = group_hashes(
        np.fromiter(map(hash, map(_actor_of, events)), np.int64, len(events))
    )
    order = np.argsort(first)  # first-seen order: independent of the (salted) hashes
    rank = np.empty(len(keys), np.int64)
    rank[order] = np.arange(len(keys))
    names = [events[i].actor for i in first[order].tolist()]
    ts = np.fromiter(map(to_epoch_ms, map(_ts_of, events)), np.int64, len(events))
    targets = np.fromiter(map(hash, map(_object_of, events)), np.int64, len(events))
    kinds = np.fromiter(map(KIND_OF.__getitem__, map(_type_of, events)), np.int64, len(events))
    return names, actor_features(rank[codes], ts, targets, kinds, len(keys), window_ms)


def learn_window(
    scorer: BotScorer,
    events: Sequence[Any],
    window_ms: int,
    max_actors: int = 2000,
    actor_hashes: np.ndarray | None = None,
) -> int:
    """Teach `scorer` a window's accounts: all of them, or a uniform sample of
    `max_actors` (drawn from the scorer's seeded generator over the accounts in name
    order), fed in event time and id order: the same events in any arrival order, in any
    process, teach the same. Returns how many were learned. Cost: a hash per event (none
    when the caller has the column: `EventColumns.hashes("actor")` as `actor_hashes`), a
    sort of the accounts' names, then feature work on the sampled accounts' events."""
    if not events:
        return 0
    hashes = actor_hashes
    if hashes is None:
        hashes = np.fromiter(map(hash, map(_actor_of, events)), np.int64, len(events))
    _, first, codes, _ = group_hashes(hashes)
    if len(first) > max_actors:
        names = [events[i].actor for i in first.tolist()]
        by_name = np.array(sorted(range(len(names)), key=names.__getitem__), np.int64)
        chosen = np.zeros(len(first), bool)
        chosen[by_name[scorer.sample_indices(len(first), max_actors)]] = True
        events = list(compress(events, chosen[codes].tolist()))
    _, rows = window_features(sorted(events, key=_canonical), window_ms)
    scorer.learn_many(to_unit(rows))
    return len(rows)


def member_bots(
    members: Iterable[str],
    events: Sequence[Any],
    scorer: BotScorer,
    window_ms: int,
    top: int = 2,
) -> dict[str, MemberBot]:
    """Per member acting in `events` (the window's events; others' are ignored), its
    score, features and up to `top` reasons. Empty while the scorer has learned too
    little to compare with (`BotScorer.ready`); members without events are left out."""
    wanted = set(members)
    if not scorer.ready or not wanted:
        return {}
    mine = [event for event in events if event.actor in wanted]
    names, rows = window_features(mine, window_ms)
    if not names:
        return {}
    unit = to_unit(rows)
    scores = scorer.score_many(unit).tolist()
    rarity = scorer.rarity(unit)
    found = {}
    for i, name in enumerate(names):
        order = np.argsort(-rarity[i], kind="stable")[:top].tolist()
        reasons = tuple(FEATURES[f] for f in order if rarity[i, f] >= MIN_RARITY)
        features = {f: round(v, 4) for f, v in zip(FEATURES, rows[i].tolist(), strict=True)}
        found[name] = MemberBot(round(scores[i], 4), features, reasons)
    return found


def rank_members(members: Iterable[str], bots: dict[str, MemberBot]) -> list[str]:
    """`members`, most bot-like first; members without a score keep their order, last."""
    members = list(members)
    scored = sorted((m for m in members if m in bots), key=lambda m: (-bots[m].score, m))
    return scored + [m for m in members if m not in bots]


def bot_evidence(bots: dict[str, MemberBot], limit: int = 50) -> dict[str, Any]:
    """The evidence fields for a finding: the `limit` most bot-like members' scores and
    reasons (JSON-ready), and how many members were scored. Empty without scores."""
    if not bots:
        return {}
    ranked = rank_members(bots, bots)[:limit]
    return {
        "bot_scores": {m: bots[m].score for m in ranked},
        "bot_reasons": {m: list(bots[m].top) for m in ranked if bots[m].top},
        "bot_scored_members": len(bots),
    }


def _object_of(event: Any) -> str | None:
    """What an event acts on: its content item if it has one, else its target account."""
    return getattr(event, "content_id", None) or getattr(event, "target", None)
