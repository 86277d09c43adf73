"""`duplicate_content` (Article 18(4)): one message, lightly edited, posted by many
accounts in a short time.

A window's comment and repost texts are normalised (`models.near_duplicate`: width,
case, digits, punctuation, spaces and emoji folded away), signed with MinHash over
character 3-shingles and bucketed by LSH bands; texts linked through shared buckets form
candidate components, and a cluster is the texts close to a component's most common text
(its centre), so a chain of loosely similar texts does not grow into one. No text is
compared with every other. A cluster is a finding when
- its centre says enough (`min_information`): "+1", "哈哈哈" or "congrats!" typed by
  hundreds of people is a crowd, not a campaign;
- many distinct accounts posted it (`min_accounts`);
- it is far more common than it has recently been on the platform: `min_ratio` times the
  accounts its wordings together usually get, from the remembered share of the
  platform's texts of their buckets (`Commonness.family_share`). A template everybody
  types all day ("my mom would love this", in whatever wording) is a habit and ordinary;
  a new message is not.
Members are ranked by how bot-like each poster behaves (`models.bot_score`: Half-Space
Trees learning every window's posters online, an Isolation Forest refit on a reservoir
sample), their scores in the evidence: supporting evidence, never a reason to flag.
A flagged cluster teaches the memory nothing, so a campaign that goes on is found in every
window it runs (each finding names that window's accounts). The first `warmup_ms` learn
what is common, and judge a burst by who posted it alone (fresh accounts, or a few
networks or devices: a campaign under way when the stream began is not a habit).

A message posted a few at a time (clusters of `slow_min_accounts` up to `min_accounts`,
window after window) is added up in slow families (`models.slow_families`): a family is a
finding when its posters reach `min_accounts` within `slow_horizon_ms`, `min_ratio` times
what its first sighting expected over its windows, and are mostly fresh or crowded onto
a few networks or devices (ordinary phrases also come back a few at a time). Families add
up from the first window: one whose first sightings fell in the warm-up is judged as it
goes, before the memory could take its message for the platform's normal.

Keyed by one constant key: near-copies of a message must meet in one place to be counted,
and no one field of a text (not even one of its LSH bands) is shared by all its copies.
Texts are a small share of events (comments, some reposts) and only a window of them is
held; the memory is capped (`max_buckets`), findings list at most `max_members`. Nothing
in `judge` depends on the order of a window's events (a cluster's own events are put in
time and id order for its evidence), so the embedded runtime and the distributed one (a
pane for the one key), in any arrival order, find the same.

Cost: the window's texts are folded in a few calls over all of them joined, short texts
are dropped before the costlier steps, and MinHash runs in numpy; Python work per text is
a few list steps, per cluster a little more, and only for clusters of `min_accounts`.

Evidence: a message has no windows of its own to chart. Its cluster is worked out anew
each window (its centre, and so its id, may change), the memory is per LSH bucket, not per
message, and the one key's state is sized to one changelog record, with no room for a
record per message. So `evidence.series` charts what the key does judge each window: the
largest cluster weighed against its commonness (`min_accounts` and informative), its
accounts against the accounts expected of it, per window that had one (at most
`series_points`, `models.recent_windows`); the finding's own cluster is the last point.
"""

from __future__ import annotations

import math
from collections import Counter
from operator import attrgetter
from typing import Annotated, Any, NamedTuple

import msgspec
import numpy as np

from models.bot_score import BotScorer
from models.follower_composition import FollowerComposition
from models.near_duplicate import (
    SHINGLE,
    Commonness,
    MinHasher,
    components,
    information,
    normalise,
    normalise_long,
)
from models.recent_windows import remember
from models.scales import saturating
from models.slow_families import Family, Poster, SlowFamilies
from pipeline.contract.findings import Finding, make_finding, severity_of, stable_id
from pipeline.core.event_columns import group_hashes, sorted_unique
from pipeline.core.numbers import (
    AtLeastOne,
    NonNegative,
    NonNegativeInt,
    PositiveInt,
    PositiveShare,
    Share,
)
from pipeline.core.settings import SKETCH_MAX_BYTES, ConfigError, SeveritySettings
from pipeline.core.stage import WindowSpec
from pipeline.core.window_runner import Models, WholeWindowStage
from pipeline.detectors.bot_evidence import bot_evidence, learn_window, member_bots, rank_members
from pipeline.detectors.case_evidence import (
    MAX_PICTURED_ITEMS,
    MAX_PICTURED_MEMBERS,
    member_facts,
    member_items,
    series,
)
from pipeline.detectors.follower_evidence import follower_of
from pipeline.detectors.registry import Detector, DetectorSettings, check_hops

KEY = "texts"  # the stage's one key
_order = attrgetter("ts", "event_id")
BUCKET_BYTES = 48  # a remembered bucket, pickled (about 41 measured)
FAMILY_BYTES = 480  # a slow family's centre and fields, pickled, besides its posters
POSTER_BYTES = 96  # one poster a slow family keeps (account, freshness, network, device)
SLOW_MAX_BYTES = 128 * 1024  # the slow families' share of the one key's record: with the
# common buckets (<= SKETCH_MAX_BYTES) and the posters' scorer it stays under Kafka's 1 MiB


class DuplicateContentSettings(DetectorSettings):
    """`detectors.duplicate_content` in config/lockstep.yaml, which explains each field."""

    window_ms: PositiveInt
    hop_ms: PositiveInt
    permutations: PositiveInt
    bands: PositiveInt
    seed: NonNegativeInt
    wide_weight: AtLeastOne
    min_information: NonNegative
    min_similarity: PositiveShare
    min_accounts: PositiveInt
    min_ratio: AtLeastOne
    half_life_ms: PositiveInt
    habit_ms: PositiveInt
    warmup_ms: NonNegativeInt
    young_account_ms: PositiveInt
    young_share: Share
    shared_min: PositiveInt
    crowding_share: Share
    max_buckets: PositiveInt
    max_members: PositiveInt
    sample_texts: NonNegativeInt
    # rows kept twice in the one key's state: no more than 2000
    bot_reservoir: Annotated[int, msgspec.Meta(ge=256, le=2000)]
    bot_learn_actors: PositiveInt
    idle_ttl_ms: PositiveInt
    series_points: NonNegativeInt
    slow_min_accounts: Annotated[int, msgspec.Meta(ge=2)]
    slow_horizon_ms: PositiveInt
    slow_similarity: PositiveShare
    slow_families: NonNegativeInt
    slow_accounts: PositiveInt

    def slow_bytes(self) -> int:
        """The slow families' memory at its largest."""
        return self.slow_families * (FAMILY_BYTES + POSTER_BYTES * self.slow_accounts)

    def check(self) -> None:
        where = "detectors.duplicate_content"
        check_hops(where, self.window_ms, self.hop_ms)
        if self.permutations % self.bands:
            raise ConfigError(f"{where}: permutations must be a positive multiple of bands")
        if self.max_buckets * BUCKET_BYTES > SKETCH_MAX_BYTES:
            raise ConfigError(
                f"{where}: max_buckets must be <= {SKETCH_MAX_BYTES // BUCKET_BYTES} (the memory "
                "of common texts is one table changelog record; Kafka's default limit is 1 MiB)"
            )
        if self.slow_bytes() > SLOW_MAX_BYTES:
            raise ConfigError(
                f"{where}: slow_families * ({FAMILY_BYTES} + {POSTER_BYTES} * slow_accounts) "
                f"must be <= {SLOW_MAX_BYTES} bytes (the slow families share the memory's "
                "one changelog record)"
            )
        if self.slow_min_accounts > self.min_accounts:
            raise ConfigError(f"{where}: slow_min_accounts must be <= min_accounts")
        if self.slow_accounts < self.min_accounts:
            raise ConfigError(f"{where}: slow_accounts must be >= min_accounts")
        if self.habit_ms < self.hop_ms:
            raise ConfigError(f"{where}: habit_ms must be >= hop_ms")


class TextsModel(msgspec.Struct, gc=False):
    """The platform's memory of common texts, when the stage first judged a window, and
    how accounts that post texts usually behave (`BotScorer`: ranks a finding's members,
    never makes one)."""

    commonness: Commonness | None = None
    first_start: int | None = None
    bots: BotScorer | None = None
    # its latest windows as judged (end, largest weighed cluster's accounts, expected)
    recent: bytes | None = None
    # small clusters of near-copies, accumulated across windows; last, so a state
    # pickled before it existed still loads
    slow: SlowFamilies | None = None


class Weighed(NamedTuple):
    """A cluster weighed against how common texts like it are."""

    chosen: np.ndarray  # its texts (indices into the window's kept texts)
    centre: int  # its most common text's earliest one
    expected: float  # accounts a text like it usually gets
    accounts: int  # distinct accounts that posted it
    burst: bool  # far above that: flagged


class DuplicateContentStage(WholeWindowStage):
    detector = "duplicate_content"
    key_field = "actor"  # not used: `key_of` puts every text under KEY
    event_types = frozenset({"comment", "repost"})

    def __init__(self, cfg: DuplicateContentSettings, severity: SeveritySettings) -> None:
        super().__init__(WindowSpec(cfg.window_ms, cfg.hop_ms), cfg.idle_ttl_ms)
        self.cfg = cfg
        self.severity = severity
        self.hasher = MinHasher(cfg.permutations, cfg.bands, cfg.seed)
        self._half_life = cfg.half_life_ms / cfg.hop_ms  # in windows

    def key_of(self, event: Any) -> str:
        return KEY

    def new_model(self) -> TextsModel:
        return TextsModel()

    def judge(self, events: list[Any], models: Models, start: int, end: int) -> list[Finding]:
        """Cluster the window's informative texts, judge the big clusters, learn the rest."""
        cfg = self.cfg
        if not events:
            return []
        model: TextsModel = models.get(KEY, create=True)
        if model.commonness is None:
            model.commonness = Commonness(
                self._half_life, max(cfg.habit_ms // cfg.hop_ms, 1), cfg.max_buckets
            )
        if model.first_start is None:
            model.first_start = start
        if model.bots is None:
            model.bots = BotScorer(
                reservoir_size=cfg.bot_reservoir, n_trees=5, height=6, seed=cfg.seed
            )
        # Texts too short to say enough whatever they say are left out (`information` of
        # a cluster's centre decides the rest). Nothing below depends on the order of the
        # events (a cluster's own events are put in time order), so arrival order is no
        # matter.
        shortest = math.ceil(cfg.min_information / cfg.wide_weight) + SHINGLE - 1
        kept, normalised = normalise_long([e.text or "" for e in events], shortest)
        if not kept:
            return []
        texts = [events[i] for i in kept]
        signatures = self.hasher.signatures(normalised)
        keys = self.hasher.band_keys(signatures)
        actor_hashes = np.fromiter((hash(e.actor) for e in texts), np.int64, len(texts))
        actors = group_hashes(actor_hashes)[2]
        learn_window(model.bots, texts, end - start, cfg.bot_learn_actors, actor_hashes)
        t = end // cfg.hop_ms
        judging = start >= model.first_start + cfg.warmup_ms
        labels = components(keys)
        n_actors = int(actors.max()) + 1
        accounts = np.bincount(  # distinct accounts per component (by its lowest index)
            sorted_unique(labels * n_actors + actors) // n_actors, minlength=len(labels)
        )
        findings: list[Finding] = []
        flagged = np.zeros(len(texts), bool)
        before = model.recent  # the chart up to the last window
        largest: tuple[int, float] | None = None  # this one's point: (accounts, expected)
        slow = cfg.slow_families > 0  # small clusters add up across windows (from the start:
        # a campaign under way when the stream began is not a habit; warming up, its
        # family is judged by who posted it, as a burst is)
        least = cfg.slow_min_accounts if slow else cfg.min_accounts
        small: list[Weighed] = []
        for members in self._candidates(labels, accounts, least):
            weighed = self._judge_cluster(
                members, texts, normalised, signatures, keys, actors, model.commonness, t, least
            )
            if weighed is None:
                continue
            if weighed.accounts < cfg.min_accounts:
                small.append(weighed)
                continue
            if largest is None or (weighed.accounts, weighed.expected) > largest:
                largest = (weighed.accounts, weighed.expected)
            if not weighed.burst:
                continue
            # warming up, the memory has no say yet: a burst is judged by who posted it
            # (a crowd of fresh accounts, or of a few networks or devices, is not a habit)
            if not judging and not self._crowded(weighed, texts):
                continue
            flagged[weighed.chosen] = True
            chart = remember(before, end, weighed.accounts, weighed.expected, cfg.series_points)
            finding = self._finding(weighed, texts, len(texts), model.bots, chart, start, end)
            if finding is not None:
                findings.append(finding)
        if slow:
            findings += self._slow(
                small, texts, signatures, keys, model, t, flagged, before, start, end
            )
        if largest is not None:
            model.recent = remember(before, end, *largest, cfg.series_points)
        if flagged.any():  # a campaign's buckets must not become "common"
            ordinary = ~flagged
            keys, labels, actors = keys[ordinary], labels[ordinary], actors[ordinary]
            accounts = np.bincount(
                sorted_unique(labels * n_actors + actors) // n_actors, minlength=len(flagged)
            )
        # (warming up, everything else seen is the platform's normal)
        model.commonness.learn(_bucket_shares(keys, labels, accounts, len(texts)), t)
        return sorted(findings, key=lambda f: f.subject_id)

    def _slow(
        self,
        small: list[Weighed],
        texts: list[Any],
        signatures: np.ndarray,
        keys: np.ndarray,
        model: TextsModel,
        t: int,
        flagged: np.ndarray,
        before: bytes | None,
        start: int,
        end: int,
    ) -> list[Finding]:
        """Add the window's small clusters to the slow families they belong to. A family
        is a finding when its posters together are `min_accounts`, `min_ratio` times what
        its first sighting expected per window over the windows it was seen in, and
        mostly fresh or crowded onto a few networks or devices (ordinary phrases come back
        a few at a time all day, from ordinary people); its window's texts then teach
        the memory nothing."""
        cfg = self.cfg
        if model.slow is None:
            horizon = max(cfg.slow_horizon_ms // cfg.hop_ms, 1)
            model.slow = SlowFamilies(
                horizon, cfg.slow_families, cfg.slow_accounts, cfg.slow_similarity
            )
        families = model.slow
        families.forget_before(t)
        findings: list[Finding] = []
        for w in sorted(small, key=lambda w: _order(texts[w.centre])):  # not arrival order
            family = families.add(
                signatures[w.centre], keys[w.centre].tolist(), self._posters(w, texts),
                w.expected, t,
            )  # fmt: skip
            accounts = len(family.posters)
            expected = family.expected * family.windows
            if accounts < cfg.min_accounts or accounts < cfg.min_ratio * max(expected, 1.0):
                continue
            composition = FollowerComposition(family.posters, cfg.shared_min)
            if not composition.suspicious(cfg.young_share, cfg.crowding_share):
                continue
            family.flagged = True
            flagged[w.chosen] = True
            weighed = Weighed(w.chosen, w.centre, expected, accounts, True)
            chart = remember(before, end, accounts, expected, cfg.series_points)
            finding = self._finding(
                weighed, texts, len(texts), model.bots, chart, start, end, family
            )
            if finding is not None:
                findings.append(finding)
        return findings

    def _crowded(self, weighed: Weighed, texts: list[Any]) -> bool:
        """Whether a cluster's posters are mostly fresh accounts, or mostly crowded onto
        a few networks or devices (each poster once, by its earliest text)."""
        cfg = self.cfg
        composition = FollowerComposition(self._posters(weighed, texts), cfg.shared_min)
        return composition.suspicious(cfg.young_share, cfg.crowding_share)

    def _posters(self, weighed: Weighed, texts: list[Any]) -> list[Poster]:
        """A cluster's posters, each once by its earliest text: freshness, network,
        device (`follower_evidence.follower_of`)."""
        earliest: dict[str, Any] = {}
        for e in sorted((texts[i] for i in weighed.chosen.tolist()), key=_order):
            earliest.setdefault(e.actor, e)
        return [follower_of(e, self.cfg.young_account_ms) for e in earliest.values()]

    def _candidates(self, labels: np.ndarray, accounts: np.ndarray, least: int) -> list[np.ndarray]:
        """The texts of each linked component with at least `least` accounts."""
        big = np.flatnonzero(accounts >= least)
        if not len(big):
            return []
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], big)
        ends = np.searchsorted(labels[order], big, side="right")
        return [order[lo:hi] for lo, hi in zip(bounds.tolist(), ends.tolist(), strict=True)]

    def _judge_cluster(
        self,
        members: np.ndarray,
        texts: list[Any],
        normalised: list[str],
        signatures: np.ndarray,
        keys: np.ndarray,
        actors: np.ndarray,
        commonness: Commonness,
        t: int,
        least: int,
    ) -> Weighed | None:
        """The texts near the component's centre, weighed against their commonness when
        they are informative and posted by `least` accounts (else None)."""
        cfg = self.cfg
        counts = Counter(normalised[i] for i in members.tolist())
        top = max(counts.values())
        centre_text = min(text for text, n in counts.items() if n == top)
        if information(centre_text, cfg.wide_weight) < cfg.min_information:
            return None  # "哈哈哈哈哈哈哈哈哈哈" by a crowd: long, but it says nothing
        centre = min(
            (i for i in members.tolist() if normalised[i] == centre_text),
            key=lambda i: _order(texts[i]),
        )
        agree = (signatures[members] == signatures[centre]).mean(axis=1)
        chosen = members[agree >= cfg.min_similarity]
        accounts = len(sorted_unique(actors[chosen]))
        if accounts < least:
            return None
        variants = {normalised[i]: i for i in chosen.tolist()}  # one text per variant
        # a family is as common as its wordings together (each bucket counted once)
        share = commonness.family_share([keys[i].tolist() for i in variants.values()], t)
        expected = share * len(texts)
        burst = accounts >= cfg.min_ratio * max(expected, 1.0)
        return Weighed(chosen, centre, expected, accounts, burst)

    def _finding(
        self,
        weighed: Weighed,
        texts: list[Any],
        window_texts: int,
        bots: BotScorer,
        chart: bytes | None,
        start: int,
        end: int,
        family: Family | None = None,
    ) -> Finding | None:
        """The flagged cluster's finding; `chart`: its evidence.series record. A slow
        `family`'s finding also names the accounts of its earlier windows (after this
        window's)."""
        cfg = self.cfg
        chosen, centre, expected, accounts, _ = weighed
        events = sorted((texts[i] for i in chosen.tolist()), key=_order)
        posts = Counter(e.actor for e in events)
        ratio = accounts / max(expected, 1.0)
        score = min(saturating(accounts, cfg.min_accounts), saturating(ratio, cfg.min_ratio))
        severity = severity_of(score, self.severity)
        if severity is None:
            return None
        members = sorted(posts, key=lambda a: (-posts[a], a))  # most posts first, and
        scored = member_bots(members, events, bots, end - start)  # the most bot-like first
        members = rank_members(members, scored)
        if family is not None:
            members += [a for a in family.accounts() if a not in posts]
        members = members[: cfg.max_members]
        items = {e.content_id for e in events}
        owners = {e.target for e in events}
        samples = list(dict.fromkeys(e.text for e in events))[: cfg.sample_texts]
        first, last = events[0].ts, events[-1].ts
        minutes = (last - first) / 60_000
        centre_text = texts[centre].text
        variants = len({e.text for e in events})
        said = (
            f"{accounts} accounts posted {len(events)} near-copies of one message "
            f"({variants} variants) under {len(items)} items of {len(owners)} accounts "
            f"within {minutes:.0f} min"
        )
        slow: dict[str, Any] = {}
        if family is not None:  # windows end at multiples of hop_ms
            since = family.first * cfg.hop_ms - cfg.window_ms
            slow = {"slow_windows": family.windows, "slow_since": since}
            said = (
                f"{accounts} accounts posted near-copies of one message a few at a time in "
                f"{family.windows} windows since {since} ({len(events)} posts by "
                f"{len(posts)} of them under {len(items)} items in this one)"
            )
        group = "dup:" + stable_id(self.detector, normalise(centre_text))
        return make_finding(
            detector=self.detector,
            article=cfg.article,
            subject_type="group",
            subject_id=group,
            window_start=start,
            window_end=end,
            score=score,
            severity=severity,
            members=members,
            evidence={
                "accounts": accounts,
                "posts": len(events),
                "distinct_texts": variants,
                "items": len(items),
                "owners": len(owners),
                "centre_text": centre_text,
                "sample_texts": samples,
                "sample_items": sorted(items)[: cfg.sample_texts],
                "first_ts": first,
                "last_ts": last,
                "expected_accounts": round(expected, 2),
                "window_texts": window_texts,
                "max_posts_per_account": max(posts.values()),
                **slow,
                **bot_evidence(scored),
                **series(chart),
                "member_facts": member_facts(events, members),
                **_member_items(events, members, accounts, len(items)),
                "explanation": (
                    f"{said}, where about {expected:.1f} accounts usually post a text like "
                    f'it: "{centre_text[:80]}"'
                ),
            },
        )


def _member_items(
    events: list[Any], members: list[str], accounts: int, items: int
) -> dict[str, Any]:
    """The cluster's members by item (`case_evidence.member_items`): which of its first
    members posted a near-copy under which item, and when (its first there). The items
    drawn are the `MAX_PICTURED_ITEMS` most of those members posted under (then the
    earliest), in the order of their first such post. From the cluster's own events."""
    pictured = set(members[:MAX_PICTURED_MEMBERS])
    mine = [e for e in events if e.actor in pictured]  # in time and id order
    posters: dict[str, set[str]] = {}
    first: dict[str, Any] = {}
    for e in mine:
        posters.setdefault(e.content_id, set()).add(e.actor)
        first.setdefault(e.content_id, e)
    chosen = sorted(posters, key=lambda c: (-len(posters[c]), _order(first[c]), c))
    shown = sorted(chosen[:MAX_PICTURED_ITEMS], key=lambda c: (_order(first[c]), c))
    column = {c: j for j, c in enumerate(shown)}
    columns = [{"content_id": c, "owner": first[c].target, "start": first[c].ts} for c in shown]
    acts = [(e.actor, column[e.content_id], e.ts) for e in mine if e.content_id in column]
    return member_items(members, columns, acts, accounts, items)


def _bucket_shares(
    keys: np.ndarray, labels: np.ndarray, accounts: np.ndarray, total: int
) -> dict[int, float]:
    """What each bucket says about how common its texts are: the largest share of the
    window's `total` texts that a component (`labels`, its `accounts`) holding one of the
    bucket's texts reached, for components of at least two accounts. A template's
    variants link into one component, so the memory holds the whole template's crowd, as
    `_judge_cluster` counts it."""
    shared = accounts[labels] >= 2
    if not shared.any():
        return {}
    bands = keys.shape[1]
    flat = keys[shared].ravel()
    share = np.repeat(accounts[labels[shared]] / total, bands)
    order = np.lexsort((share, flat))  # by key, then share: the last of a key is its max
    flat, share = flat[order], share[order]
    last = np.append(np.flatnonzero(flat[1:] != flat[:-1]), len(flat) - 1)
    return dict(zip(flat[last].tolist(), share[last].tolist(), strict=True))


DETECTOR = Detector(
    name="duplicate_content",
    settings=DuplicateContentSettings,
    stages=lambda cfg, build: [DuplicateContentStage(cfg, build.severity)],
)
