"""The console's pages in a real browser: Debian's Chromium (/usr/bin/chromium, which
`make test` installs when it is missing; never a browser Playwright downloads) driven by
Playwright, against `lockstep console` run as a subprocess over the outputs of `lockstep
replay` on a simulated world (the world of tests/test_console_api.py: a follower burst, a
repost ring, registration batches).

A reviewer logs in, finds the ring's case by a member's id, reads its charts and members,
reverses a member's throttle, files an appeal against another's and overturns it, approves
a batch member's held measure with a double click (one decision), and approves the ring as
one with two members excluded: every decision is made from the page, so the page sends the
session's CSRF token (each would be a 403 without it). Then `lockstep audit verify` passes
and the actions file holds exactly the reverts those decisions issued. Other tests: the
queue's filters, sorts, pages and keys; a viewer reads and cannot decide; the vendored
charting library is the one recorded. A screenshot of each screen is saved in
tests/artifacts/console/ (ignored by git)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import test_console_api
from tests.helpers import lockstep, read_jsonl
from tests.test_console_api import HASHES, PASSWORDS, TOKEN, _cases, _trail
from tests.test_webhooks import _port

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium`
ARTIFACTS = ROOT / "tests" / "artifacts" / "console"  # screenshots (.gitignore'd)
VENDOR = ROOT / "pipeline" / "console" / "static" / "vendor"
VIEWPORT = {"width": 1360, "height": 900}

world = test_console_api.world  # the same world, replayed once for this module


# -- the console, the browser, a tab


class Console:
    """`lockstep console` over `out`, a subprocess on a free loopback port, as deployed."""

    def __init__(self, out: Path, options: tuple[str, ...] = (), **environ: str) -> None:
        """`options` after the command's own (`--audit URL --kafka`, say); `environ`, the
        LOCKSTEP_ variables it is given (none of the test run's own)."""
        config = out.parent / "console.yaml"
        config.write_text(
            "console:\n  refresh_s: 0.2\n  users:\n"
            f'    - {{name: li, role: reviewer, password: "{HASHES["li"]}"}}\n'
            f'    - {{name: vera, role: viewer, password: "{HASHES["vera"]}"}}\n'
        )
        self.out, self.log = out, out.parent / "console.log"
        self.base = f"http://127.0.0.1:{(port := _port())}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
        env.update(environ, LOCKSTEP_REVIEW_TOKEN=TOKEN)
        command = [sys.executable, "-m", "pipeline.cli", "console", "--out", str(out),
                   "--config", str(config), "--port", str(port), *options]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{self.base}/openapi.json").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the console never answered"
            time.sleep(0.1)

    def stop(self) -> str:
        """Stop it; what it logged."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.log.read_text(errors="replace")


@pytest.fixture
def console(world: Path, tmp_path: Path) -> Iterator[Console]:
    """The console over a copy of the world's outputs, for a test to decide on."""
    served = Console(Path(shutil.copytree(world, tmp_path / "out")))
    yield served
    logged = served.stop()
    assert "Traceback" not in logged, logged


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium under Playwright: missing, the test fails saying how to install it."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y "
            "chromium`; `make test` does when it is missing); Playwright's own browsers "
            "are never downloaded",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A page in its own browser context, with what went wrong in it and the POSTs it sent."""

    page: Any
    name: str
    errors: list[str] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def shot(self, screen: str) -> Path:
        """A screenshot of the whole page, kept as a test artifact."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{screen}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def tab(browser: Any, request: pytest.FixtureRequest) -> Iterator[Tab]:
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    opened = Tab(page, request.node.name.removeprefix("test_"))
    page.on("pageerror", lambda error: opened.errors.append(f"page error: {error}"))
    page.on("console", lambda m: opened.errors.append(m.text) if _worrying(m) else None)
    page.on("request", lambda r: opened.posts.append((r.url, r.headers))
            if r.method == "POST" else None)  # fmt: skip
    yield opened
    context.close()
    assert opened.errors == [], opened.errors  # no script error, nothing the CSP refused


def _worrying(message: Any) -> bool:
    """A console message that is a fault of the page (a 401 or 404 a test provokes, or the
    browser's own favicon request, is the server answering as it should)."""
    return message.type == "error" and not message.text.startswith("Failed to load resource")


# -- steps a reviewer takes


def _log_in(tab: Tab, base: str, name: str = "", token: str = "") -> None:
    page = tab.page
    page.goto(base + "/")
    page.wait_for_selector("#login")
    tab.shot("0-login")
    if token:
        page.fill("#token", token)
    else:
        page.fill("#name", name)
        page.fill("#password", PASSWORDS[name])
    page.click("#login button[type=submit]")
    page.wait_for_selector("#queue tr.case-row")


def _reason(tab: Tab, reason: str, double: bool = False) -> None:
    """Give the reason the dialog asks for, and confirm (twice, quickly, if `double`)."""
    page = tab.page
    page.wait_for_selector("#reason-dialog[open]")
    page.fill("#reason-text", reason)
    if double:
        page.dblclick("#reason-confirm")
    else:
        page.click("#reason-confirm")
    page.wait_for_selector("#reason-dialog:not([open])", state="attached")


def _until(tab: Tab, selector: str, words: str, exact: bool = False) -> None:
    """Wait until the element says `words` (Playwright's own waiting: the page's CSP
    refuses the eval a string predicate would need)."""
    from playwright.sync_api import expect

    if exact:
        expect(tab.page.locator(selector)).to_have_text(words)
    else:
        expect(tab.page.locator(selector)).to_contain_text(words)


def _until_url(tab: Tab, part: str) -> None:
    from playwright.sync_api import expect

    expect(tab.page).to_have_url(re.compile(".*" + re.escape(part)))


def _said(tab: Tab, words: str) -> None:
    _until(tab, "#toast", words)


def _filter(tab: Tab, table: str, text: str) -> None:
    tab.page.fill(f"#{table} .table-filter", text)


def _chart(tab: Tab, canvas: str) -> dict[str, Any]:
    """What the Chart.js chart on `canvas` holds: its points per dataset, and its labels."""
    return tab.page.evaluate(
        """(id) => {
            const chart = Chart.getChart(document.getElementById(id));
            if (!chart) return null;
            return {
                type: chart.config.type,
                points: chart.data.datasets.map((d) => d.data.filter((x) => x !== null).length),
                labels: (chart.data.labels || []).length,
                flagged: ((chart.options.plugins.flaggedWindows || {}).windows || []).length,
                width: chart.width, height: chart.height,
            };
        }""",
        canvas,
    )


def _rows(tab: Tab, cell: str = "") -> list[str]:
    """The queue's rows on screen: their case ids, or the text of a cell of each."""
    rows = tab.page.query_selector_all(f"#queue tr.case-row {cell}".strip())
    return [r.inner_text() if cell else r.get_attribute("data-case-id") for r in rows]


def _until_cells(tab: Tab, cell: str, texts: list[str]) -> None:
    """Wait until a cell of each of the queue's rows reads `texts`, in order."""
    from playwright.sync_api import expect

    expect(tab.page.locator(f"#queue tr.case-row {cell}")).to_have_text(texts)


def _until_rows(tab: Tab, n: int) -> None:
    from playwright.sync_api import expect

    expect(tab.page.locator("#queue tr.case-row")).to_have_count(n)


def _reverse_and_overturn(
    tab: Tab, throttle_of: dict[str, str], reversed_: str, appealed: str
) -> None:
    """On a group's case: reverse one member's throttle, then file another member's
    appeal and overturn it; each issues one revert."""
    page = tab.page
    _filter(tab, "actions", reversed_)
    page.click(f'tr[data-action-id="{throttle_of[reversed_]}"] button[data-op="reverse"]')
    _reason(tab, "a fan who reposts everything, not a ring member")
    _said(tab, "Reversed throttle: issued 1 revert")
    _until(tab, f'tr[data-action-id="{throttle_of[reversed_]}"] td.state', "reverted")

    _filter(tab, "actions", appealed)
    page.click(f'tr[data-action-id="{throttle_of[appealed]}"] button[data-op="appeal"]')
    assert page.input_value("#reason-appellant") == appealed
    _reason(tab, "I repost my friend's posts, I am no bot")
    _said(tab, "Appeal filed")
    page.wait_for_selector("#appeals .badge.st-open")
    assert "appealed" in page.inner_text("#case-head")
    page.click('#appeals button[data-op="overturn"]')
    _reason(tab, "the appellant's history is a fan's")
    _said(tab, "Appeal overturned: issued 1 revert")
    page.wait_for_selector("#appeals .badge.st-overturned")
    assert _state(tab, throttle_of[appealed]) == "reverted"


def _decide_excluding(
    tab: Tab, case_url: str, excluded: list[str], throttle_of: dict[str, str]
) -> None:
    """Approve a group case as one but for two `excluded` members, whose throttles
    (`throttle_of`) the decision reverts."""
    page = tab.page
    page.goto(case_url)
    page.wait_for_selector("#members")
    for member in excluded:
        _filter(tab, "members", member)
        page.check(f'#members tr[data-member="{member}"] input.exclude')
    assert page.inner_text("#excluded-count").startswith("2 member(s) excluded")
    page.click("#approve-case")
    _reason(tab, "one ring; two of them are fans")
    _said(tab, "Case approved, 2 member(s) excluded")
    # nothing waits now, and nothing stands: the world's throttles (a day from its March
    # events) are over by the console's clock, the wall clock, and some were reversed
    _until(tab, "#case-head", "reverted")
    for member in excluded:
        _filter(tab, "actions", member)
        assert _state(tab, throttle_of[member]) == "reverted"


def _read_overview(tab: Tab, ring_pending: int) -> None:
    """The overview: findings by detector and article and actions by mode as bar charts
    with data, the time to decision over the ring's many steps (`ring_pending` of them
    waited when the reviewer began), enforced actions counted."""
    page = tab.page
    page.click('[data-nav="overview"]')
    page.wait_for_selector("#findings-by-detector")
    for canvas in ("findings-by-detector", "findings-by-article", "actions-by-mode"):
        chart = _chart(tab, canvas)
        assert chart is not None and chart["type"] == "bar" and sum(chart["points"]) > 0
    took = re.search(r"\((\d+) decisions\)", page.inner_text("#tile-p50"))
    # the ring's waiting steps, one by one, and the others
    assert took and int(took[1]) > ring_pending > 0
    assert "—" not in page.inner_text("#tile-p50 .v")
    assert int(page.inner_text("#tile-enforce .v").replace(",", "")) > 0


def _state(tab: Tab, action_id: str) -> str:
    return tab.page.inner_text(f'tr[data-action-id="{action_id}"] td.state .badge')


# -- the tests


def test_a_reviewer_works_a_ring_and_a_batch_from_the_pages(console: Console, tab: Tab) -> None:
    """The module's story, screen by screen, then the trail and the actions file."""
    cases = _cases(console.out)
    (ring,) = cases["lockstep_group"]
    batch = max(cases["batch_registration"], key=lambda c: c["pending"])
    throttle_of = {a.subject_id: a.action_id for a in ring["actions"] if a.action == "throttle"}
    reversed_, appealed, *excluded = sorted(throttle_of)[:4]
    held = next(a for a in batch["actions"] if a.action == "restrict_functions")
    page = tab.page

    _log_in(tab, console.base, "li")
    tab.shot("1-queue")
    page.keyboard.press("/")  # the search box, from the keyboard
    page.keyboard.type(appealed)  # a member's id, not the case's subject
    page.keyboard.press("Enter")
    _until_rows(tab, 1)
    assert page.get_attribute("#queue tr.case-row.selected", "data-case-id") == ring["case_id"]
    page.keyboard.press("Enter")  # opens the selected case

    page.wait_for_selector("#activity-chart")
    assert page.inner_text("#explanation") == ring["explanation"]
    activity = _chart(tab, "activity-chart")
    assert activity is not None and activity["type"] == "line"
    assert activity["points"][0] >= 1 and activity["flagged"] == ring["findings"]
    assert activity["width"] > 100 and activity["height"] > 100
    picture = _chart(tab, "picture-chart")  # the lockstep: a row per member, bars per round
    assert picture is not None and picture["labels"] == ring["size"] and sum(picture["points"])
    assert f"Members ({ring['size']})" in page.inner_text("#members-panel h2")
    assert page.locator(f'#members tr[data-member="{ring["members"][0]}"]').count() == 1
    assert "Chain intact" in page.inner_text("#chain-status")
    tab.shot("2-ring-case")

    _reverse_and_overturn(tab, throttle_of, reversed_, appealed)

    page.fill("#lookup-id", held.subject_id)  # a batch member's account, then its case
    page.press("#lookup-id", "Enter")
    page.wait_for_selector("#verdict")
    assert page.inner_text('#verdict tr[data-kind="follow"]').count("allowed") == 1
    tab.shot("3-account-before")
    page.click(f'#as-member tr[data-case-id="{batch["case_id"]}"] a')
    page.wait_for_selector("#activity-chart")
    assert _chart(tab, "activity-chart")["points"][0] == batch["findings"]
    _filter(tab, "actions", held.subject_id)
    approve = f'tr[data-action-id="{held.action_id}"] button[data-op="approve"]'
    page.dblclick(approve)  # a double click opens one dialog
    _reason(tab, "one of 219 sign-ups on 9 devices", double=True)  # and sends one decision
    _said(tab, "Approved restrict_functions: issued 1 action in force")
    tab.shot("4-batch-case")
    page.fill("#lookup-id", held.subject_id)
    page.press("#lookup-id", "Enter")
    page.wait_for_selector("#in-force tr[data-action-id]")  # the approved copy, in force now
    assert "limited" in page.inner_text('#verdict tr[data-kind="follow"]')
    tab.shot("5-account-after")

    _decide_excluding(tab, f"{console.base}/#/case/{ring['case_id']}", excluded, throttle_of)
    tab.shot("6-ring-decided")
    _read_overview(tab, ring["pending"])
    tab.shot("7-overview")

    session = page.evaluate("fetch('/api/session').then((r) => r.json())")
    decisions = [(url, headers) for url, headers in tab.posts if "/api/" in url]
    assert len(decisions) == 5  # reverse, appeal, overturn, one approval, the case
    assert all(h.get("x-csrf-token") == session["csrf_token"] for _, h in decisions)
    unsigned = page.evaluate("""fetch('/api/actions/x/reverse', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{"reason": "r"}'})
        .then((r) => r.status)""")
    assert unsigned == 403  # a page's request without the token is refused

    logged = console.stop()
    assert "Traceback" not in logged, logged
    verified = lockstep("audit", "verify", str(console.out / "audit.sqlite"))
    assert verified.returncode == 0, verified.stderr.decode()
    assert "chain intact" in verified.stdout.decode()
    lines = read_jsonl(console.out / "actions.jsonl")
    reverts = [a["params"]["reverts"] for a in lines if a["action"] == "revert"]
    assert sorted(reverts) == sorted(throttle_of[m] for m in (reversed_, appealed, *excluded))
    assert [a["params"].get("approves") for a in lines].count(held.action_id) == 1
    approvals = [b for k, _, b in _trail(console.out) if k == "decision"
                 and b["action_id"] == held.action_id]  # fmt: skip
    assert [(b["decision"], b["reviewer"]) for b in approvals] == [("approve", "li")]


def test_the_queue_filters_sorts_pages_and_keys(console: Console, tab: Tab) -> None:
    """Logged in with the review token: the filters and chips narrow the queue, sorts
    order it, pages bound it, and the keys move, open, go back, and approve a case."""
    page = tab.page
    every = httpx.get(f"{console.base}/api/cases", params={"page_size": 200},
                      headers={"Authorization": f"Bearer {TOKEN}"}).json()  # fmt: skip
    total = every["total"]
    _log_in(tab, console.base, token=TOKEN)
    assert page.inner_text("#who").startswith("review-token (reviewer")

    assert len(_rows(tab)) == total and f"{total} cases" in page.inner_text("#page-info")
    assert page.inner_text('#status-chips [data-status="all"] .n') == str(total)
    page.select_option("#filter-detector", "batch_registration")
    _until_url(tab, "detector=batch_registration")
    batches = [c["case_id"] for c in every["cases"] if "batch_registration" in c["detectors"]]
    _until_rows(tab, len(batches))
    assert sorted(_rows(tab)) == sorted(batches)
    page.select_option("#filter-detector", "")
    page.select_option("#filter-sort", "-size")
    _until_url(tab, "sort=-size")
    by_size = sorted(every["cases"], key=lambda c: c["size"], reverse=True)
    # waited for, not read at once: the unfiltered queue in the old order shows the same
    # count of rows while the sorted one is still on its way
    _until_cells(tab, "td:nth-child(7)", [str(c["size"]) for c in by_size])

    page.goto(f"{console.base}/#/cases?page_size=2")
    # the whole page count, not "Page 1 of" alone: the one-page queue before says that too
    _until(tab, "#page-info", f"Page 1 of {-(-total // 2)}")
    _until_rows(tab, 2)
    first = _rows(tab)
    page.keyboard.press("ArrowRight")
    _until(tab, "#page-info", "Page 2 of")
    assert not set(_rows(tab)) & set(first)
    tab.shot("queue-paged")

    page.goto(f"{console.base}/#/cases")
    _until_rows(tab, total)
    burst = next(c for c in every["cases"] if "follower_jump" in c["detectors"])
    at = _rows(tab).index(burst["case_id"])
    for key in ["ArrowUp"] * total + ["j"] * (at + 1) + ["k"]:  # to the top, then down to it
        page.keyboard.press(key)
    assert page.locator("#queue tr.case-row.selected").count() == 1
    assert page.get_attribute("#queue tr.case-row.selected", "data-case-id") == burst["case_id"]
    page.keyboard.press("Enter")
    page.wait_for_selector("#case-head")
    assert burst["subject_id"] in page.inner_text("#case-head h1")
    page.keyboard.press("u")
    page.wait_for_selector("#queue tr.case-row.selected")
    assert page.get_attribute("#queue tr.case-row.selected", "data-case-id") == burst["case_id"]
    waiting = int(page.inner_text('#status-chips [data-status="needs_review"] .n'))
    page.keyboard.press("a")  # approve the selected case, as one
    _reason(tab, "a bought burst: 244 fresh accounts in five minutes")
    _said(tab, "Case approved")
    _until(tab, '#status-chips [data-status="needs_review"] .n', str(waiting - 1), exact=True)
    row = page.inner_text(f'#queue tr[data-case-id="{burst["case_id"]}"]')
    assert "needs review" not in row


def test_a_viewer_reads_every_page_but_has_nothing_to_decide_with(
    console: Console, tab: Tab
) -> None:
    page = tab.page
    page.goto(console.base + "/")
    page.fill("#name", "vera")
    page.fill("#password", "not her password")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#login-error:not(:empty)")
    assert "wrong password" in page.inner_text("#login-error")
    tab.shot("login-refused")
    _log_in(tab, console.base, "vera")
    assert "read only" in page.inner_text("#who")
    (ring,) = _cases(console.out)["lockstep_group"]
    page.goto(f"{console.base}/#/case/{ring['case_id']}")
    page.wait_for_selector("#picture-chart")
    assert "viewer" in page.inner_text("main")
    assert page.locator("button[data-op], input.exclude, #decide-panel").count() == 0
    tab.shot("viewer-case")
    refused = page.evaluate(
        """async (action) => {
            const csrf = (await (await fetch('/api/session')).json()).csrf_token;
            const r = await fetch(`/api/actions/${action}/reverse`, {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf},
                body: '{"reason": "r"}'});
            return r.status;
        }""",
        next(a.action_id for a in ring["actions"] if a.action == "throttle"),
    )
    assert refused == 403
    page.click("#logout")
    page.wait_for_selector("#login")
    page.goto(console.base + "/#/overview")
    page.wait_for_selector("#login")  # the session ended: the login page stands in


def test_the_vendored_chart_library_is_the_one_recorded() -> None:
    """Chart.js is committed as its npm package's minified build (MIT), with its version,
    licence and checksum in vendor.json (`make vendor` fetches it again from npm)."""
    record = json.loads((VENDOR / "vendor.json").read_text())["chart.js"]
    built = (VENDOR / record["file"]).read_bytes()
    assert hashlib.sha256(built).hexdigest() == record["sha256"]
    assert re.search(rb"Chart\.js v" + re.escape(record["version"].encode()), built[:200])
    assert record["license"] == "MIT"
    assert "Permission is hereby granted" in (VENDOR / record["licence_file"]).read_text()
    page = (ROOT / "pipeline" / "console" / "static" / "index.html").read_text()
    assert f'src="/static/vendor/{record["file"]}"' in page
    assert "http://" not in page and "https://" not in page  # nothing from another site
