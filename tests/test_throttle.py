"""The throttling hook: throttles count requests per unit (of the units table) and answer
429 with Retry-After beyond; the measures that block (as the measures table says, and no
other) limit every action until they expire; shadow and review actions limit nobody; a
revert lifts; a real server answers over HTTP, Envoy style too, and takes in actions
appended while it runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

from pipeline.contract.findings import Action
from pipeline.enforcement.measures import BLOCKING, MEASURES, UNIT_S
from pipeline.serve.throttle import ThrottleTable

NOW = 1_767_229_200.0  # seconds; 2026-01-01T01:00:00Z


def _action(action: str, account: str, mode: str = "enforce", **kw) -> Action:
    params = kw.pop("params", {})
    return Action(
        action_id=f"{action}-{account}-{mode}",
        action=action,
        subject_type="account",
        subject_id=account,
        basis=["18", "19"],
        finding_ids=["f1"],
        mode=mode,  # type: ignore[arg-type]
        ts=int(NOW * 1000),
        expires_at=kw.pop("expires_at", None),
        params=params,
    )


def _throttle(account: str, per_unit: int = 3, mode: str = "enforce", unit: str = "hour") -> Action:
    return _action(
        "throttle",
        account,
        mode,
        expires_at=int((NOW + 86400) * 1000),
        params={
            "descriptors": [
                {"key": "account_id", "value": account},
                {"key": "action", "value": "follow"},
            ],
            "requests_per_unit": per_unit,
            "unit": unit,
        },
    )


def test_a_throttle_counts_per_unit_and_names_when_it_lets_go() -> None:
    table = ThrottleTable()
    table.apply([_throttle("bot1"), _throttle("shadowed", mode="shadow")])
    assert [table.check("bot1", "follow", NOW + i) for i in range(3)] == [None] * 3
    limit, wait = table.check("bot1", "follow", NOW + 10)
    assert limit.kind == "throttle" and wait == 3600 - 10  # the end of this hour
    assert table.check("bot1", "comment", NOW) is None  # only follows are throttled
    assert table.check("bot1", "follow", NOW + 3600) is None  # a new hour
    assert table.check("shadowed", "follow", NOW) is None  # shadow: recorded, not applied
    assert table.check("bot1", "follow", NOW + 86400 + 1) is None  # expired


def test_blocking_measures_limit_everything_until_they_expire_or_are_reverted() -> None:
    table = ThrottleTable()
    table.apply([
        _action("restrict_functions", "a", expires_at=int((NOW + 60) * 1000)),
        _action("close_account", "b"),
        _action("warn", "c"),
        _action("suspend_updates", "d", mode="review"),
    ])  # fmt: skip
    assert table.check("a", "comment", NOW)[1] == 60
    assert table.check("a", "comment", NOW + 61) is None
    assert table.check("b", "follow", NOW)[0].kind == "close_account"
    assert table.check("c", "follow", NOW) is None and table.check("d", "follow", NOW) is None
    revert = _action("revert", "b", params={"reverts": "close_account-b-enforce"})
    table.apply([revert])
    assert table.check("b", "follow", NOW) is None


def test_every_measure_that_blocks_limits_every_action_and_no_other_measure_does() -> None:
    table = ThrottleTable()
    table.apply([_action(name, name) for name in MEASURES if name not in ("throttle", "revert")])
    limited = {name for name in MEASURES if table.check(name, "comment", NOW) is not None}
    assert limited == BLOCKING == {
        "restrict_functions", "suspend_updates", "close_account", "blacklist", "ban_reregistration"
    }  # fmt: skip
    assert all(table.check(name, "follow", NOW)[0].kind == name for name in BLOCKING)


def test_a_throttle_counts_in_the_unit_it_names() -> None:
    for unit, seconds in UNIT_S.items():
        table = ThrottleTable()
        table.apply([_throttle("bot1", per_unit=1, unit=unit)])
        start = NOW // seconds * seconds  # the start of the unit NOW is in
        assert table.check("bot1", "follow", start) is None
        assert table.check("bot1", "follow", start)[1] == seconds, unit
        assert table.check("bot1", "follow", start + seconds) is None, unit


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_server_answers_over_http_and_follows_new_actions(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(msgspec.json.encode(_throttle("bot1", per_unit=2)) + b"\n")
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "throttle", "serve", "--actions", str(actions),
         "--port", str(port), "--now", "2026-01-01T01:00:00"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz").raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.2)
        ask = {"account_id": "bot1", "action": "follow"}
        codes = [httpx.get(f"{base}/v1/throttle", params=ask).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        over = httpx.get(f"{base}/v1/throttle", params=ask)
        assert over.headers["Retry-After"] == "3600" and over.json()["reason"] == "throttle"
        assert httpx.get(f"{base}/v1/throttle", params={"account_id": "x"}).json() == {
            "limited": False
        }
        assert httpx.get(f"{base}/v1/throttle").status_code == 400
        envoy = {"descriptors": [{"entries": [{"key": "account_id", "value": "bot1"},
                                              {"key": "action", "value": "follow"}]}]}  # fmt: skip
        assert httpx.post(f"{base}/v1/ratelimit", json=envoy).json()["overall_code"] == "OVER_LIMIT"
        with open(actions, "ab") as handle:  # a new measure, appended while it runs
            handle.write(b'{"not": "an action"}\n')  # skipped and counted, not fatal
            handle.write(json.dumps(msgspec.to_builtins(_action("close_account", "late"))).encode())
            handle.write(b"\n")
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/v1/throttle", params={"account_id": "late"}).status_code != 429:
            assert time.monotonic() < deadline, "the appended action was not taken in"
            time.sleep(0.2)
        scrape = httpx.get(f"{base}/metrics").text
        seen = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in scrape.splitlines()
            if line.startswith("lockstep_throttle_")
        }
        assert seen['lockstep_throttle_checks_total{reason="throttle",verdict="limited"}'] == 3
        assert seen['lockstep_throttle_checks_total{reason="",verdict="allowed"}'] >= 3  # + polls
        assert seen['lockstep_throttle_checks_total{reason="close_account",verdict="limited"}'] >= 1
        assert seen["lockstep_throttle_refused_lines_total"] == 1
        assert seen["lockstep_throttle_limits"] == 2  # (bot1, follow) and (late, *)
        assert seen["lockstep_throttle_actions_applied"] == 2
        assert seen["lockstep_throttle_check_seconds_count"] >= 7
    finally:
        proc.terminate()
        proc.wait(timeout=10)
