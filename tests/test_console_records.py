"""The console's index decodes a finding's line without its evidence
(pipeline/console/records.py): what it keeps is what the whole finding gives, and it refuses
exactly the lines `read_finding` refuses, with the same reason and message, those whose
evidence only a whole decode finds wrong (a string not UTF-8, a number too large for a
float, nesting too deep) included."""

from __future__ import annotations

import msgspec
import pytest

from pipeline.console.cases import finding_ref
from pipeline.console.records import _Head, read_finding_ref
from pipeline.contract.findings import Finding, InvalidFinding, make_finding, read_finding
from tests.helpers import T0


def _line(**evidence: object) -> bytes:
    f = make_finding(detector="lockstep_group", article="18(4)", subject_type="group",
                     subject_id="g1", window_start=T0, window_end=T0 + 60_000, score=0.9,
                     severity="high", members=["m1", "m2"], evidence=evidence)  # fmt: skip
    return msgspec.json.encode(f)


VALID = _line(explanation="a ring of 2", target="owner-9", series={"t": [1], "value": [2.5]},
              member_facts={"m1": {"created_at": T0, "network": "198.51.100.0/24"}})  # fmt: skip
LINES = {
    "large evidence": VALID,
    "no evidence": b'{"finding_id":"f","detector":"d","article":"12","subject_type":"account",'
    b'"subject_id":"u","score":1,"severity":"low","window_start":0,"window_end":1,"ts":1}',
    "an owner, an explanation not a string": _line(owner="o-1", explanation=["x"]),
    "a target not a string": _line(target=7, owner="o-2"),
    "not ASCII, UTF-8": _line(explanation="哈哈哈 → 3"),
    "a large int": VALID.replace(b'"value":[2.5]', b'"value":[' + b"9" * 40 + b"]"),
    "a small exponent": VALID.replace(b'"value":[2.5]', b'"value":[1.5e+30,-2E-300]'),
    "not UTF-8 in the evidence": VALID.replace(b"198.51", b"\xff\xfe.51"),
    "a surrogate in the evidence": VALID.replace(b"198.51", b"\xed\xa0\x80.51"),
    "a float too large": VALID.replace(b'"value":[2.5]', b'"value":[1e400]'),
    "a float too large, written long": VALID.replace(b"[2.5]", b"[" + b"9" * 320 + b".0]"),
    "a float too large, upper case": VALID.replace(b"[2.5]", b"[ 1.8E+308 ]"),
    "nested too deep": VALID.replace(b"[2.5]", b"[" * 600 + b"]" * 600),
    "nested deep, within the bound": VALID.replace(b"[2.5]", b"[" * 500 + b"]" * 500),
    "brackets in a string": _line(explanation="[" * 600),
    "evidence not an object": VALID.replace(b'"evidence":{', b'"evidence":[{', 1)[:-1] + b"]}",
    "a bad escape in the evidence": VALID.replace(b"198.51", b"\\q"),
    "a missing field": VALID.replace(b'"detector":"lockstep_group",', b""),
    "a wrong type": VALID.replace(b'"score":0.9', b'"score":"high"'),
    "a time out of range": VALID.replace(b'"ts":', b'"ts":-', 1),
    "an unknown subject type": VALID.replace(b'"group"', b'"planet"', 1),
    "not JSON": VALID[:-5],
    "not an object": b"[1, 2]",
}


@pytest.mark.parametrize("name", sorted(LINES))
def test_the_index_keeps_and_refuses_what_a_whole_decode_does(name: str) -> None:
    line = LINES[name]
    try:
        whole = finding_ref(read_finding(line), 40, len(line))
    except InvalidFinding as refused:
        with pytest.raises(InvalidFinding) as caught:
            read_finding_ref(line, 40)
        assert (str(caught.value), caught.value.reason) == (str(refused), refused.reason)
    else:
        assert read_finding_ref(line, 40) == whole


def test_the_lines_refused_for_their_evidence_alone_are_refused() -> None:
    """The cases the skipping decoder would let through, were they not decoded whole."""
    for name in ("not UTF-8 in the evidence", "a float too large", "nested too deep",
                 "a float too large, written long", "a float too large, upper case"):  # fmt: skip
        with pytest.raises(InvalidFinding):
            read_finding(LINES[name])


def test_the_head_is_a_finding_but_its_evidence() -> None:
    """The fields the index decodes are a finding's, with their types and defaults, so
    it refuses a field as the whole decode does when the contract changes."""

    def shape(struct: type[msgspec.Struct]) -> list[tuple[str, object, bool, object]]:
        fields = [f for f in msgspec.structs.fields(struct) if f.name != "evidence"]
        made = [f.default_factory() if callable(f.default_factory) else f.default for f in fields]
        return [(f.name, f.type, f.required, d) for f, d in zip(fields, made, strict=True)]

    assert shape(_Head) == shape(Finding)
    assert [f.name for f in msgspec.structs.fields(_Head)] == list(Finding.__struct_fields__)
