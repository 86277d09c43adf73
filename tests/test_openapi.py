"""The HTTP APIs describe themselves in OpenAPI, and keep to it on any input.

The real servers (`lockstep review serve`, `lockstep throttle serve`, `lockstep console`)
run on loopback;
schemathesis reads each one's GET /openapi.json and sends every operation requests made
from it, valid and invalid, and checks each answer: no 5xx, a status, content type,
headers and body the document gives, invalid input refused with a 4xx and valid input
not, and no traceback in the server's log. The review desk is tried with its token (and
schemathesis checks that the same request without it is refused) and without it (every
request but a GET of the document is a 401), and so is the console (but its login page and
login). Each router and its document list the same routes.

The run is deterministic (schemathesis's coverage cases, in order, then Hypothesis
derandomized, no example database) and bounded: MAX_EXAMPLES valid and MAX_EXAMPLES
invalid requests an operation beside its coverage cases (CONSOLE_EXAMPLES for the
console's many), the whole file in about 40 s.
schemathesis's own pytest plugin (`from_fixture`) is not used: it breaks on pytest 9.2.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from pipeline.contract.findings import Action
from pipeline.core.settings import ThrottleSettings, load_settings
from pipeline.enforcement.audit import open_audit
from pipeline.serve import review_api, throttle

SEED = 20260101
MAX_EXAMPLES = 25  # valid ones, then invalid ones, an operation (Hypothesis)
TOKEN = "openapi-desk-token"
NOW_MS = 1_767_229_200_000  # 2026-01-01T01:00:00Z, the hook's fixed clock
WEEK_MS = 7 * 24 * 3600 * 1000

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STRICT = [*CONFORMANCE, negative_data_rejection, positive_data_acceptance]


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `lockstep <api> serve` process on a loopback port, its stderr in a file."""

    def __init__(self, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.base = f"http://127.0.0.1:{(port := _port())}"
        self.log, self._seen = log, 0
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", *args, "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.base}/openapi.json")
                return
            except httpx.TransportError:
                assert self.proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)

    def logged(self) -> str:
        """What the server wrote to stderr since the last call."""
        text = self.log.read_bytes()[self._seen :]
        self._seen += len(text)
        return text.decode(errors="replace")

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        return self.logged()


def _config(server: Server) -> schemathesis.Config:
    statuses = ["400", "401", "404", "405", "409", "413", "422"]  # what the APIs refuse with
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "base-url": server.base,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        "checks": {
            "negative_data_rejection": {"expected-statuses": statuses},
            # valid, and yet: no such action, decided before, expiring, over the byte bound
            # (which no JSON schema can say), limited
            "positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "413",
                                                               "422", "429"]},
        },
    })  # fmt: skip


class Known:
    """Values the server holds for one parameter (which generated strings never are), so
    that requests reach past the look-up; put in only where the value was generated
    valid, so that an invalid one stays invalid."""

    def __init__(self, location: ParameterLocation, name: str, values: list[str]) -> None:
        self.location, self.name, self.values = location, name, values

    def _aimable(self, case: Case) -> dict[str, Any] | None:
        values = getattr(case, self.location.container_name) or {}
        negative = case.meta is not None and case.meta.is_negative_at(self.location)
        return values if self.name in values and not negative else None

    def hook(self) -> Callable[..., Any]:
        """A `flatmap_case` hook: the value as generated, or one of those known."""

        def flatmap_case(ctx: Any, case: Case) -> st.SearchStrategy[Case]:
            if (values := self._aimable(case)) is None:
                return st.just(case)

            def aimed(value: str | None) -> Case:
                if value is not None:
                    values[self.name] = value
                return case

            return st.sampled_from([None, *self.values]).map(aimed)

        return flatmap_case

    def aim(self, case: Case, turn: int) -> Case:
        """`case` with the `turn`th known value (in turn: deterministic)."""
        if (values := self._aimable(case)) is not None:
            values[self.name] = self.values[turn % len(self.values)]
        return case


class KnownAll:
    """Several parameters' known values, aimed at together."""

    def __init__(self, *known: Known) -> None:
        self.known = known

    def hook(self) -> Callable[..., Any]:
        hooks = [k.hook() for k in self.known]

        def flatmap_case(ctx: Any, case: Case) -> st.SearchStrategy[Case]:
            strategy = st.just(case)
            for each in hooks:
                strategy = strategy.flatmap(lambda c, each=each: each(ctx, c))
            return strategy

        return flatmap_case

    def aim(self, case: Case, turn: int) -> Case:
        for k in self.known:
            k.aim(case, turn)
        return case


def _served(server: Server, known: Known | KnownAll) -> Any:
    """The schema the server serves, loaded by schemathesis from its /openapi.json."""
    schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json", config=_config(server))
    schema.hook(known.hook())
    return schema


HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _documented(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path) of every operation, in the document's order (the desk's: decisions
    before the reversals that end them)."""
    return [(method, path) for path, item in document["paths"].items()
            for method in item if method in HTTP_METHODS]  # fmt: skip


def _operations(document: dict[str, Any]) -> list[str]:
    return [f"{method.upper()} {path}" for method, path in _documented(document)]


def _fuzz(
    schema: Any,
    operation: str,
    known: Known | KnownAll,
    test: Callable[[Case], None],
    examples: int = MAX_EXAMPLES,
) -> None:
    """`test` on the requests schemathesis makes for `operation` ("POST /v1/appeals"), the
    same on every run: its coverage cases (each boundary and each way to be invalid, other
    methods included), then MAX_EXAMPLES invalid ones (if it takes any input) and
    MAX_EXAMPLES valid ones from Hypothesis. Invalid ones first: a valid decision uses
    up its action (a second is a 409), an invalid one must not."""
    method, path = operation.split(" ", 1)
    api_operation = schema[path][method]
    coverage = schema.iter_coverage_cases(
        api_operation,
        generation_modes=list(GenerationMode),
        generation_config=schema.config.generation_for(operation=api_operation),
    )
    for turn, case in enumerate(sorted(coverage, key=lambda c: c.meta.generation.mode.is_positive)):
        test(known.aim(case, turn))
    takes = schema.raw_schema["paths"][path][method.lower()].keys() & {"parameters", "requestBody"}
    for mode in (GenerationMode.NEGATIVE, GenerationMode.POSITIVE)[0 if takes else 1 :]:
        strategy = api_operation.as_strategy(generation_mode=mode)

        @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=strategy)
        def each(case: Case) -> None:
            test(case)

        each()


def _no_traceback(server: Server) -> None:
    logged = server.logged()
    assert "Traceback" not in logged, logged


# The review desk over a run's outputs: held actions to approve, reject, appeal, reverse.


def _action(action_id: str, measure: str, mode: str, lasts_ms: int | None = WEEK_MS) -> Action:
    now = int(time.time() * 1000)
    return Action(action_id=action_id, action=measure, subject_type="account",
                  subject_id=f"u-{action_id}", basis=["18", "19"], finding_ids=["f1"],
                  mode=mode, ts=now, expires_at=None if lasts_ms is None else now + lasts_ms,
                  params={"rule": "r"})  # type: ignore[arg-type]  # fmt: skip


# The ids the desk holds include the document's example and the shortest strings, which
# schemathesis's coverage cases use, so that their bodies reach a real action.
EXAMPLE = review_api.document()["components"]["parameters"]["ActionId"]["example"]
HELD = [
    _action(EXAMPLE, "restrict_functions", "review"),
    _action("0", "suspend_updates", "review"),
    _action("00", "warn", "enforce", lasts_ms=None),
    _action("h1", "human_review", "enforce", lasts_ms=None),
    _action("z1", "restrict_functions", "review", lasts_ms=0),  # approving it is a 422
]
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    out = tmp_path_factory.mktemp("desk")
    (out / "actions.jsonl").write_bytes(b"".join(msgspec.json.encode(a) + b"\n" for a in HELD))
    trail = open_audit(str(out / "audit.sqlite"))
    trail.append("action", HELD, "action_id")
    trail.close()
    env = {**os.environ, "LOCKSTEP_REVIEW_TOKEN": TOKEN}
    server = Server(out / "stderr.log", "review", "serve", "--out", str(out), env=env)
    yield server
    assert "Traceback" not in server.stop()


DESK_KNOWN = Known(ParameterLocation.PATH, "action_id", [a.action_id for a in HELD])


@pytest.fixture(scope="module")
def desk_schema(desk: Server) -> Any:
    return _served(desk, DESK_KNOWN)


DESK_OPERATIONS = _operations(review_api.document())


@pytest.mark.parametrize("operation", DESK_OPERATIONS)
def test_the_review_desk_keeps_to_its_document_with_the_token(
    desk: Server, desk_schema: Any, operation: str
) -> None:
    def test(case: Case) -> None:
        case.call_and_validate(headers=AUTH, checks=[*STRICT, ignored_auth])
        _no_traceback(desk)

    _fuzz(desk_schema, operation, DESK_KNOWN, test)


@pytest.mark.parametrize("operation", DESK_OPERATIONS)
def test_the_review_desk_refuses_every_request_without_the_token(
    desk: Server, desk_schema: Any, operation: str
) -> None:
    def test(case: Case) -> None:
        case.headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        answer = case.call_and_validate(checks=CONFORMANCE)
        document = case.method == "GET" and case.operation.path == "/openapi.json"
        assert answer.status_code == (200 if document else 401), answer.text
        _no_traceback(desk)

    _fuzz(desk_schema, operation, DESK_KNOWN, test)


# The throttling hook, at a fixed time, over an actions file that limits two accounts.

HOOK_KNOWN = Known(ParameterLocation.QUERY, "account_id", ["bot1", "closed"])


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("hook")
    throttled = Action(action_id="t1", action="throttle", subject_type="account",
                       subject_id="bot1", basis=["18"], finding_ids=["f1"], mode="enforce",
                       ts=NOW_MS, expires_at=NOW_MS + WEEK_MS,
                       params={"descriptors": [{"key": "account_id", "value": "bot1"},
                                              {"key": "action", "value": "follow"}],
                               "requests_per_unit": 2, "unit": "hour"})  # fmt: skip
    closed = Action(action_id="c1", action="close_account", subject_type="account",
                    subject_id="closed", basis=["18"], finding_ids=["f1"], mode="enforce",
                    ts=NOW_MS)  # fmt: skip
    actions = work / "actions.jsonl"
    actions.write_bytes(b"".join(msgspec.json.encode(a) + b"\n" for a in (throttled, closed)))
    config = work / "hook.yaml"
    config.write_text("throttle:\n  max_descriptors: 8\n  max_body_bytes: 4096\n")
    server = Server(work / "stderr.log", "throttle", "serve", "--actions", str(actions),
                    "--now", "2026-01-01T01:00:00", "--config", str(config))  # fmt: skip
    yield server
    assert "Traceback" not in server.stop()


@pytest.fixture(scope="module")
def hook_schema(hook: Server) -> Any:
    return _served(hook, HOOK_KNOWN)


@pytest.mark.parametrize("operation", _operations(throttle.document(load_settings(None).throttle)))
def test_the_throttling_hook_keeps_to_its_document(
    hook: Server, hook_schema: Any, operation: str
) -> None:
    def test(case: Case) -> None:
        case.call_and_validate(checks=STRICT)
        _no_traceback(hook)

    _fuzz(hook_schema, operation, HOOK_KNOWN, test)


def test_each_server_serves_its_document_the_hooks_with_the_bounds_it_runs_with(
    desk: Server, hook: Server
) -> None:
    assert httpx.get(f"{desk.base}/openapi.json").json() == review_api.document()
    document = httpx.get(f"{hook.base}/openapi.json").json()
    assert document == throttle.document(ThrottleSettings(max_descriptors=8, max_body_bytes=4096))
    request = document["components"]["schemas"]["RateLimitRequest"]
    assert request["properties"]["descriptors"]["maxItems"] == 8
    assert document["paths"]["/v1/ratelimit"]["post"]["requestBody"]["x-max-body-bytes"] == 4096


# The console over a run's outputs: a ring whose members' measures are held, an account
# warned and appealing, all in the findings, the actions and the trail.

CONSOLE_EXAMPLES = 5  # valid ones, then invalid ones, an operation: the console has many


def _console_outputs(out: Path) -> KnownAll:
    """A run's outputs in `out`, consistent in its files and its trail; the values its
    requests can name."""
    from pipeline.console.cases import case_id
    from pipeline.contract.findings import make_finding
    from pipeline.serve.review_api import Appeal

    now = int(time.time() * 1000)
    ring = make_finding(
        detector="lockstep_group", article="18(4)", subject_type="group", subject_id="ring-1",
        window_start=now - 600_000, window_end=now, score=0.9, severity="high",
        members=["m1", "m2", "m3"], evidence={"target": "star", "members": 3, "explanation":
        "3 accounts acted together", "rounds": [{"content_id": "p1", "start": now - 600_000,
        "end": now - 300_000, "actors": 3, "members": 3}]},
    )  # fmt: skip
    burst = make_finding(
        detector="follower_jump", article="12", subject_type="account", subject_id="star",
        window_start=now - 300_000, window_end=now, score=0.97, severity="critical",
        members=["b1", "b2"], evidence={"observed": 300, "expected": 2.0, "explanation": "300"},
    )  # fmt: skip

    def action(action_id: str, measure: str, mode: str, finding: Any, subject: str) -> Action:
        lasts = measure == "restrict_functions"  # the others do not expire
        return Action(action_id=action_id, action=measure, subject_type="account",
                      subject_id=subject, basis=["18", "19"], finding_ids=[finding.finding_id],
                      mode=mode, ts=now, expires_at=now + WEEK_MS if lasts else None,
                      params={"rule": "r"})  # type: ignore[arg-type]  # fmt: skip

    actions = [action(f"r-{m}", "restrict_functions", "review", ring, m) for m in ring.members]
    actions += [action(f"h-{m}", "human_review", "review", ring, m) for m in ring.members]
    actions += [action("w-star", "warn", "enforce", burst, "star"),
                action("h-star", "human_review", "enforce", burst, "star")]  # fmt: skip
    appeal = Appeal(appeal_id="ap-star", action_id="w-star", appellant="star", reason="mine",
                    ts=now)  # fmt: skip
    (out / "findings.jsonl").write_bytes(
        b"".join(msgspec.json.encode(f) + b"\n" for f in (ring, burst))
    )
    (out / "actions.jsonl").write_bytes(b"".join(msgspec.json.encode(a) + b"\n" for a in actions))
    trail = open_audit(str(out / "audit.sqlite"))
    trail.append("finding", [ring, burst], "finding_id")
    trail.append("action", actions, "action_id")
    trail.append("appeal", [appeal], "appeal_id")
    trail.close()
    cases = [
        case_id("group", "ring-1", ring.finding_id),
        case_id("account", "star", burst.finding_id),
    ]
    return KnownAll(
        Known(ParameterLocation.PATH, "case_id", cases),
        Known(ParameterLocation.PATH, "action_id", [a.action_id for a in actions]),
        Known(ParameterLocation.PATH, "appeal_id", ["ap-star"]),
        Known(ParameterLocation.PATH, "account_id", ["star", "m1", "b1"]),
    )


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, KnownAll]]:
    out = tmp_path_factory.mktemp("console")
    known = _console_outputs(out)
    env = {**os.environ, "LOCKSTEP_REVIEW_TOKEN": TOKEN}
    server = Server(out / "stderr.log", "console", "--out", str(out), env=env)
    yield server, known
    assert "Traceback" not in server.stop()


@pytest.fixture(scope="module")
def console_schema(console: tuple[Server, KnownAll]) -> Any:
    return _served(*console)


def _console_document() -> dict[str, Any]:
    from pipeline.console.api import document

    return document(load_settings(None))


CONSOLE_OPERATIONS = _operations(_console_document())
CONSOLE_PUBLIC = {"GET /openapi.json": [200], "GET /login": [200],
                  "POST /login": [400, 401, 413]}  # fmt: skip


@pytest.mark.parametrize("operation", CONSOLE_OPERATIONS)
def test_the_console_keeps_to_its_document_with_the_token(
    console: tuple[Server, KnownAll], console_schema: Any, operation: str
) -> None:
    """A login is refused (401) to every generated credential: valid, yet not accepted."""
    server, known = console
    checks = [c for c in STRICT if operation != "POST /login" or c is not positive_data_acceptance]

    def test(case: Case) -> None:
        case.call_and_validate(headers=AUTH, checks=[*checks, ignored_auth])
        _no_traceback(server)

    _fuzz(console_schema, operation, known, test, CONSOLE_EXAMPLES)


@pytest.mark.parametrize("operation", CONSOLE_OPERATIONS)
def test_the_console_refuses_every_request_without_a_login(
    console: tuple[Server, KnownAll], console_schema: Any, operation: str
) -> None:
    server, known = console

    def test(case: Case) -> None:
        case.headers = {k: v for k, v in (case.headers or {}).items() if k != "Authorization"}
        answer = case.call_and_validate(checks=CONFORMANCE)
        public = CONSOLE_PUBLIC.get(f"{case.method} {case.operation.path}", [401])
        assert answer.status_code in public, answer.text
        _no_traceback(server)

    _fuzz(console_schema, operation, known, test, CONSOLE_EXAMPLES)


def test_the_console_serves_its_document(console: tuple[Server, KnownAll]) -> None:
    assert httpx.get(f"{console[0].base}/openapi.json").json() == _console_document()


# The documents cannot drift from the routers.


def _routes(application: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route, but the HEAD aiohttp adds beside each GET."""
    return {
        (route.method.lower(), route.resource.canonical)
        for route in application.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def test_every_route_is_documented_and_every_documented_route_is_served(tmp_path: Path) -> None:
    trail = open_audit(str(tmp_path / "audit.sqlite"))
    desk = review_api.app(review_api.Reviews(trail, lambda actions: None), TOKEN)
    assert _routes(desk) == set(_documented(review_api.document()))
    trail.close()
    from pipeline.console.api import console_app
    from pipeline.enforcement.policy import load_policy

    (tmp_path / "findings.jsonl").write_bytes(b"")
    settings = load_settings(None)
    console = console_app(tmp_path, str(tmp_path / "audit.sqlite"), settings, load_policy(), TOKEN)
    assert _routes(console) == set(_documented(_console_document()))
    limits = load_settings(None).throttle
    table = throttle.ThrottleTable()
    hook = throttle.app(table, time.time, throttle.ThrottleMetrics(table), settings=limits)
    assert _routes(hook) == set(_documented(throttle.document(limits)))
