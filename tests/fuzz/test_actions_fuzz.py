"""Whatever a line of an actions file holds, `read_action` returns an action its readers can
act on (its fields in their types and ranges, the same once written and read again) or
refuses it with `InvalidAction` and a one-line reason, never another exception. And the
throttling hook, following the file, refuses and counts each bad line and goes on: an
action after any number of them still takes effect."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract.findings import (
    LAST_MS,
    MEASURE_PARAMS,
    SEVERITIES,
    Action,
    Descriptor,
    DiscountEngagementParams,
    DiscountParams,
    InvalidAction,
    RevertParams,
    SubjectType,
    ThrottleParams,
    TimeUnit,
    read_action,
)
from pipeline.enforcement.measures import BLOCKING, MEASURES
from pipeline.serve.throttle import ActionsFile, ThrottleMetrics, ThrottleTable
from tests.fuzz.harness import budget, corpus
from tests.helpers import T0

NOW_S = T0 / 1000 + 3600  # the hook's clock: an hour into the actions' day
MODES: tuple[str, ...] = get_args(get_type_hints(Action)["mode"])
KINDS = ("follow", "click", "repost", "comment")

# --- actions as the pipeline makes them -------------------------------------------------

ids = st.sampled_from(["u1", "bot9", "", "net:203.0.113", "f1"]) | st.text(max_size=12)
EXTREME_INTS = [0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**19, 10**30, -(10**30)]
EXTREME_INTS += [10**308, 10**309, 10**400, -(10**400)]  # past a float's range
huge_ints = st.integers() | st.sampled_from(EXTREME_INTS)
near_t0 = st.integers(T0 - 10**9, T0 + 10**9)
odd_times = st.sampled_from([*EXTREME_INTS, LAST_MS, LAST_MS + 1])


@st.composite
def times(draw: st.DrawFn) -> int:
    """What the contract's `int` admits for a time: mostly one near T0, one in five any."""
    return draw(odd_times if draw(st.integers(0, 4)) == 0 else near_t0)


@st.composite
def params_for(draw: st.DrawFn, action: str) -> dict[str, Any]:
    """An action's params: the decision it rested on, and what its measure needs."""
    params: dict[str, Any] = {
        "rule": draw(ids),
        "detector": draw(st.sampled_from(["follower_jump", "lockstep_ring", "edge_burst"])),
        "severity": draw(st.sampled_from(SEVERITIES)),
        "credit_level": draw(st.integers(0, 5)),
        "credit_score": draw(st.floats(0, 1000)),
    }
    own: msgspec.Struct | None = None
    if action == "throttle":
        limited = draw(st.lists(st.sampled_from(KINDS) | ids, max_size=3))
        own = ThrottleParams(
            descriptors=[Descriptor("account_id", draw(ids))]
            + [Descriptor("action", kind) for kind in limited],
            requests_per_unit=draw(st.integers(1, 10**6)),
            unit=draw(st.sampled_from(get_args(TimeUnit))),
        )
    elif action == "revert":
        own = RevertParams(reverts=draw(ids))
    elif action == "discount_engagement":
        start = draw(st.integers(T0 - 10**9, T0 + 10**9))
        own = DiscountEngagementParams(
            DiscountParams(
                engagement=draw(st.dictionaries(st.sampled_from(KINDS), st.integers(0, 10**6))),
                window_start=start,
                window_end=start + draw(st.integers(0, 10**8)),
                from_accounts=draw(st.lists(ids, max_size=3)),
            )
        )
    if own is not None:
        params.update(msgspec.to_builtins(own))
    return params


APPLIED = sorted(BLOCKING | {"throttle", "revert"})  # the measures the throttle table applies


@st.composite
def actions(draw: st.DrawFn, applied: bool = False) -> Action:
    """A valid action, built from the contract's own types (which check its params); if
    `applied`, one the throttle table acts on: in force on an account."""
    if applied:
        action, subject_type, mode = draw(st.sampled_from(APPLIED)), "account", "enforce"
    else:
        action = draw(st.sampled_from(sorted(MEASURES)) | ids)
        subject_type = draw(st.sampled_from(get_args(SubjectType)))
        mode = draw(st.sampled_from(MODES))
    ts = draw(times())
    return Action(
        action_id=draw(ids),
        action=action,
        subject_type=subject_type,
        subject_id=draw(ids),
        basis=draw(st.lists(st.sampled_from(["12", "13", "18", "19", "20"]), max_size=3)),
        finding_ids=draw(st.lists(ids, max_size=3)),
        mode=mode,  # type: ignore[arg-type]
        ts=ts,
        expires_at=draw(st.none() | st.integers(ts, ts + 10**10) | times()),
        params=draw(params_for(action)),
    )


# --- the same, gone wrong ----------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "a\udfff", "3", "1e3", "NaN", "minute", "throttle", "action"])
)
keys = st.text(max_size=8) | st.sampled_from(["key", "value", "reverts", "discount", "unit"])
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
descriptor_like = st.sampled_from(
    [
        "follow",
        ["follow"],
        [["action", "follow"]],
        {"key": "action", "value": "follow"},
        [{"key": "action"}],
        [{"key": "account_id", "value": 5}],
        [{"key": "actions", "value": "follow"}],
        [{"key": "action", "value": ["follow"]}],
        [None],
        [],
    ]
)
DEEP = "\x00deep\x00"  # a value that becomes deep nesting once the record is encoded
DEEP_TOKEN = json.dumps(DEEP).encode()


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path (keys and indexes) of every value inside a record, its fields first."""
    if isinstance(value, dict):
        inside = list(value.items())
    elif isinstance(value, list):
        inside = list(enumerate(value))
    else:
        return []
    places = [(*path, key) for key, _ in inside]
    for key, inner in inside:
        places += _places(inner, (*path, key))
    return places


@st.composite
def mutated_record(draw: st.DrawFn) -> bytes:
    """A valid action's record with fields dropped or given values of any kind: other JSON
    kinds, numbers as strings, descriptors of any shape, deep nesting."""
    record = msgspec.to_builtins(draw(actions()))
    for _ in range(draw(st.integers(1, 3))):
        places = _places(record)
        inside_params = [place for place in places if place[0] == "params"]
        if inside_params and draw(st.booleans()):  # where the measures' needs are checked
            places = inside_params
        if not places:
            break
        *parents, key = places[draw(st.integers(0, len(places) - 1))]
        holder = record
        for parent in parents:
            holder = holder[parent]
        old = holder[key]
        how = draw(st.sampled_from(["drop", "any", "string", "descriptors", "deep", "wrap"]))
        if how == "drop":
            del holder[key]
        elif how == "any":
            holder[key] = draw(json_values)
        elif how == "string":
            holder[key] = str(old) if not isinstance(old, str) else str(draw(huge_ints))
        elif how == "descriptors":
            holder[key] = copy.deepcopy(draw(descriptor_like))  # a mutation may reach inside
        elif how == "deep":
            holder[key] = DEEP
        else:
            holder[key] = draw(st.sampled_from([[old], {"value": old}]))
    ascii_only = draw(st.booleans())  # if not, lone surrogates become bytes no UTF-8 has
    line = json.dumps(record, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    if DEEP_TOKEN in line:
        line = line.replace(DEEP_TOKEN, draw(nesting()), 1).replace(DEEP_TOKEN, b"1")
    return line


@st.composite
def nesting(draw: st.DrawFn) -> bytes:
    """Arrays or objects nested up to 3,000 deep, closed or not."""
    depth = draw(st.integers(0, 3_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    tail = b"1" + closer * depth if draw(st.booleans()) else b""
    return opener * depth + tail


NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
ODD_NUMBERS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"9" * 5_000]
ODD_NUMBERS += [b"1.0", b"1e3", b"-0", b"01", b"+1", b"0x10", b'"3"', b"null", b"true"]


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """A valid action's line with its bytes damaged: cut short, bytes spliced in (not all
    of them UTF-8), a number swapped for a token JSON lacks or one out of range, bytes
    before or after it."""
    line = msgspec.json.encode(draw(actions()))
    for _ in range(draw(st.integers(1, 2))):
        how = draw(st.sampled_from(["cut", "splice", "number", "affix"]))
        at = draw(st.integers(0, len(line)))
        if how == "cut":
            line = line[:at]
        elif how == "splice":
            line = line[:at] + draw(st.binary(min_size=1, max_size=4)) + line[at:]
        elif how == "number" and (numbers := list(NUMBER.finditer(line))):
            hit = numbers[draw(st.integers(0, len(numbers) - 1))]
            line = line[: hit.start()] + draw(st.sampled_from(ODD_NUMBERS)) + line[hit.end() :]
        else:
            before = draw(st.sampled_from([b"", b"\xef\xbb\xbf", b" ", b"\x00"]))
            after = draw(st.sampled_from([b"", b"\r", b" x", b"\x00", b"}", b"\xff"]))
            line = before + line + after
    return line


lines = st.one_of(
    actions().map(msgspec.json.encode),
    mutated_record(),
    garbled(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    nesting(),
    st.sampled_from([b"", b" ", b"{}", b"null", b"[]", b'""', b"{" * 70_000]),
)

# --- read_action -------------------------------------------------------------------------


def _assert_actionable(action: Action) -> None:
    """The fields in their documented types and ranges, the params with what the measure
    needs: what the readers of actions rely on without looking."""
    for text in (action.action_id, action.action, action.subject_id):
        assert type(text) is str
    assert action.subject_type in get_args(SubjectType) and action.mode in MODES
    assert all(type(x) is str for x in [*action.basis, *action.finding_ids])
    assert type(action.ts) is int and 0 <= action.ts <= LAST_MS
    expires = action.expires_at
    assert expires is None or (type(expires) is int and 0 <= expires <= LAST_MS)
    assert type(action.params) is dict and all(type(k) is str for k in action.params)
    if (shape := MEASURE_PARAMS.get(action.action)) is not None:
        msgspec.convert(action.params, shape)


def _read_or_refuse(line: bytes) -> Action | None:
    """The action `line` is, checked and read back once written; None if refused, as it
    should be: with `InvalidAction` and a one-line reason."""
    try:
        action = read_action(line)
    except InvalidAction as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and "\r" not in reason, reason
        return None
    _assert_actionable(action)
    assert read_action(msgspec.json.encode(action)) == action
    return action


@pytest.mark.parametrize("line", corpus("actions"))
def test_each_input_of_the_corpus_is_an_action_or_refused(line: bytes) -> None:
    _read_or_refuse(line)


@budget(1000)
@given(line=lines)
def test_any_line_is_an_action_or_refused_with_a_one_line_reason(line: bytes) -> None:
    _read_or_refuse(line)


# --- the throttling hook, following an actions file ---------------------------------------


def _sentinel(n: int) -> Action:
    """A valid action no fuzzed line can name (ids longer than the strategies draw)."""
    return Action(
        action_id=f"the-sentinel-action-{n}",
        action="close_account",
        subject_type="account",
        subject_id=f"the-sentinel-account-{n}",
        basis=["19"],
        finding_ids=["f1"],
        mode="enforce",
        ts=T0,
        params={"rule": "r"},
    )


def _refusals(written: bytes) -> int:
    """How many lines of `written` the hook should refuse: those neither blank nor a
    valid action of a measure it knows."""
    return sum(
        1
        for line in written.split(b"\n")[:-1]
        if line.strip() and ((a := _read_or_refuse(line)) is None or a.action not in MEASURES)
    )


def _follow(appends: list[list[bytes]], path: Path) -> None:
    """Append each list of lines to the actions file, then a valid action, and have the
    hook take in what was appended as it does every second: it never raises nor stops
    trusting the file, it refuses each bad line once, and each valid action takes effect."""
    path.write_bytes(b"")
    table = ThrottleTable()
    metrics = ThrottleMetrics(table)
    follower = ActionsFile(str(path), table, metrics)
    refused = 0
    for n, appended in enumerate(appends):
        sentinel = _sentinel(n)
        written = b"".join(line.rstrip(b"\n") + b"\n" for line in appended)
        written += msgspec.json.encode(sentinel) + b"\n"
        with open(path, "ab") as handle:
            handle.write(written)
        follower.refresh()
        assert follower.trouble() is None
        refused += _refusals(written)
        assert metrics.registry.get_sample_value("lockstep_throttle_refused_lines_total") == refused
        hit = table.check(sentinel.subject_id, "follow", NOW_S)
        assert hit is not None and hit[0].action_id == sentinel.action_id
        for account, kind in list(table.limits):  # whatever was taken in can be checked
            table.check(account, kind, NOW_S)


# the table acts on valid actions in force: half the lines are, the rest anything
followed_lines = actions(applied=True).map(msgspec.json.encode) | lines


@pytest.fixture(scope="module")
def actions_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "actions.jsonl"


def test_the_hook_refuses_the_corpus_and_takes_in_an_action_after_it(actions_file: Path) -> None:
    inputs = [param.values[0] for param in corpus("actions")]
    _follow([inputs, inputs[::-1]], actions_file)


@budget(300)
@given(appends=st.lists(st.lists(followed_lines, max_size=8), min_size=1, max_size=3))
def test_the_hook_refuses_bad_lines_and_takes_in_an_action_after_them(
    appends: list[list[bytes]], actions_file: Path
) -> None:
    _follow(appends, actions_file)
