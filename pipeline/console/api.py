"""The console's HTTP server: a JSON API under /api/ over a run's outputs, its login, and the
place its pages and assets are served from (`static/`, at / and /static/).

    GET  /api/cases?q=&detector=&article=&severity=&mode=&status=&sort=&page=&page_size=
                                            a page of the case queue, with counts per status
    GET  /api/cases/{case_id}               everything about one case
    POST /api/cases/{case_id}/decision      {"decision", "reason", "exclude"}: the case as one
    GET  /api/accounts/{account_id}         an account's cases, actions, and hook verdict
    GET  /api/overview                      the run at a glance
    POST /api/actions/{action_id}/decision  {"decision": "approve"|"reject", "reason"}
    POST /api/actions/{action_id}/reverse   {"reason"}: a `revert` to every sink
    POST /api/appeals                       {"action_id", "appellant", "reason"}
    POST /api/appeals/{appeal_id}/decision  {"decision": "uphold"|"overturn", "reason"}
    GET  /api/session                       who is logged in, and the session's CSRF token
    GET  /login, POST /login, POST /logout  a browser's login (`auth`)
    GET  /openapi.json                      the API's OpenAPI document (open, as the desk's)
    GET  /, /static/{name}, /static/vendor/{name}
                                            the pages (static/index.html, a single page over
                                            the API) and their assets; the login page's own
                                            (LOGIN_ASSETS) are served without a login

The outputs are read again every `console.refresh_s` (`index.ConsoleIndex`) and the chain
verified every `console.verify_every_s` in the background (`trail.Verifier`). Decisions go
through the review desk's code (`desk.ConsoleDesk` over `review_api.Reviews`) to the same
sinks as the desk's: the run's actions file, trail and webhook outbox, or with `kafka` the
actions topic, for `lockstep sink` to deliver. Every error is JSON, as the desk's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pipeline.console import static
from pipeline.console.auth import (
    COOKIE,
    CSRF_HEADER,
    SAFE_METHODS,
    Gate,
    Principal,
)
from pipeline.console.bodies import (
    SHAPES,
    ActionDecisionRequest,
    AppealDecisionRequest,
    AppealFiling,
    CaseDecisionRequest,
    LoginRequest,
    ReversalRequest,
)
from pipeline.console.cases import STATUSES
from pipeline.console.clock import now_ms
from pipeline.console.desk import Answer, ConsoleDesk
from pipeline.console.index import SORTS, CaseQuery, ConsoleIndex
from pipeline.console.trail import Verifier
from pipeline.console.views import account_view, case_view, overview
from pipeline.contract.findings import SEVERITIES
from pipeline.core.settings import Settings
from pipeline.enforcement.audit import AuditTrail, open_audit
from pipeline.enforcement.policy import Policy
from pipeline.serve import apidoc
from pipeline.serve.errors import json_errors, quiet_unparsable_requests
from pipeline.serve.review_api import NO_NUL, ActionsTopic, Publish, Reviews, RunOutputs, read_body

MODES = ("enforce", "shadow", "review")
MAX_PAGE = 10**9  # the highest page number asked for (the document's bound)
LOGIN_ASSETS = ("console.css", "login.js")  # what the login page itself loads: no secret
PUBLIC = frozenset({apidoc.PATH, "/login", *(f"/static/{name}" for name in LOGIN_ASSETS)})
_STATIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml", ".json": "application/json", ".woff2": "font/woff2",
          ".png": "image/png", ".map": "application/json"}  # fmt: skip
_encode = msgspec.json.Encoder().encode


def document(settings: Settings) -> dict[str, Any]:
    """The console's OpenAPI document (pipeline/serve/openapi/console.yaml)."""
    c = settings.console
    return apidoc.load("console", SHAPES, page_size=c.page_size, max_page_size=c.max_page_size)


def _json(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


def _answer(view: Any) -> web.Response:
    """A view as JSON, encoded by msgspec: a case view carries its findings' evidence
    (hundreds of kilobytes for a large group), which the standard library's encoder took
    longer over than the view took to make."""
    return web.Response(body=_encode(view), content_type="application/json", charset="utf-8")


def _asset(name: str) -> bytes:
    """A file of `static/` (the package `pipeline.console.static`, its data installed)."""
    return resources.files(static).joinpath(name).read_bytes()


def unfit_vendor_assets() -> list[str]:
    """The files `static/vendor/vendor.json` pins that are missing or differ from their
    pinned sha256 (a package built without `make vendor`, or a file edited by hand)."""
    unfit = []
    for name, record in json.loads(_asset("vendor/vendor.json")).items():
        for file in (record["file"], record["licence_file"]):
            digest = record["sha256"] if file == record["file"] else record["licence_sha256"]
            try:
                fit = hashlib.sha256(_asset("vendor/" + file)).hexdigest() == digest
            except (FileNotFoundError, IsADirectoryError):
                fit = False
            if not fit:
                unfit.append(f"{name} {record['version']} ({file})")
    return unfit


def _page(name: str, status: int = 200) -> web.Response:
    return web.Response(body=_asset(name), status=status, content_type="text/html")


def _principal(gate: Gate, request: web.Request) -> Principal | None:
    """Who `request` is from (checked again where a handler needs to know: an HMAC)."""
    return gate.principal(request.headers.get("Authorization"), request.cookies.get(COOKIE))


def _gatekeeper(gate: Gate) -> Middleware:
    """A middleware: a principal for every request but the public ones, from the bearer
    token or the session cookie, else 401; under a session a request that changes
    anything needs the session's CSRF token (else 403); a viewer changes nothing (403)."""

    @web.middleware
    async def gatekeeper(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC and request.method in (*SAFE_METHODS, "POST"):
            return await handler(request)
        principal = _principal(gate, request)
        if principal is None:
            if request.method in SAFE_METHODS and not request.path.startswith(
                ("/api/", "/static/")
            ):
                return _page("login.html", 401)  # a page: the login form in its place
            return _json(401, "log in first: a session, or Authorization: Bearer <review token>")
        if request.method not in SAFE_METHODS:
            if not gate.csrf_ok(principal, request.headers.get(CSRF_HEADER, "")):
                return _json(403, f"a request under a session needs its {CSRF_HEADER} header")
            if not principal.decides and request.path.startswith("/api/"):
                return _json(403, f"{principal.name} is a viewer: viewers do not decide")
        return await handler(request)

    return gatekeeper


@web.middleware
async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Headers that keep the console's answers out of other pages and caches."""
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Content-Security-Policy", "default-src 'self'")
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _one(request: web.Request, name: str) -> str:
    """A query parameter given at most once ("" when absent)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise _refused(400, f"{name} is given {len(values)} times: give it once")
    return values[0] if values else ""


def _number(request: web.Request, name: str, default: int, most: int) -> int:
    """A whole number from 1 to `most` in the query (`default` when absent)."""
    text = _one(request, name)
    if not text:
        return default
    if not re.fullmatch(r"[0-9]{1,30}", text) or not 1 <= int(text) <= most:
        raise _refused(400, f"{name} must be a whole number from 1 to {most}, not {text[:40]!r}")
    return int(text)


def _choice(request: web.Request, name: str, choices: tuple[str, ...], default: str = "") -> str:
    value = _one(request, name)
    if value and value not in choices:
        raise _refused(400, f"{name} must be one of {', '.join(choices)}, not {value[:40]!r}")
    return value or default


def _path(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not re.fullmatch(NO_NUL, value):
        raise _refused(400, f"a {name.replace('_', ' ')} holds no NUL")
    return value


def _refused(status: int, error: str) -> web.HTTPException:
    """A request refused with a JSON error (raised from a helper of a handler)."""
    kind = web.HTTPUnprocessableEntity if status == 422 else web.HTTPBadRequest
    return kind(
        text=msgspec.json.encode({"error": error}).decode(), content_type="application/json"
    )


class Console:
    """The console's routes over an index, a desk and a gate."""

    def __init__(
        self,
        index: ConsoleIndex,
        desk: ConsoleDesk,
        gate: Gate,
        settings: Settings,
        policy: Policy,
        verifier: Verifier,
        after: Publish | None,
    ) -> None:
        self.index, self.desk, self.gate = index, desk, gate
        self.settings, self.policy, self.verifier, self.after = settings, policy, verifier, after

    def _who(self, request: web.Request) -> Principal:
        principal = _principal(self.gate, request)
        if principal is None:  # the gatekeeper let no one in without one
            raise web.HTTPUnauthorized(
                text='{"error": "log in first"}', content_type="application/json"
            )
        return principal

    # -- reading

    async def cases(self, request: web.Request) -> web.Response:
        c = self.settings.console
        query = CaseQuery(
            q=_one(request, "q"),
            detector=_one(request, "detector"),
            article=_one(request, "article"),
            severity=_choice(request, "severity", SEVERITIES),
            mode=_choice(request, "mode", MODES),
            status=_choice(request, "status", STATUSES),
            sort=_choice(request, "sort", SORTS, "-severity"),
            page=_number(request, "page", 1, MAX_PAGE),
            page_size=_number(request, "page_size", c.page_size, c.max_page_size),
        )
        return _answer(self.index.page(query, now_ms()))

    async def case(self, request: web.Request) -> web.Response:
        case_id = _path(request, "case_id")
        view = case_view(self.index, case_id, self.verifier.status, now_ms())
        if view is None:
            return _json(404, f"no case {case_id}")
        return _answer(view)

    async def account(self, request: web.Request) -> web.Response:
        account_id = _path(request, "account_id")
        return _answer(account_view(self.index, account_id, now_ms()))

    async def overview(self, request: web.Request) -> web.Response:
        return _answer(overview(self.index, self.policy, now_ms()))

    async def session(self, request: web.Request) -> web.Response:
        p = self._who(request)
        return web.json_response({"name": p.name, "role": p.role, "via": p.via,
                                  "csrf_token": p.csrf})  # fmt: skip

    # -- deciding

    def _reviewer(self, request: web.Request, named: str) -> str:
        """Whom a decision names: the logged-in person; with the review token, whom the
        body names (as the review API lets its callers say), else the token."""
        p = self._who(request)
        if p.via == "token":
            return named or p.name
        if named and named != p.name:
            raise _refused(422, f"you are logged in as {p.name!r}: you decide as yourself")
        return p.name

    async def _answer(self, answer: Answer) -> web.Response:
        """The answer, once what the decision issued is published (with `kafka`); a 503
        telling the reviewer to repeat it (which issues it again) when it could not be."""
        if self.after is not None and (answer.status == 200 or answer.body.get("issued")):
            try:
                await self.after()
            except Exception as exc:  # the broker is down or refused: say so, keep serving
                error = f"recorded, but its actions were not published ({exc}); repeat it"
                return _json(503, error)
        return web.json_response(answer.body, status=answer.status)

    async def decide_action(self, request: web.Request) -> web.Response:
        action_id = _path(request, "action_id")
        asked = await read_body(request, ActionDecisionRequest)
        reviewer = self._reviewer(request, asked.reviewer)
        return await self._answer(self.desk.decide(action_id, asked.decision, reviewer,
                                                   asked.reason))  # fmt: skip

    async def reverse(self, request: web.Request) -> web.Response:
        action_id = _path(request, "action_id")
        asked = await read_body(request, ReversalRequest)
        reviewer = self._reviewer(request, asked.reviewer)
        return await self._answer(self.desk.reverse(action_id, reviewer, asked.reason))

    async def appeal(self, request: web.Request) -> web.Response:
        asked = await read_body(request, AppealFiling)
        return await self._answer(self.desk.appeal(asked.action_id, asked.appellant, asked.reason))

    async def decide_appeal(self, request: web.Request) -> web.Response:
        appeal_id = _path(request, "appeal_id")
        asked = await read_body(request, AppealDecisionRequest)
        reviewer = self._reviewer(request, asked.reviewer)
        return await self._answer(self.desk.decide_appeal(appeal_id, asked.decision, reviewer,
                                                          asked.reason))  # fmt: skip

    async def decide_case(self, request: web.Request) -> web.Response:
        case_id = _path(request, "case_id")
        asked = await read_body(request, CaseDecisionRequest)
        reviewer = self._reviewer(request, asked.reviewer)
        answer = self.desk.decide_case(case_id, asked.decision, list(asked.exclude), reviewer,
                                       asked.reason)  # fmt: skip
        return await self._answer(answer)

    # -- logging in, and the pages

    async def login_page(self, request: web.Request) -> web.Response:
        return _page("login.html")

    async def login(self, request: web.Request) -> web.StreamResponse:
        """A session from a user's credentials or the review token: JSON in, JSON out; a
        form (the login page's) is answered with a redirect to the console."""
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1] != request.host:
            return _json(403, "a login from another site's page is refused")
        form = request.content_type == "application/x-www-form-urlencoded"
        if form:
            fields = await request.post()
            asked = LoginRequest(**{k: str(fields.get(k, "")) for k in ("name", "password",
                                                                         "token")})  # fmt: skip
        else:
            asked = await read_body(request, LoginRequest)
        loop = asyncio.get_running_loop()  # scrypt takes its time: off the event loop
        cookie = await loop.run_in_executor(None, self.gate.login, asked.name, asked.password,
                                            asked.token)  # fmt: skip
        if cookie is None:
            if form:
                return _page("login.html", 401)
            return _json(401, "no such user, a wrong password, or a wrong token")
        principal = self.gate.session(cookie)
        assert principal is not None  # just made
        body = {"name": principal.name, "role": principal.role, "csrf_token": principal.csrf}
        if form:
            response = web.Response(status=303, headers={"Location": "/"})
        else:
            response = web.json_response(body)
        gate = self.gate  # for the whole console, out of scripts' reach, never cross-site
        response.set_cookie(COOKIE, cookie, max_age=gate.ttl_s, path="/", httponly=True,
                            samesite="Strict", secure=gate.secure)  # fmt: skip
        return response

    async def logout(self, request: web.Request) -> web.Response:
        if (cookie := request.cookies.get(COOKIE)) is not None:
            self.gate.logout(cookie)
        response = web.json_response({"logged_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    async def home(self, request: web.Request) -> web.Response:
        return _page("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        return _served_asset(request.match_info["name"])

    async def vendor_asset(self, request: web.Request) -> web.Response:
        """A third-party file the pages use (static/vendor/vendor.json says which, of what
        version and licence), installed with the console: nothing comes from a CDN."""
        return _served_asset(request.match_info["name"], "vendor/")

    # -- following the outputs

    async def following(self, application: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the outputs read before the first request, then
        every `refresh_s`; the chain verified in the background."""
        self.index.refresh()  # a failure here is the command's: it cannot start
        self.verifier.start()

        async def every() -> None:
            while True:
                await asyncio.sleep(self.settings.console.refresh_s)
                self.index.follow()

        task = asyncio.create_task(every())
        yield
        task.cancel()
        self.verifier.stop()


def _served_asset(name: str, folder: str = "") -> web.Response:
    """A file of `static/` (or of a folder in it) by its name, of a type a page loads."""
    suffix = Path(name).suffix
    if not _STATIC_NAME.fullmatch(name) or suffix not in _TYPES:  # never its .py
        return _json(404, f"no asset {name[:80]}")
    try:
        body = _asset(folder + name)
    except (FileNotFoundError, IsADirectoryError):
        return _json(404, f"no asset {name}")
    return web.Response(body=body, content_type=_TYPES[suffix])


def app(console: Console) -> web.Application:
    """The aiohttp application of `console`."""
    quiet_unparsable_requests()
    application = web.Application(middlewares=[json_errors, _guarded, _gatekeeper(console.gate)])
    add = application.router
    add.add_get(apidoc.PATH, apidoc.route(document(console.settings)))
    add.add_get("/login", console.login_page)
    add.add_post("/login", console.login)
    add.add_post("/logout", console.logout)
    add.add_get("/", console.home)
    add.add_get("/static/{name}", console.asset)
    add.add_get("/static/vendor/{name}", console.vendor_asset)
    add.add_get("/api/session", console.session)
    add.add_get("/api/cases", console.cases)
    add.add_get("/api/cases/{case_id}", console.case)
    add.add_post("/api/cases/{case_id}/decision", console.decide_case)
    add.add_get("/api/accounts/{account_id}", console.account)
    add.add_get("/api/overview", console.overview)
    add.add_post("/api/actions/{action_id}/decision", console.decide_action)
    add.add_post("/api/actions/{action_id}/reverse", console.reverse)
    add.add_post("/api/appeals", console.appeal)
    add.add_post("/api/appeals/{appeal_id}/decision", console.decide_appeal)
    application.cleanup_ctx.append(console.following)
    return application


def console_app(
    out: Path,
    target: str,
    settings: Settings,
    policy: Policy,
    token: str,
    secret: str = "",
    kafka: bool = False,
) -> web.Application:
    """The console over a run's outputs in `out` and its trail at `target`. New actions
    (approvals, reverts) go to the run's outputs, as the review desk's do; with `kafka`,
    to the actions topic, for `lockstep sink` to take to all of them."""
    index = ConsoleIndex(out, target, policy.cooldown_s * 1000)
    audit = open_audit(target)  # the desk's own connection: it writes on the event loop
    after: Publish | None = None
    outputs: RunOutputs | None = None
    if kafka:
        topic = ActionsTopic(settings.kafka)
        reviews, after = Reviews(audit, topic.emit), topic.publish
    else:
        outputs = RunOutputs(out, audit, settings)
        reviews = Reviews(audit, outputs.emit)

    def use_trail(new: AuditTrail) -> None:  # the trail was started anew: write to the new
        old, reviews.audit = reviews.audit, new
        if outputs is not None:
            outputs.audit = new
        old.close()

    index.on_new_trail.append(use_trail)
    verifier = Verifier(target, settings.console.verify_every_s)
    gate = Gate(token, settings.console, secret)
    console = Console(index, ConsoleDesk(reviews, index), gate, settings, policy, verifier, after)
    application = app(console)
    if outputs is not None:
        application.cleanup_ctx.append(outputs.delivering)

    async def closing(application: web.Application) -> None:
        index.close()
        reviews.audit.close()

    application.on_cleanup.append(closing)
    return application


def serve(
    out: Path,
    target: str,
    settings: Settings,
    policy: Policy,
    token: str,
    secret: str,
    host: str,
    port: int,
    kafka: bool = False,
) -> None:
    """Serve the console until stopped."""
    application = console_app(out, target, settings, policy, token, secret, kafka)
    web.run_app(application, host=host, port=port, print=None, access_log=None)
