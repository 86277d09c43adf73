"""The throttling hook: throttles count requests per unit (of the units table) and answer
429 with Retry-After beyond; the measures that block (as the measures table says, and no
other) limit every action until they expire; shadow and review actions limit nobody; a
revert lifts; a real server answers over HTTP, Envoy style too, and takes in actions
appended while it runs. What the hook cannot trust it says: a line that is not a valid
action is refused with its reason, an actions file it cannot read makes it answer 503
(never a stale "not limited"), a file replaced or rewritten is read again, and a request
too large or malformed is a 4xx with a JSON error."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import get_args

import httpx
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from pipeline.contract.findings import Action, InvalidAction, TimeUnit, read_action
from pipeline.enforcement.measures import BLOCKING, MEASURES, UNIT_S
from pipeline.serve.throttle import ActionsFile, ThrottleMetrics, ThrottleTable, app

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


def test_a_measure_that_expired_at_the_epoch_limits_no_one() -> None:
    """`expires_at` 0 is a time (1970), long past: not "for good", which only null means."""
    expired = msgspec.structs.replace(_throttle("t", per_unit=1), expires_at=0)
    table = ThrottleTable()
    table.apply([
        _action("close_account", "epoch", expires_at=0),
        _action("close_account", "for-good", expires_at=None),
        expired,
    ])  # fmt: skip
    assert table.check("epoch", "follow", NOW) is None
    assert table.check("for-good", "follow", NOW)[1] == float("inf")
    assert [table.check("t", "follow", NOW + i) for i in range(3)] == [None] * 3


def test_every_measure_that_blocks_limits_every_action_and_no_other_measure_does() -> None:
    table = ThrottleTable()
    discount = {"engagement": {}, "window_start": 0, "window_end": 1, "from_accounts": []}
    table.apply([
        _action(name, name, params={"discount": discount} if name == "discount_engagement" else {})
        for name in MEASURES
        if name not in ("throttle", "revert")
    ])  # fmt: skip
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


@contextmanager
def _hook(actions: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`lockstep throttle serve` on `actions` as of NOW: its base URL, once it answers."""
    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "throttle", "serve", "--actions", str(actions),
         "--port", str(port), "--now", "2026-01-01T01:00:00", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the hook never answered"
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the hook never got there"
        time.sleep(0.1)


def _line(action: Action) -> bytes:
    return msgspec.json.encode(action) + b"\n"


def _status(base: str, account: str) -> int:
    return httpx.get(f"{base}/v1/throttle", params={"account_id": account}).status_code


def _metrics(base: str) -> dict[str, float]:
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in httpx.get(f"{base}/metrics").text.splitlines()
        if line.startswith("lockstep_throttle_")
    }


def _descriptor(account: str, action: str = "follow") -> dict:
    return {
        "entries": [{"key": "account_id", "value": account}, {"key": "action", "value": action}]
    }


def test_the_server_answers_over_http_and_follows_new_actions(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_line(_throttle("bot1", per_unit=2)))
    with _hook(actions) as (base, _):
        assert httpx.get(f"{base}/healthz").json() == {"ok": True}
        ask = {"account_id": "bot1", "action": "follow"}
        codes = [httpx.get(f"{base}/v1/throttle", params=ask).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        over = httpx.get(f"{base}/v1/throttle", params=ask)
        assert over.headers["Retry-After"] == "3600" and over.json()["reason"] == "throttle"
        assert httpx.get(f"{base}/v1/throttle", params={"account_id": "x"}).json() == {
            "limited": False
        }
        assert httpx.get(f"{base}/v1/throttle").status_code == 400
        envoy = {"descriptors": [_descriptor("bot1")]}
        assert httpx.post(f"{base}/v1/ratelimit", json=envoy).json()["overall_code"] == "OVER_LIMIT"
        with open(actions, "ab") as handle:  # a new measure, appended while it runs
            handle.write(b'{"not": "an action"}\n')  # skipped and counted, not fatal
            handle.write(json.dumps(msgspec.to_builtins(_action("close_account", "late"))).encode())
            handle.write(b"\n")
        _until(lambda: _status(base, "late") == 429)
        seen = _metrics(base)
        assert seen['lockstep_throttle_checks_total{reason="throttle",verdict="limited"}'] == 3
        assert seen['lockstep_throttle_checks_total{reason="",verdict="allowed"}'] >= 3  # + polls
        assert seen['lockstep_throttle_checks_total{reason="close_account",verdict="limited"}'] >= 1
        assert seen["lockstep_throttle_refused_lines_total"] == 1
        assert seen["lockstep_throttle_limits"] == 2  # (bot1, follow) and (late, *)
        assert seen["lockstep_throttle_actions_applied"] == 2
        assert seen["lockstep_throttle_check_seconds_count"] >= 7


def _with_params(action: Action, **params: object) -> bytes:
    """`action` as a line, its params changed as a writer gone wrong might."""
    record = msgspec.to_builtins(action)
    record["params"].update(params)
    return json.dumps(record).encode() + b"\n"


BAD_PARAMS = {  # what the reason names -> a line that decodes, with params gone wrong
    "`$.params.descriptors`": _with_params(_throttle("bot9"), descriptors="follow"),
    "`$.params.requests_per_unit`": _with_params(_throttle("bot9"), requests_per_unit="3"),
    "`$.params.unit`": _with_params(_throttle("bot9"), unit=["hour"]),
    "`$.params.reverts`": _with_params(
        _action("revert", "early", params={"reverts": "x"}), reverts=["close_account-early-enforce"]
    ),
    "nested too deeply": _line(_action("warn", "bot9", params={"rule": "r"})).replace(
        b'"r"', b"[" * 2000 + b"]" * 2000
    ),
}


def test_an_action_is_read_only_with_the_params_its_measure_needs() -> None:
    for reason, line in BAD_PARAMS.items():
        with pytest.raises(InvalidAction, match=re.escape(reason)):
            read_action(line)
    for unit in UNIT_S:  # every unit the hook counts in is one an action may name
        assert read_action(_line(_throttle("a", unit=unit))) == _throttle("a", unit=unit)
    assert set(get_args(TimeUnit)) == set(UNIT_S)
    with pytest.raises(ValueError, match="requests_per_unit"):
        _throttle("a", per_unit=0)  # an action made, not only read, is checked the same


def test_a_line_with_bad_params_is_refused_logged_and_counted_and_never_stops_the_hook(
    tmp_path: Path,
) -> None:
    actions = tmp_path / "actions.jsonl"
    refused = {**BAD_PARAMS, "'close_acount' is not a measure": _line(_action("close_acount", "x"))}
    lines = list(refused.values())
    actions.write_bytes(lines[0] + _line(_action("close_account", "early")))  # at start-up
    with _hook(actions) as (base, proc):
        assert _status(base, "early") == 429
        with open(actions, "ab") as handle:  # and while followed
            handle.write(b"".join(lines[1:]) + _line(_action("close_account", "late")))
        _until(lambda: _status(base, "late") == 429)
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert _metrics(base)["lockstep_throttle_refused_lines_total"] == len(lines)
        assert _status(base, "bot9") == 200 and _status(base, "early") == 429  # none applied
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert "Traceback" not in log
    refusals = [line for line in log.splitlines() if "refused line" in line]
    for number, reason, refusal in zip((1, 3, 4, 5, 6, 7), refused, refusals, strict=True):
        assert f"refused line {number} of" in refusal and reason in refusal, refusal


def test_a_hook_that_cannot_read_its_actions_says_so_until_it_can_again(tmp_path: Path) -> None:
    actions, aside = tmp_path / "actions.jsonl", tmp_path / "aside.jsonl"
    actions.write_bytes(_line(_action("close_account", "closed")))
    with _hook(actions) as (base, _):
        assert _status(base, "closed") == 429
        actions.rename(aside)
        actions.mkdir()  # the path is there, but cannot be read as a file
        _until(lambda: httpx.get(f"{base}/healthz").status_code == 503)
        check = httpx.get(f"{base}/v1/throttle", params={"account_id": "anyone"})
        assert check.status_code == 503 and "actions" in check.json()["error"]
        envoy = httpx.post(f"{base}/v1/ratelimit", json={"descriptors": [_descriptor("anyone")]})
        assert envoy.status_code == 503 and "actions" in envoy.json()["error"]
        actions.rmdir()
        aside.rename(actions)
        _until(lambda: httpx.get(f"{base}/healthz").status_code == 200)
        assert _status(base, "closed") == 429 and _status(base, "anyone") == 200


def test_a_replaced_or_rewritten_actions_file_is_read_again_from_the_start(
    tmp_path: Path,
) -> None:
    actions, fresh = tmp_path / "actions.jsonl", tmp_path / "fresh.jsonl"
    actions.write_bytes(_line(_action("close_account", "first")) + _line(_action("warn", "x")) * 4)
    with _hook(actions) as (base, _):
        assert _status(base, "first") == 429
        fresh.write_bytes(_line(_action("close_account", "second")))  # a new, shorter file
        os.replace(fresh, actions)
        _until(lambda: _status(base, "second") == 429)
        assert _status(base, "first") == 200
        rewritten = _line(_action("close_account", "third")) + _line(_action("warn", "y")) * 4
        with open(actions, "r+b") as handle:  # the same file, rewritten and no shorter
            handle.write(rewritten)
        _until(lambda: _status(base, "third") == 429)
        assert _status(base, "second") == 200
        assert _metrics(base)["lockstep_throttle_limits"] == 1


def test_a_ratelimit_request_is_bounded_in_descriptors_and_bytes(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_line(_action("close_account", "closed")))
    with _hook(actions) as (base, _):  # the shipped defaults: 64 descriptors, 64 KiB
        url = f"{base}/v1/ratelimit"
        most = httpx.post(url, json={"descriptors": [_descriptor("closed")] * 64})
        assert most.json()["overall_code"] == "OVER_LIMIT" and len(most.json()["statuses"]) == 64
        many = httpx.post(url, json={"descriptors": [_descriptor("closed")] * 65})
        assert many.status_code == 413 and "64" in many.json()["error"]
        flood = httpx.post(url, json={"descriptors": [_descriptor("closed")] * 8192})
        assert flood.status_code == 413 and flood.json()["error"]
        big = httpx.post(url, json={"descriptors": [_descriptor("x" * 70_000)]})
        assert big.status_code == 413 and "bytes" in big.json()["error"]
    config = tmp_path / "hook.yaml"
    config.write_text("throttle:\n  max_descriptors: 2\n")
    with _hook(actions, "--config", str(config)) as (base, _):
        three = httpx.post(f"{base}/v1/ratelimit", json={"descriptors": [_descriptor("a")] * 3})
        assert three.status_code == 413 and "2" in three.json()["error"]


def test_a_malformed_ratelimit_request_is_a_400_with_a_json_error(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_line(_action("close_account", "closed")))
    plain = {"Content-Type": "application/json"}
    with _hook(actions) as (base, proc):
        for body, headers in (
            (b'{"descriptors": ' + b"[" * 1000 + b"]" * 1000 + b"}", plain),
            (b'{"descriptors": [' + b"[" * 1000 + b"]" * 1000 + b"]}", plain),
            (b'{"domain": ' + b"[" * 1000 + b"]" * 1000 + b', "descriptors": []}', plain),
            (json.dumps({"descriptors": [_descriptor("closed")]}).encode(),
             {"Content-Type": "application/json; charset=bogus"}),
            (b'{"descriptors": [', plain),
            (b'{"descriptors": "closed"}', plain),
            (b'{"descriptors": [{"entries": [{"key": "action", "value": "follow"}]}]}', plain),
            (b'{"descriptors": [{"entries": [{"key": "account_id", "value": 7}]}]}', plain),
        ):  # fmt: skip
            answer = httpx.post(f"{base}/v1/ratelimit", content=body, headers=headers)
            assert answer.status_code == 400 and answer.json()["error"], body[:60]
        assert _status(base, "closed") == 429  # still serving
    assert "Traceback" not in proc.stderr.read().decode()  # type: ignore[union-attr]


def test_if_following_stops_the_hook_says_so_rather_than_answer_from_a_stale_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_line(_action("close_account", "closed")))
    table = ThrottleTable()
    metrics = ThrottleMetrics(table)
    follower = ActionsFile(str(actions), table, metrics)

    def broken(taken: list[Action]) -> None:
        raise RuntimeError("a bug while taking actions in")

    async def exercise() -> tuple[int, httpx.Response, str]:
        server = TestServer(app(table, lambda: NOW, metrics, actions=follower), host="127.0.0.1")
        async with server, httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
            closed = (await client.get("/v1/throttle", params={"account_id": "closed"})).status_code
            monkeypatch.setattr(table, "apply", broken)
            with open(actions, "ab") as handle:
                handle.write(_line(_action("close_account", "late")))
            deadline = time.monotonic() + 10
            while (await client.get("/healthz")).status_code != 503:
                assert time.monotonic() < deadline, "the hook still says it is healthy"
                await asyncio.sleep(0.1)
            check = await client.get("/v1/throttle", params={"account_id": "anyone"})
            return closed, check, (await client.get("/metrics")).text

    closed, check, scrape = asyncio.run(exercise())
    assert closed == 429
    assert check.status_code == 503 and "stopped following" in check.json()["error"]
    assert "lockstep_throttle_actions_readable 0.0" in scrape
    assert "RuntimeError: a bug while taking actions in" in capsys.readouterr().err


# Found by schemathesis against the hook's OpenAPI document (tests/test_openapi.py): a
# path or method it does not serve was answered in text, not in the documented JSON, and
# a request aiohttp cannot parse (a NUL in a header) logged a traceback, as for a bug.


def test_a_path_or_method_the_hook_does_not_serve_is_a_json_404_or_405() -> None:
    table = ThrottleTable()

    async def exercise() -> list[httpx.Response]:
        server = TestServer(app(table, lambda: NOW, ThrottleMetrics(table)), host="127.0.0.1")
        async with server, httpx.AsyncClient(base_url=str(server.make_url(""))) as client:
            return [await client.get("/v1/nothing"), await client.request("TRACE", "/v1/throttle")]

    missing, method = asyncio.run(exercise())
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}
    assert method.status_code == 405 and method.json() == {"error": "Method Not Allowed"}
    assert method.headers["Allow"] == "GET,HEAD"


def test_a_request_the_hook_cannot_parse_is_a_400_logged_in_one_line(tmp_path: Path) -> None:
    actions = tmp_path / "actions.jsonl"
    actions.write_bytes(_line(_action("close_account", "closed")))
    with _hook(actions) as (base, proc):
        host, port = base.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"GET /v1/throttle HTTP/1.1\r\nHost: x\r\nX-Null: \x00\r\n\r\n")
            answer = conn.recv(4096)
        assert answer.split(b"\r\n")[0].endswith(b" 400 Bad Request")
        assert _status(base, "closed") == 429  # still serving
    log = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert "Traceback" not in log
    (line,) = [line for line in log.splitlines() if "cannot parse" in line]
    assert "refused a request it cannot parse from 127.0.0.1: Invalid header value char" in line
