"""Review and appeals (Article 20): an HTTP API over the audit trail, closed without the
bearer token the config names.

    GET  /v1/reviews                      actions waiting for a person (mode review, and
                                          human_review), not yet decided
    POST /v1/reviews/{action_id}          {"decision": "approve"|"reject", "reviewer", "note"}
    GET  /v1/appeals                      appeals filed, with their state
    POST /v1/appeals                      {"action_id", "appellant", "reason"}
    POST /v1/actions/{action_id}/reverse  {"reviewer", "reason"}: a `revert` action
    GET  /openapi.json                    the API's OpenAPI document (open: no token)

Every decision, appeal and reversal is a record in the audit trail. Approving an action
in review mode issues an enforcing copy of it (its own id, in force for the held action's
duration from the approval); a reversal of either lifts both: a `revert` action for each
(its `params.reverts` names the action) to every sink: the actions file, the webhook
outbox, the audit trail. An action is decided once: a different second decision is a 409,
and so is any decision after a reversal. Ids are deterministic, so a request repeated (a
client retry) records nothing new and issues the identical actions again for delivery,
which every sink takes once per id. A request body that is not one the API documents is a
400 saying why, before anything is recorded; every error is JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from msgspec import Meta

from pipeline.contract.deadletter import DeadLetter
from pipeline.contract.findings import Action, Finding, stable_id
from pipeline.core.settings import KafkaSettings, Settings
from pipeline.enforcement.audit import AuditTrail, open_audit
from pipeline.enforcement.measures import AWAITING_REVIEW
from pipeline.serve import apidoc
from pipeline.serve.errors import json_errors, quiet_unparsable_requests

Emit = Callable[[list[Action]], None]  # new actions, to every sink
Publish = Callable[[], Awaitable[None]]  # what the emitted actions wait on, if anything


class Decision(msgspec.Struct, kw_only=True):
    """A person's decision on an action, as the audit trail keeps it."""

    decision_id: str
    action_id: str
    decision: str  # approve, reject, reverse
    reviewer: str
    note: str
    ts: int


class Appeal(msgspec.Struct, kw_only=True):
    """An appeal filed against an action (Article 20), as the audit trail keeps it."""

    appeal_id: str
    action_id: str
    appellant: str
    reason: str
    ts: int


# Text a person types: anything but NUL, which a PostgreSQL trail cannot store.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, Meta(pattern=NO_NUL)]
Required = Annotated[str, Meta(min_length=1, pattern=NO_NUL)]


APPEAL_DECISION = "appeal_decision"  # its kind in the trail


class AppealDecision(msgspec.Struct, kw_only=True):
    """A person's decision on an appeal (Article 20), as the audit trail keeps it: upheld,
    the measure stands; overturned, the action is reversed (its reversal is the desk's own
    record). One per appeal: its id is a hash of the appeal's (`appeal_decision_id`)."""

    decision_id: str
    appeal_id: str
    action_id: str
    decision: Literal["uphold", "overturn"]
    reviewer: str
    note: str
    ts: int


def appeal_decision_id(appeal_id: str) -> str:
    """The id of the one decision an appeal gets."""
    return stable_id(APPEAL_DECISION, appeal_id)


class DecisionRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/reviews/{action_id}: a person's decision on the action."""

    decision: Literal["approve", "reject"]
    reviewer: Text = ""
    note: Text = ""


class AppealRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/appeals: an appeal against an action (Article 20)."""

    action_id: Required
    reason: Required
    appellant: Text = ""


class ReversalRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/actions/{action_id}/reverse: who reverses it, and why."""

    reviewer: Text = ""
    reason: Text = ""


Body = TypeVar("Body", bound=msgspec.Struct)
# What the API's OpenAPI document takes from the code: the shapes it decodes and encodes.
SHAPES = (Action, Decision, Appeal, DecisionRequest, AppealRequest, ReversalRequest)

_DONE = {"approve": "approved", "reject": "rejected"}


def _now_ms() -> int:
    return int(time.time() * 1000)


class Reviews:
    """The review desk's state, read from and written to the audit trail."""

    def __init__(self, audit: AuditTrail, emit: Emit) -> None:
        self.audit = audit
        self.emit = emit

    def _records(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(body) for body in self.audit.bodies(kind)]

    def action(self, action_id: str) -> Action | None:
        for body in self.audit.bodies("action", action_id):
            return msgspec.json.decode(body, type=Action)
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Actions held for a person, undecided. An approved copy is a decision's outcome
        (even of a `human_review`), never waiting itself."""
        decided = {d["action_id"] for d in self._records("decision")}
        return [
            a
            for a in self._records("action")
            if (a["mode"] == "review" or a["action"] in AWAITING_REVIEW)
            and a["action_id"] not in decided
            and not (a.get("params") or {}).get("approves")
        ]

    def decide(self, action_id: str, decision: str, reviewer: str, note: str) -> dict[str, Any]:
        action = self.action(action_id)
        if action is None:
            return {"error": f"no action {action_id}", "status": 404}
        if decision not in ("approve", "reject"):
            return {"error": "decision must be approve or reject", "status": 400}
        reversal = self._decision(stable_id("reverse", self._held(action).action_id))
        if reversal is not None:
            error = f"{action_id} was reversed by {reversal.reviewer!r}: it is not decided again"
            return {"error": error, "status": 409}
        if decision == "approve" and not _lasts(action):
            error = f"{action_id} expires when it is issued: there is nothing to approve"
            return {"error": error, "status": 422}
        record = Decision(
            decision_id=stable_id("decision", action_id),
            action_id=action_id,
            decision=decision,
            reviewer=reviewer,
            note=note,
            ts=_now_ms(),
        )
        first = self._first(record)
        if first.decision != decision:
            error = (
                f"{action_id} was already {_DONE[first.decision]} by {first.reviewer!r}: "
                f"a {decision} conflicts with it"
            )
            return {"error": error, "status": 409, "decision": msgspec.to_builtins(first)}
        copy = self._approved_copy(action)
        issued = [copy] if copy is not None else []
        if issued:
            self.emit(issued)  # again on a repeat: whatever the first request left undelivered
        if first is not record:
            return {"error": f"{action_id} was already decided", "status": 409,
                    "issued": msgspec.to_builtins(issued)}  # fmt: skip
        return {"decision": msgspec.to_builtins(record), "issued": msgspec.to_builtins(issued)}

    def _first(self, record: Decision) -> Decision:
        """`record`, appended to the trail, or the decision recorded before under its id
        (a repeated request: its actions are rebuilt from that one, identical)."""
        if self.audit.append("decision", [record], "decision_id"):
            return record
        recorded = self._decision(record.decision_id)
        if recorded is None:
            raise LookupError(f"decision {record.decision_id} is neither new nor recorded")
        return recorded

    def _decision(self, decision_id: str) -> Decision | None:
        for body in self.audit.bodies("decision", decision_id):
            return msgspec.json.decode(body, type=Decision)
        return None

    def _held(self, action: Action) -> Action:
        """The action a person decides on: `action` itself, or the held action an
        approved copy stands in for."""
        approves = action.params.get("approves")
        return (self.action(str(approves)) if approves else None) or action

    def _approved_copy(self, action: Action) -> Action | None:
        """The enforcing copy issued in place of a held (review-mode) action once a
        person approved it, rebuilt from the approval; None for any other action."""
        if action.mode != "review":
            return None
        approval = self._decision(stable_id("decision", action.action_id))
        if approval is None or approval.decision != "approve":
            return None
        return _approved(action, approval)

    def _standing(self, named: Action) -> list[Action]:
        """What a reversal of `named` lifts: `named` first, then the rest of what stands
        for the same decision (the held action and its approved copy)."""
        held = self._held(named)
        copy = self._approved_copy(held)
        family = [held] if copy is None else [held, copy]
        return [named, *(a for a in family if a.action_id != named.action_id)]

    def appeal(self, action_id: str, appellant: str, reason: str) -> dict[str, Any]:
        if self.action(action_id) is None:
            return {"error": f"no action {action_id}", "status": 404}
        record = Appeal(
            appeal_id=stable_id("appeal", action_id, appellant),
            action_id=action_id,
            appellant=appellant,
            reason=reason,
            ts=_now_ms(),
        )
        self.audit.append("appeal", [record], "appeal_id")
        return {"appeal": msgspec.to_builtins(record)}

    def appeals(self) -> list[dict[str, Any]]:
        reversed_ids = {
            a.action_id
            for d in self._records("decision")
            if d["decision"] == "reverse" and (named := self.action(d["action_id"]))
            for a in self._standing(named)
        }
        decided = {d["appeal_id"]: d["decision"] for d in self._records(APPEAL_DECISION)}
        states = {"uphold": "upheld", "overturn": "overturned"}
        return [
            {
                **a,
                "state": states.get(decided.get(a["appeal_id"], ""))
                or ("reversed" if a["action_id"] in reversed_ids else "open"),
            }
            for a in self._records("appeal")
        ]

    def reverse(self, action_id: str, reviewer: str, reason: str) -> dict[str, Any]:
        action = self.action(action_id)
        if action is None:
            return {"error": f"no action {action_id}", "status": 404}
        record = Decision(
            decision_id=stable_id("reverse", self._held(action).action_id),
            action_id=action_id,
            decision="reverse",
            reviewer=reviewer,
            note=reason,
            ts=_now_ms(),
        )
        first = self._first(record)  # one reversal for the held action and its copy
        named = action if first is record else self.action(first.action_id) or action
        reverts = [_revert(a, first) for a in self._standing(named)]
        self.emit(reverts)  # again on a repeat: sinks take each action_id once
        issued = msgspec.to_builtins(reverts)
        if first is not record:
            return {"error": f"{action_id} was already reversed", "status": 409, "issued": issued}
        return {"decision": msgspec.to_builtins(record), "issued": issued}


def _lasts(action: Action) -> bool:
    """Whether `action` is in force for some time once issued (the policy's are: its
    `for_s` is > 0), so that a copy of it expires after it is issued."""
    return action.expires_at is None or action.expires_at > action.ts


def _approved(action: Action, approval: Decision) -> Action:
    """A review-mode action a person approved, issued again in enforce mode (its own id,
    so the sinks keep both). It is issued at the approval and holds for the held
    action's duration from then: the measure the policy chose, applied when a person let
    it apply, however long the review took (counting from the held action's own time would
    shorten it by the review, to nothing on a backtest)."""
    lasts = None if action.expires_at is None else action.expires_at - action.ts
    return msgspec.structs.replace(
        action,
        action_id=stable_id("approved", approval.action_id),
        mode="enforce",
        ts=approval.ts,
        expires_at=None if lasts is None else approval.ts + lasts,
        params={**action.params, "approves": approval.action_id, "reviewer": approval.reviewer},
    )


def _revert(action: Action, reversal: Decision) -> Action:
    """The `revert` that lifts `action` (Article 20): for its subject, on its findings."""
    return Action(
        action_id=stable_id("revert", action.action_id),
        action="revert",
        subject_type=action.subject_type,
        subject_id=action.subject_id,
        basis=sorted({*action.basis, "20"}),
        finding_ids=action.finding_ids,
        mode="enforce",
        ts=reversal.ts,
        expires_at=None,
        params={
            "reverts": action.action_id,
            "reverted": action.action,
            "reviewer": reversal.reviewer,
            "reason": reversal.note,
        },
    )


def _bearer(token: str, public: frozenset[str] = frozenset()) -> Middleware:
    """A middleware refusing every request without `Authorization: Bearer <token>` (and
    every request at all when the token is empty), but a GET of a `public` path."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in ("GET", "HEAD") and request.path in public:
            return await handler(request)
        given = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(given.encode(), expected):
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        return await handler(request)

    return bearer


def _refuse(error: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": error}), content_type="application/json")


async def read_body(request: web.Request, into: type[Body]) -> Body:
    """The request's JSON object as `into` (an empty body as {}: `into` says what is
    missing). Anything else is refused with a 400 saying why, before anything is done.
    (The console's API reads its bodies with it too.)"""
    raw = await request.read()
    charset = request.charset or "utf-8"
    data: Any = None
    try:  # through UTF-8 and msgspec, which refuse lone surrogates (no store takes one)
        data = msgspec.json.decode(raw.decode(charset).encode("utf-8")) if raw.strip() else {}
    except LookupError:
        why = f"its charset {charset!r} is unknown"
    except UnicodeError as exc:
        why = f"it is not text in {charset} ({exc.reason})"
    except RecursionError:
        why = "it is nested too deeply"
    except msgspec.DecodeError as exc:
        why = f"it is not JSON ({exc})"
    else:
        why = f"it is a JSON {type(data).__name__}"
    if not isinstance(data, dict):
        raise _refuse(f"the body must be a JSON object: {why}")
    try:
        return msgspec.convert(data, into)
    except msgspec.ValidationError as exc:
        raise _refuse(f"the body is not a valid {into.__name__}: {exc}") from None


def _action_id(request: web.Request) -> str:
    """The action id in the path; a 400 for one that holds a NUL (no store takes it)."""
    action_id = request.match_info["action_id"]
    if "\x00" in action_id:
        raise _refuse("an action id holds no NUL")
    return action_id


def _answer(result: dict[str, Any]) -> web.Response:
    status = result.pop("status", 200 if "error" not in result else 400)
    return web.json_response(result, status=status)


class Desk:
    """The review desk's routes over `reviews`. `after`, if given, is awaited after each
    decision or reversal (to publish what it issued)."""

    def __init__(self, reviews: Reviews, after: Publish | None) -> None:
        self.reviews, self.after = reviews, after

    async def list_reviews(self, request: web.Request) -> web.Response:
        return web.json_response({"pending": self.reviews.pending()})

    async def decide(self, request: web.Request) -> web.Response:
        action_id = _action_id(request)
        asked = await read_body(request, DecisionRequest)
        result = self.reviews.decide(action_id, asked.decision, asked.reviewer, asked.note)
        return await self._published() or _answer(result)

    async def list_appeals(self, request: web.Request) -> web.Response:
        return web.json_response({"appeals": self.reviews.appeals()})

    async def appeal(self, request: web.Request) -> web.Response:
        asked = await read_body(request, AppealRequest)
        return _answer(self.reviews.appeal(asked.action_id, asked.appellant, asked.reason))

    async def reverse(self, request: web.Request) -> web.Response:
        action_id = _action_id(request)
        asked = await read_body(request, ReversalRequest)
        result = self.reviews.reverse(action_id, asked.reviewer, asked.reason)
        return await self._published() or _answer(result)

    async def _published(self) -> web.Response | None:
        """None once what a decision issued is out (or nothing is to be published); else
        a 503 telling the reviewer to repeat the request, which issues it again."""
        if self.after is None:
            return None
        try:
            await self.after()
        except Exception as exc:  # the broker is down or refused: say so, keep serving
            error = f"recorded, but its actions were not published ({exc}); repeat the request"
            return web.json_response({"error": error}, status=503)
        return None


def document() -> dict[str, Any]:
    """The desk's OpenAPI document (openapi/review.yaml)."""
    return apidoc.load("review", SHAPES)


def app(reviews: Reviews, token: str, after: Publish | None = None) -> web.Application:
    """The aiohttp application; every request but GET /openapi.json needs
    `Authorization: Bearer <token>`. `after`, if given, is awaited after each decision or
    reversal (to publish what it issued)."""
    quiet_unparsable_requests()
    desk = Desk(reviews, after)
    public = frozenset({apidoc.PATH})
    application = web.Application(middlewares=[json_errors, _bearer(token, public)])
    application.router.add_get(apidoc.PATH, apidoc.route(document()))
    application.router.add_get("/v1/reviews", desk.list_reviews)
    application.router.add_post("/v1/reviews/{action_id}", desk.decide)
    application.router.add_get("/v1/appeals", desk.list_appeals)
    application.router.add_post("/v1/appeals", desk.appeal)
    application.router.add_post("/v1/actions/{action_id}/reverse", desk.reverse)
    return application


class ActionsTopic:
    """The desk's new actions held until `publish` sends them to the actions topic, where
    `lockstep sink` takes them to every sink (and the workers' consumers see them)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self.pending: list[Action] = []
        self._publishing = asyncio.Lock()
        self._encode = msgspec.json.Encoder().encode

    def emit(self, actions: list[Action]) -> None:
        """Hold `actions` for the next `publish`, each id once."""
        held = {a.action_id for a in self.pending}
        self.pending.extend(a for a in actions if a.action_id not in held)

    async def publish(self) -> None:
        """Send what is held, one publisher at a time, so that concurrent requests send
        each action once; what a failure left unsent stays held."""
        from aiokafka import AIOKafkaProducer

        from pipeline.distributed.topics import Topics

        async with self._publishing:
            batch = list(self.pending)  # emit only appends: what comes meanwhile stays
            if not batch:
                return
            topic = Topics.from_settings(self.kafka).actions
            producer = AIOKafkaProducer(bootstrap_servers=self.kafka.broker, acks="all")
            await producer.start()
            try:
                for a in batch:
                    await producer.send(topic, self._encode(a), key=a.action_id.encode())
                await producer.flush()
            finally:
                await producer.stop()
            del self.pending[: len(batch)]


@dataclass
class _Issued:
    """Actions the desk issued, as a batch of results for a sink."""

    actions: list[Action]
    findings: list[Finding] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


class RunOutputs:
    """The desk's new actions to the run's own outputs: `out/actions.jsonl` and the audit
    trail, each action once, and the webhook outbox, delivered from a background thread
    so that no request waits on a receiver. At exit, delivery goes on for up to
    `webhooks.wait_s`; the outbox is durable, so what is still undelivered then stays
    there for `lockstep webhooks deliver`."""

    def __init__(self, out: Path, audit: AuditTrail, settings: Settings) -> None:
        from pipeline.outputs import webhook_sink

        self.actions_path = out / "actions.jsonl"
        self.audit = audit
        self.hooks = webhook_sink.from_settings(settings, out)
        self.wait_s = settings.webhooks.wait_s
        self._encode = msgspec.json.Encoder().encode

    def emit(self, actions: list[Action]) -> None:
        """The actions not yet in the trail to the actions file (synced), then to the
        trail; every action to the outbox, which takes each id once. It runs on the event
        loop, one request at a time, so the check and the writes are one step; a crash
        between the file and the trail writes the line again on the repeat, never loses
        it."""
        fresh = [a for a in actions if not list(self.audit.bodies("action", a.action_id))]
        if fresh:
            with open(self.actions_path, "ab") as handle:
                handle.write(b"".join(self._encode(a) + b"\n" for a in fresh))
                handle.flush()
                os.fsync(handle.fileno())
            self.audit.append("action", fresh, "action_id")
        if self.hooks is not None:
            self.hooks.write(_Issued(actions))

    async def delivering(self, application: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: webhook delivery in the background while the
        application runs."""
        if self.hooks is not None:
            self.hooks.deliver_in_background()
        yield
        if self.hooks is not None:  # at exit (no request left to hold up), what is still
            try:  # queued gets its chance first; the outbox is this thread's connection
                self.hooks.deliver(self.wait_s)
            finally:
                self.hooks.close()


def desk(
    out: Path, audit: AuditTrail, settings: Settings, token: str, kafka: bool = False
) -> web.Application:
    """The review desk for a run's outputs. New actions (approvals, reverts) go to the
    run's outputs (`RunOutputs`); with `kafka`, to the actions topic instead, where
    `lockstep sink` takes them to all three (and the workers' consumers see them)."""
    if kafka:
        topic = ActionsTopic(settings.kafka)
        return app(Reviews(audit, topic.emit), token, topic.publish)
    outputs = RunOutputs(out, audit, settings)
    application = app(Reviews(audit, outputs.emit), token)
    application.cleanup_ctx.append(outputs.delivering)
    return application


def serve(
    out: Path,
    audit_target: str,
    settings: Settings,
    token: str,
    host: str,
    port: int,
    kafka: bool = False,
) -> None:
    """Serve the review desk (`desk`) for a run's outputs until stopped."""
    audit = open_audit(audit_target)
    try:
        application = desk(out, audit, settings, token, kafka)
        web.run_app(application, host=host, port=port, print=None, access_log=None)
    finally:
        audit.close()
