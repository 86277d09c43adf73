"""Whatever bytes arrive, the gate accounts for every input: admitted, a duplicate, blank,
or a dead letter with a known reason and a detail; it never raises. The corpus's inputs
(tests/fuzz/corpus/gate) first, then hypothesis's."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.contract.deadletter import REASONS
from pipeline.contract.events import EVENT_TYPES
from pipeline.core.gate import Gate
from pipeline.core.settings import load_settings
from tests.fuzz.harness import budget, corpus
from tests.helpers import T0

SETTINGS = load_settings()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
field_values = st.one_of(
    st.integers(min_value=T0 - 10**6, max_value=T0 + 10**6),
    st.sampled_from(["u1", "c1", "", "x" * 200, "2026-01-01T00:00:00Z", "user"]),
    json_values,
)
FIELDS = ("event_id", "type", "ts", "actor", "target", "content_id", "text", "origin", "consent")


@st.composite
def event_like(draw: st.DrawFn) -> bytes:
    """An event, its fields sometimes dropped or given a value of any kind."""
    event: dict[str, Any] = {
        "event_id": f"e{draw(st.integers(0, 30))}",
        "type": draw(st.sampled_from(EVENT_TYPES)),
        "ts": T0 + draw(st.integers(-120_000, 120_000)),
        "actor": "u1",
        "target": "t1",
        "content_id": "c1",
        "text": "hello",
    }
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        if draw(st.booleans()):
            event.pop(name, None)
        else:
            event[name] = draw(field_values)
    return json.dumps(event).encode()


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(0, 3_000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    closed = draw(st.booleans())
    return b'{"zz": ' + opener * depth + (b"1" + closer * depth + b"}" if closed else b"")


inputs = st.one_of(
    event_like(),
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    nested(),
    st.sampled_from([b"", b"\n", b"  \r\n", b"{" * 70_000]),
)


def _accounts_for_every_input(batches: list[list[bytes]]) -> None:
    gate = Gate(SETTINGS, wall_clock=lambda: T0 / 1000)
    for batch in batches:
        admitted = gate.admit(batch, "fuzz")
        accounted = admitted.events + len(admitted.dead_letters)
        assert accounted + admitted.duplicates + admitted.blank == len(batch)
        for dead in admitted.dead_letters:
            assert dead.reason in REASONS and dead.detail


FRESH = json.dumps({"event_id": "fresh", "type": "login", "ts": T0, "actor": "u1"}).encode()


@pytest.mark.parametrize("raw", corpus("gate"))
def test_each_input_of_the_corpus_is_accounted_for(raw: bytes) -> None:
    """Alone, again (a duplicate, or the same refusal), and among other inputs."""
    _accounts_for_every_input([[raw], [raw, FRESH, raw]])


@budget(300)
@given(batches=st.lists(st.lists(inputs, min_size=1, max_size=12), min_size=1, max_size=4))
def test_every_input_is_admitted_a_duplicate_blank_or_a_dead_letter(
    batches: list[list[bytes]],
) -> None:
    _accounts_for_every_input(batches)
