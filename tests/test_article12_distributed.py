"""`engagement_inflation` and `forced_follow` in the distributed runtime's stage partitions
(state pickled into a table after every record, a crash's records delivered twice) find
exactly what the embedded engine finds."""

from __future__ import annotations

from pipeline.core.settings import load_settings
from pipeline.detectors import build_stages
from pipeline.distributed.topics import Topics
from pipeline.embedded.engine import Engine
from tests.helpers import HOUR, MINUTE, T0, StreamBuilder
from tests.stage_partitions import run_partitioned
from tests.test_engagement_inflation import _background, _farm
from tests.test_forced_follow import _newcomers, _world

ON = {"enabled": True}  # whatever the defaults, this test runs both detectors
SETTINGS = load_settings(
    overrides={
        "kafka": {"partitions": 2},
        "detectors": {"engagement_inflation": ON, "forced_follow": ON},
    }
)
TOPICS = Topics("t", 2)
MINE = ("engagement_inflation", "forced_follow")


def test_stage_partitions_find_what_the_engine_finds_despite_redelivery() -> None:
    b: StreamBuilder = _world(seed=11, end=T0 + 4 * HOUR)
    _background(b, T0 + 4 * HOUR, items=30)
    _newcomers(b, T0 + 2 * HOUR, T0 + 3 * HOUR, per_hour=150, forced_onto="creator4")
    _farm(b, "promo", "shop", T0 + 2 * HOUR, T0 + 2 * HOUR + 30 * MINUTE, clicks=1500)
    lines = [line.encode() for line in b.sorted_lines()]
    stages = [s for s in build_stages(SETTINGS) if s.detector in MINE]

    engine = Engine(SETTINGS, stages=stages)
    expected = {f.finding_id for f in engine.process(lines, "f").findings}
    expected |= {f.finding_id for f in engine.finish().findings}
    assert {d for d, *_ in engine.stats.findings_by_kind} == set(MINE)

    run = run_partitioned(SETTINGS, stages, lines, TOPICS)
    assert set(run.found) == expected
    assert run.duplicates > 0
