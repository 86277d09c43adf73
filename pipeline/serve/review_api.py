"""Review and appeals (Article 20): an HTTP API over the audit trail, closed without the
bearer token the config names.

    GET  /v1/reviews                      actions waiting for a person (mode review, and
                                          human_review), not yet decided
    POST /v1/reviews/{action_id}          {"decision": "approve"|"reject", "reviewer", "note"}
    GET  /v1/appeals                      appeals filed, with their state
    POST /v1/appeals                      {"action_id", "appellant", "reason"}
    POST /v1/actions/{action_id}/reverse  {"reviewer", "reason"}: a `revert` action

Every decision, appeal and reversal is a record in the audit trail. Approving an action
in review mode issues it in enforce mode; a reversal issues a `revert` action (its
`params.reverts` names the action) to every sink: the actions file, the webhook outbox,
the audit trail. Ids are deterministic, so a request repeated (a client retry) changes
nothing.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pipeline.contract.findings import Action, stable_id
from pipeline.core.settings import KafkaSettings, Settings
from pipeline.enforcement.audit import AuditTrail, open_audit
from pipeline.enforcement.measures import AWAITING_REVIEW

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
        decided = {d["action_id"] for d in self._records("decision")}
        return [
            a
            for a in self._records("action")
            if (a["mode"] == "review" or a["action"] in AWAITING_REVIEW)
            and a["action_id"] not in decided
        ]

    def decide(self, action_id: str, decision: str, reviewer: str, note: str) -> dict[str, Any]:
        action = self.action(action_id)
        if action is None:
            return {"error": f"no action {action_id}", "status": 404}
        if decision not in ("approve", "reject"):
            return {"error": "decision must be approve or reject", "status": 400}
        record = Decision(
            decision_id=stable_id("decision", action_id),
            action_id=action_id,
            decision=decision,
            reviewer=reviewer,
            note=note,
            ts=_now_ms(),
        )
        first = self._first(record)
        issued = []
        if first.decision == "approve" and action.mode == "review":
            issued.append(_approved(action, first))
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
        for body in self.audit.bodies("decision", record.decision_id):
            return msgspec.json.decode(body, type=Decision)
        raise LookupError(f"decision {record.decision_id} is neither new nor recorded")

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
            d["action_id"] for d in self._records("decision") if d["decision"] == "reverse"
        }
        return [
            {**a, "state": "reversed" if a["action_id"] in reversed_ids else "open"}
            for a in self._records("appeal")
        ]

    def reverse(self, action_id: str, reviewer: str, reason: str) -> dict[str, Any]:
        action = self.action(action_id)
        if action is None:
            return {"error": f"no action {action_id}", "status": 404}
        record = Decision(
            decision_id=stable_id("reverse", action_id),
            action_id=action_id,
            decision="reverse",
            reviewer=reviewer,
            note=reason,
            ts=_now_ms(),
        )
        first = self._first(record)
        revert = _revert(action, first)
        self.emit([revert])  # again on a repeat: sinks take each action_id once
        issued = [msgspec.to_builtins(revert)]
        if first is not record:
            return {"error": f"{action_id} was already reversed", "status": 409, "issued": issued}
        return {"decision": msgspec.to_builtins(record), "issued": issued}


def _approved(action: Action, approval: Decision) -> Action:
    """A review-mode action a person approved, issued again in enforce mode (its own id,
    so the sinks keep both)."""
    return msgspec.structs.replace(
        action,
        action_id=stable_id("approved", approval.action_id),
        mode="enforce",
        ts=approval.ts,
        params={**action.params, "approves": approval.action_id, "reviewer": approval.reviewer},
    )


def _revert(action: Action, reversal: Decision) -> Action:
    """The `revert` that lifts `action` (Article 20): for its subject, on its findings."""
    return Action(
        action_id=stable_id("revert", reversal.action_id),
        action="revert",
        subject_type=action.subject_type,
        subject_id=action.subject_id,
        basis=sorted({*action.basis, "20"}),
        finding_ids=action.finding_ids,
        mode="enforce",
        ts=reversal.ts,
        expires_at=None,
        params={
            "reverts": reversal.action_id,
            "reverted": action.action,
            "reviewer": reversal.reviewer,
            "reason": reversal.note,
        },
    )


def _bearer(token: str) -> Middleware:
    """A middleware refusing every request without `Authorization: Bearer <token>` (and
    every request at all when the token is empty)."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not token or not hmac.compare_digest(given.encode(), expected):
            return web.json_response({"error": "a valid bearer token is required"}, status=401)
        return await handler(request)

    return bearer


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; {} when it has none (the handlers say what is missing)."""
    try:
        data = await request.json()
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {}


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
        data = await _body(request)
        result = self.reviews.decide(
            request.match_info["action_id"],
            str(data.get("decision", "")),
            str(data.get("reviewer", "")),
            str(data.get("note", "")),
        )
        return await self._published() or _answer(result)

    async def list_appeals(self, request: web.Request) -> web.Response:
        return web.json_response({"appeals": self.reviews.appeals()})

    async def appeal(self, request: web.Request) -> web.Response:
        data = await _body(request)
        if not data.get("action_id") or not data.get("reason"):
            return web.json_response({"error": "action_id and reason are required"}, status=400)
        return _answer(
            self.reviews.appeal(
                str(data["action_id"]), str(data.get("appellant", "")), str(data["reason"])
            )
        )

    async def reverse(self, request: web.Request) -> web.Response:
        data = await _body(request)
        result = self.reviews.reverse(
            request.match_info["action_id"],
            str(data.get("reviewer", "")),
            str(data.get("reason", "")),
        )
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


def app(reviews: Reviews, token: str, after: Publish | None = None) -> web.Application:
    """The aiohttp application; every request needs `Authorization: Bearer <token>`.
    `after`, if given, is awaited after each decision or reversal (to publish what it
    issued)."""
    desk = Desk(reviews, after)
    application = web.Application(middlewares=[_bearer(token)])
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
        self._encode = msgspec.json.Encoder().encode

    def emit(self, actions: list[Action]) -> None:
        self.pending.extend(actions)

    async def publish(self) -> None:
        from aiokafka import AIOKafkaProducer

        from pipeline.distributed.topics import Topics

        if not self.pending:
            return
        topic = Topics.from_settings(self.kafka).actions
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.broker, acks="all")
        await producer.start()
        try:
            for a in self.pending:
                await producer.send(topic, self._encode(a), key=a.action_id.encode())
            await producer.flush()
        finally:
            await producer.stop()
        self.pending.clear()


def _to_sinks(out: Path, audit: AuditTrail, settings: Settings) -> Emit:
    """Emit to `out/actions.jsonl`, the audit trail and the webhook outbox (delivered at
    once)."""
    from pipeline.outputs import webhooks

    hooks = webhooks.from_settings(settings.webhooks, out / "webhook_outbox.sqlite")
    encode = msgspec.json.Encoder().encode

    def emit(actions: list[Action]) -> None:
        with open(out / "actions.jsonl", "ab") as handle:
            handle.write(b"".join(encode(a) + b"\n" for a in actions))
        audit.append("action", actions, "action_id")
        if hooks is not None:
            hooks[0].enqueue(actions, hooks[1].endpoints, time.time())
            hooks[1].deliver_due()

    return emit


def serve(
    out: Path,
    audit_target: str,
    settings: Settings,
    token: str,
    host: str,
    port: int,
    kafka: bool = False,
) -> None:
    """Serve the review desk for a run's outputs. New actions (approvals, reverts) go to
    `out/actions.jsonl`, the webhook outbox (delivered at once) and the audit trail; with
    `kafka`, to the actions topic instead, where `lockstep sink` takes them to all three
    (and the workers' consumers see them)."""
    audit = open_audit(audit_target)
    if kafka:
        topic = ActionsTopic(settings.kafka)
        emit, after = topic.emit, topic.publish
    else:
        emit, after = _to_sinks(out, audit, settings), None
    application = app(Reviews(audit, emit), token, after)
    web.run_app(application, host=host, port=port, print=None, access_log=None)
