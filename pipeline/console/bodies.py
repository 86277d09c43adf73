"""What the console's API takes: its request bodies, decoded with msgspec (a body that is
not one is a 400 saying why, before anything is done: `review_api.read_body`), and the
shapes its OpenAPI document takes from the code rather than writing them out."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from pipeline.contract.findings import Action, Finding
from pipeline.serve.review_api import Appeal, AppealDecision, Decision, Required, Text


class ActionDecisionRequest(msgspec.Struct, kw_only=True):
    """The body of POST /api/actions/{action_id}/decision."""

    decision: Literal["approve", "reject"]
    reason: Required
    reviewer: Text = ""  # with the review token only: whom the record names


class ReversalRequest(msgspec.Struct, kw_only=True):
    """The body of POST /api/actions/{action_id}/reverse."""

    reason: Required
    reviewer: Text = ""


class AppealFiling(msgspec.Struct, kw_only=True):
    """The body of POST /api/appeals: an appeal against an action (Article 20)."""

    action_id: Required
    reason: Required
    appellant: Text = ""


class AppealDecisionRequest(msgspec.Struct, kw_only=True):
    """The body of POST /api/appeals/{appeal_id}/decision."""

    decision: Literal["uphold", "overturn"]
    reason: Required
    reviewer: Text = ""


class CaseDecisionRequest(msgspec.Struct, kw_only=True):
    """The body of POST /api/cases/{case_id}/decision: one decision for the whole case,
    members excluded from an approval one by one."""

    decision: Literal["approve", "reject"]
    reason: Required
    exclude: Annotated[list[Required], Meta(max_length=10_000)] = []
    reviewer: Text = ""


class LoginRequest(msgspec.Struct, kw_only=True):
    """The body of POST /login: a user's name and password, or the review token."""

    name: Text = ""
    password: Text = ""
    token: Text = ""


# What the document takes from the code: the shapes the console decodes and encodes.
SHAPES = (
    Action,
    Finding,
    Decision,
    Appeal,
    AppealDecision,
    ActionDecisionRequest,
    ReversalRequest,
    AppealFiling,
    AppealDecisionRequest,
    CaseDecisionRequest,
    LoginRequest,
)
