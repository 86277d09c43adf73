"""Synthetic event streams for benchmarks: realistic type mix, heavy-tailed targets.

Lines are formatted directly (no dict, no encoder) so generating ten million of them costs
little next to processing them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

# share of each event type; clicks dominate, as on every platform
MIX: tuple[tuple[str, float], ...] = (
    ("click", 0.70),
    ("comment", 0.10),
    ("follow", 0.09),
    ("repost", 0.06),
    ("unfollow", 0.02),
    ("register", 0.02),
    ("login", 0.01),
)
COMMENTS = ("哈哈哈", "congrats!", "+1", "太棒了，支持！", "where can I buy this?", "说得好 👍")


def _types(rng: random.Random, n: int) -> list[str]:
    names, weights = zip(*MIX, strict=True)
    return rng.choices(names, weights=weights, k=n)


def format_event(
    i: int, kind: str, ts: int, actor: str, target: str, content: str, rng: random.Random
) -> str:
    head = f'{{"event_id":"ev{i}","type":"{kind}","ts":{ts},"actor":"{actor}"'
    tail = f',"ip":"10.{i % 250}.{(i >> 8) % 250}.{i % 199}","device_id":"d{i % 90_001}"}}'
    if kind in ("follow", "unfollow"):
        return f'{head},"target":"{target}","origin":"user","consent":true{tail}'
    if kind == "click":
        return f'{head},"target":"{target}","content_id":"{content}"{tail}'
    if kind in ("comment", "repost"):
        text = COMMENTS[i % len(COMMENTS)]
        return f'{head},"target":"{target}","content_id":"{content}","text":"{text}"{tail}'
    return f'{head},"actor_created_at":{ts - rng.randrange(10**9)}{tail}'


def mixed_lines(
    n: int, seed: int = 1, users: int = 100_000, creators: int = 5_000, rate_per_s: int = 2_000
) -> Iterator[bytes]:
    """n events over n / rate_per_s seconds: users act on Zipf-popular creators' content."""
    rng = random.Random(seed)
    weights = [1.0 / (r + 1) for r in range(creators)]
    chunk = 10_000
    step = 1000 / rate_per_s
    for base in range(0, n, chunk):
        size = min(chunk, n - base)
        kinds = _types(rng, size)
        targets = rng.choices(range(creators), weights=weights, k=size)
        for j in range(size):
            i = base + j
            ts = T0 + int(i * step) + rng.randrange(-2_000, 2_000)
            c = targets[j]
            line = format_event(
                i,
                kinds[j],
                ts,
                f"u{rng.randrange(users)}",
                f"c{c}",
                f"c{c}/p{rng.randrange(50)}",
                rng,
            )
            yield line.encode() + b"\n"


CYCLE_KINDS = ("follow",) * 8 + ("unfollow", "click")
FOLLOW_SHARE = CYCLE_KINDS.count("follow") / len(CYCLE_KINDS)


def cycling_lines(n: int, accounts: int, rate_per_s: int = 2_000) -> Iterator[list[bytes]]:
    """n events in batches, 80% of them follows, whose targets (and all actors) cycle
    through `accounts` ids: every `accounts / FOLLOW_SHARE` events each account receives a
    follow, so after the first cycles no event adds a key: what must stay flat is memory.
    (Follow-heavy on purpose: follower state is what a cycle of accounts builds.)"""
    rng = random.Random(1)
    kinds = CYCLE_KINDS
    step = 1000 / rate_per_s
    chunk = 20_000
    follows = 0
    for base in range(0, n, chunk):
        batch = []
        for i in range(base, min(base + chunk, n)):
            kind = kinds[i % len(kinds)]
            if kind == "follow":
                target = f"a{(follows * 7_919) % accounts}"  # 7919 is prime: a full cycle
                follows += 1
            else:
                target = f"a{(i * 104_729) % accounts}"
            ts = T0 + int(i * step) + rng.randrange(-2_000, 2_000)
            line = format_event(i, kind, ts, f"a{i % accounts}", target, f"{target}/p1", rng)
            batch.append(line.encode() + b"\n")
        yield batch


MIXED_CYCLE_KINDS = (
    ("follow",) * 3 + ("unfollow",) + ("click",) * 3 + ("comment", "repost", "register")
)
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "今天",
    "天气",
    "很好",
    "我们",
    "一起",
    "去",
    "公园",
    "散步",
    "然后",
    "吃饭",
    "喝茶",
    "聊天",
    "看书",
    "唱歌",
)


MIXED_FOLLOW_SHARE = MIXED_CYCLE_KINDS.count("follow") / len(MIXED_CYCLE_KINDS)


def _campaigns(k: int, ts: int) -> list[bytes]:
    """Campaign `k` at `ts`: a batch of 60 registrations from a fresh /24 on two devices
    (then dormant), a round of a 30-account ring on a fresh shop's post (a ring works a
    new shop every time and is replaced every 36 campaigns: rounds across accounts), and
    an account following 15 accounts and unfollowing them within minutes. Every keyed
    Article 18 stage gets state, and none of it may pile up."""
    net = f"10.{(k >> 8) & 255}.{k & 255}"
    lines = [
        f'{{"event_id":"k{k}r{i}","type":"register","ts":{ts + i * 3_000},'
        f'"actor":"batch{k}-{i}","ip":"{net}.{i % 50 + 1}","device_id":"farm{k}-{i % 2}",'
        f'"actor_created_at":{ts + i * 3_000}}}'
        for i in range(60)
    ]
    ring, shop = k // 36, f"shop{k}"
    lines += [
        f'{{"event_id":"k{k}p{i}","type":"repost","ts":{ts + 20_000 + i * 9_000},'
        f'"actor":"ring{ring}-{i}","target":"{shop}","content_id":"{shop}/launch"}}'
        for i in range(30)
    ]
    for i in range(15):
        at = ts + i * 4_000
        for kind, when in (("follow", at), ("unfollow", at + 90_000)):
            lines.append(
                f'{{"event_id":"k{k}c{kind[0]}{i}","type":"{kind}","ts":{when},'
                f'"actor":"churner{k}","target":"a{(k * 15 + i) % 1000}","origin":"user"}}'
            )
    return [line.encode() + b"\n" for line in lines]


def cycling_mixed_lines(
    n: int, accounts: int, rate_per_s: int = 2_000, campaign_every_s: int = 600
) -> Iterator[list[bytes]]:
    """n events in batches of every type, actors and targets cycling through `accounts`
    ids, comments and reposts with texts that rarely repeat (the state a text detector
    keeps must not grow with them), registrations from addresses that cycle through many
    networks, and every `campaign_every_s` of event time a registration batch, a ring's
    round and a churner (`_campaigns`): what must stay flat is memory, with every
    detector on."""
    rng = random.Random(2)
    campaign, next_campaign = 0, T0 + campaign_every_s * 1000
    kinds = MIXED_CYCLE_KINDS
    step = 1000 / rate_per_s
    chunk = 20_000
    w = len(WORDS)
    for base in range(0, n, chunk):
        batch = []
        for i in range(base, min(base + chunk, n)):
            kind = kinds[i % len(kinds)]
            actor = f"a{(i * 7_919) % accounts}"
            target = f"a{(i * 104_729) % accounts}"
            ts = T0 + int(i * step) + rng.randrange(-2_000, 2_000)
            spread = (i * 2_654_435_761) % (1 << 32)  # addresses scattered over the space
            ip = f"{spread >> 24}.{(spread >> 16) & 255}.{(spread >> 8) & 255}.{spread & 255}"
            head = f'{{"event_id":"m{i}","type":"{kind}","ts":{ts},"actor":"{actor}"'
            tail = f',"ip":"{ip}","device_id":"d{(i * 31) % 500_000}"}}'
            if kind in ("follow", "unfollow"):
                line = f'{head},"target":"{target}","origin":"user","consent":true{tail}'
            elif kind == "register":
                line = f'{head},"actor_created_at":{ts}{tail}'
            else:
                post = f"{target}/p{i % 7}"
                text = " ".join(WORDS[(i // w**k + k) % w] for k in range(4)) + f" {i}"
                if kind == "click":
                    line = f'{head},"target":"{target}","content_id":"{post}"{tail}'
                else:
                    line = f'{head},"target":"{target}","content_id":"{post}","text":"{text}"{tail}'
            batch.append(line.encode() + b"\n")
            if ts >= next_campaign:
                batch.extend(_campaigns(campaign, ts))
                campaign += 1
                next_campaign += campaign_every_s * 1000
            if ts >= next_campaign:
                batch.extend(_campaigns(campaign, ts))
                campaign += 1
                next_campaign += campaign_every_s * 1000
        yield batch


def ensure_file(path: Path, n: int, seed: int = 1) -> Path:
    """Write the mixed stream once and reuse it across runs."""
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as handle:
            if sum(1 for _ in handle) == n:
                return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.writelines(mixed_lines(n, seed))
    tmp.replace(path)
    return path
