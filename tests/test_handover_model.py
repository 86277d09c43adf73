"""`models.handover`: an account taken over (a new device and network, another script,
other targets, after a dormant spell, promoting one account) is judged a handover; a new
phone, a journey, and a carrier NAT's shared address are not; state stays bounded and
pickles."""

from __future__ import annotations

import pickle

from models.handover import MAX_SOURCES, MAX_TARGETS, AccountProfile, Seen, script_of
from pipeline.core.settings import load_settings

RULES = load_settings().detectors.account_handover.rules()
MINUTE = 60_000
HOUR = 60 * MINUTE
T0 = 1_772_409_600_000


def _owner(profile: AccountProfile, start: int = T0, network: str = "39.38.190") -> int:
    """A week of an owner's days: logins and Chinese comments on two favourite accounts
    from one phone at home (and a mobile network now and then); the last event's time."""
    ts = start
    for day in range(7):
        for k in range(4):
            ts = start + day * 24 * HOUR + (9 + 3 * k) * HOUR
            net = network if k % 2 == 0 else "10.1.2"
            profile.see(Seen(ts, "login", "phone-1", net, "", None), RULES)
            target = "fav-a" if k % 2 else "fav-b"
            profile.see(Seen(ts + MINUTE, "comment", "phone-1", net, target, "han"), RULES)
    return ts + MINUTE


def _verdict(profile: AccountProfile):
    verdict = profile.judge(RULES)
    return verdict, (verdict is not None and verdict.flagged)


def test_a_takeover_is_a_handover() -> None:
    p = AccountProfile()
    last = _owner(p)
    at = last + 2 * 24 * HOUR + 4 * HOUR  # two days of silence, then 3 am
    p.see(Seen(at, "login", "buyer-7", "14.200.128", "", None), RULES)
    for k in range(10):
        t = at + (k + 1) * 2 * MINUTE
        kind = ("follow", "repost", "comment")[k % 3]
        script = "latin" if kind == "comment" else None
        p.see(Seen(t, kind, "buyer-7", "14.200.128", "shop-9", script), RULES)
    verdict, flagged = _verdict(p)
    assert flagged, verdict
    everything = {"network", "hours", "script", "targets", "dormant", "promotion"}
    assert set(verdict.signals) == everything
    assert verdict.beneficiary == "shop-9" and verdict.score > 0.85


def test_a_new_phone_is_not() -> None:
    """A new device on the usual networks, with the usual habits and hours."""
    p = AccountProfile()
    last = _owner(p)
    at = last + 20 * HOUR
    for k in range(8):
        t = at + k * 20 * MINUTE
        target = "fav-a" if k % 2 else "fav-b"
        p.see(Seen(t, "comment", "phone-2", "39.38.190", target, "han"), RULES)
    verdict, flagged = _verdict(p)
    assert p.episode is not None and not flagged, verdict
    assert "network" not in verdict.signals


def test_a_journey_is_not() -> None:
    """The usual phone on new networks, at other hours: no episode at all; the networks
    become the account's."""
    p = AccountProfile()
    last = _owner(p)
    at = last + 30 * HOUR + 7 * HOUR  # another time zone
    for k in range(8):
        t = at + k * 30 * MINUTE
        p.see(Seen(t, "comment", "phone-1", "203.0.113", "fav-a", "han"), RULES)
    assert p.episode is None and p.judge(RULES) is None
    assert p.knows(p.networks, "203.0.113", RULES)


def test_a_shared_address_vouches_for_nobody() -> None:
    """Behind a carrier NAT the address is everybody's: a known network does not clear a
    new device; with other habits and a promotion it is still a handover, and the owner
    on the NAT with a new phone and the same habits is not."""
    nat = "100.64.1"
    p = AccountProfile()
    last = _owner(p, network=nat)
    at = last + 3 * HOUR
    for k in range(10):
        kind = ("follow", "repost", "comment")[k % 3]
        script = "latin" if kind == "comment" else None
        p.see(Seen(at + k * MINUTE, kind, "buyer-7", nat, "shop-9", script), RULES)
    verdict, flagged = _verdict(p)
    assert flagged and "network" not in verdict.signals, verdict

    q = AccountProfile()
    last = _owner(q, network=nat)
    for k in range(8):
        q.see(Seen(last + HOUR + k * MINUTE, "comment", "phone-2", nat, "fav-a", "han"), RULES)
    assert not _verdict(q)[1]


def test_an_episode_becomes_the_usual_and_a_thin_history_opens_none() -> None:
    p = AccountProfile()
    p.see(Seen(T0, "login", "d1", "1.2.3", "", None), RULES)
    p.see(Seen(T0 + MINUTE, "login", "d2", "4.5.6", "", None), RULES)  # nothing to compare
    assert p.episode is None
    last = _owner(p)
    p.see(Seen(last + HOUR, "login", "tablet", "39.38.190", "", None), RULES)
    assert p.episode is not None
    assert not p.close_episode(last + 2 * HOUR, RULES)
    assert p.close_episode(last + HOUR + RULES.episode_ms, RULES)
    assert p.episode is None and p.knows(p.devices, "tablet", RULES)


def test_events_without_device_or_address_are_signs_of_life_only() -> None:
    p = AccountProfile()
    last = _owner(p)
    p.see(Seen(last + 3 * HOUR, "login", "", "", "", None), RULES)
    p.see(Seen(last + 3 * HOUR, "follow", "", "5.6.7", "shop-9", None), RULES)  # anyone's
    assert p.episode is None and p.last_ts == last + 3 * HOUR
    assert not p.knows(p.networks, "5.6.7", RULES) and "shop-9" not in p.targets
    assert p.usual_ts == last  # the dormant spell still counts from the owner's last event
    p.see(Seen(last + 4 * HOUR, "login", "new-1", "", "", None), RULES)  # no address
    assert p.episode is not None and not p.episode.new_network


def test_state_is_bounded_and_pickles() -> None:
    p = AccountProfile()
    _owner(p)
    for k in range(200):
        t = T0 + 8 * 24 * HOUR + k * 10 * MINUTE
        p.see(Seen(t, "follow", "phone-1", f"10.{k}.1", f"acct{k}", None), RULES)
    assert len(p.networks) <= MAX_SOURCES and len(p.targets) <= MAX_TARGETS
    q = pickle.loads(pickle.dumps(p))
    assert q.networks == p.networks and q.hours == p.hours and q.judge(RULES) == p.judge(RULES)
    assert len(pickle.dumps(p)) < 4096


def test_scripts() -> None:
    assert script_of("今天也来支持一下") == "han"
    assert script_of("Follow @shop for deals") == "latin"
    assert script_of("Купить подписчиков") == "cyrillic"
    assert script_of("666 +1 👍") is None and script_of(None) is None
