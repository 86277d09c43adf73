"""The members-by-item picture (`evidence.member_items`) in a real browser, as
tests/test_console_browser.py reads the lockstep_group picture: `lockstep console` over the
replays of tests/test_member_items.py (a ring across accounts, a copy-paste campaign), each
case page drawing a point per member and item acted on, with no script error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.console.index import ConsoleIndex
from pipeline.enforcement.policy import load_policy
from tests.test_console_browser import Console, Tab, _chart, _log_in, browser, tab
from tests.test_member_items import replayed

__all__ = ["browser", "replayed", "tab"]  # fixtures, used by name


def _case_of(out: Path, detector: str) -> tuple[str, dict]:
    index = ConsoleIndex(out, str(out / "audit.sqlite"), load_policy().cooldown_s * 1000)
    index.refresh()
    case = next(c for c in index.book.cases.values() if detector in c.detectors)
    grid = next(
        f.evidence["member_items"]
        for x in reversed(case.finding_ids)
        if (f := index.finding(x)) is not None and "member_items" in f.evidence
    )
    index.close()
    return case.case_id, grid


@pytest.mark.parametrize(("name", "detector"), [("ring", "lockstep_ring"),
                                                ("copies", "duplicate_content")])  # fmt: skip
def test_a_group_case_draws_its_members_by_item(
    replayed: dict[str, Path], tab: Tab, tmp_path: Path, name: str, detector: str
) -> None:
    out = Path(shutil.copytree(replayed[name], tmp_path / "out"))
    case_id, grid = _case_of(out, detector)
    served = Console(out)
    try:
        _log_in(tab, served.base, "li")
        tab.page.goto(f"{served.base}/#/case/{case_id}")
        tab.page.wait_for_selector("#items-chart")
        chart = _chart(tab, "items-chart")
        assert chart is not None and chart["type"] == "scatter"
        assert chart["points"] == [len(grid["acts"])]  # a point per member and item
        assert chart["width"] > 100 and chart["height"] > 100
        assert "members by item" in tab.page.inner_text("#items-panel h2")
        if detector == "lockstep_ring":  # the rounds picture stays beside it
            assert _chart(tab, "picture-chart") is not None
        else:
            assert tab.page.locator("#picture-chart").count() == 0
        tab.shot(f"members-by-item-{name}")
    finally:
        logged = served.stop()
    assert "Traceback" not in logged, logged
