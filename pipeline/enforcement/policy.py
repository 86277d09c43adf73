"""Enforcement policy as data (`config/policy.yaml`): findings -> Article 19 actions.

A rule matches findings (by detector, article, subject type, least severity) and names,
per Article 13 credit level of the subject, the Article 19 measures to apply (the rungs
of the ladder and the measures beside it: `pipeline.enforcement.measures`). A subject's
credit starts at the top, each finding costs points by severity, and it recovers day by
day (`models.credit`), so escalation follows the subject's history and a quiet subject
climbs back. Findings within `cooldown_s` of an incident's first are one
incident: it costs what its gravest finding costs, however many detectors saw it. Each
rule has a mode: `enforce`, `shadow` (computed and recorded, not to be applied) or
`review` (waits for a person).

Decisions are idempotent: an action's id is a hash of what it is, whom it is for, the
finding it rests on and the rule, so the same finding decided again (a restart, a
replay) yields the same ids. A subject does not get the same measure again within
`cooldown_s` (measures that account for each finding, like discount_engagement, are
exempt), and time-bound measures carry `expires_at`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from models.credit import DAY, Credit, level_of
from pipeline.contract.findings import SEVERITIES, Action, Finding, stable_id
from pipeline.core.numbers import NonNegative, NonNegativeInt, Positive
from pipeline.core.settings import CONFIG_DIR, read_yaml
from pipeline.detectors import REGISTRY
from pipeline.enforcement.measures import MEASURES, PARAMETERS, POLICY_MEASURES, Step

DEFAULT_POLICY = CONFIG_DIR / "policy.yaml"

Mode = Literal["enforce", "shadow", "review"]


class PolicyError(Exception):
    """A policy that cannot be used; the message is one line for the user."""


class Rule(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    mode: Mode
    ladder: dict[str, list[str | Step]]  # credit level -> measures
    detectors: list[str] = []  # empty: any
    articles: list[str] = []  # empty: any
    subject_types: list[str] = []  # empty: any
    min_severity: str = "low"
    apply_to: Literal["subject", "members"] = "subject"  # a group's measures hit its members


class CreditPolicy(msgspec.Struct, forbid_unknown_fields=True):
    top: Positive
    recover_per_day: NonNegative
    levels: dict[str, NonNegative]  # level -> minimum score
    cost: dict[str, NonNegative]  # severity -> points a finding costs


class Policy(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    credit: CreditPolicy
    cooldown_s: NonNegativeInt  # 0: none
    cooldown_exempt: list[str]
    rules: list[Rule]


def load_policy(path: str | Path | None = None) -> Policy:
    """The policy in `path` (default: config/policy.yaml), checked; PolicyError if unusable."""
    where = Path(path) if path is not None else DEFAULT_POLICY
    data = read_yaml(where, "policy", PolicyError)
    try:
        policy = msgspec.convert(data, Policy)
    except msgspec.ValidationError as exc:
        raise PolicyError(f"policy {where}: {exc}") from exc
    _check(policy, where)
    return policy


def _check(policy: Policy, where: Path) -> None:
    """What the types (with their ranges) cannot say: known actions, levels, severities."""
    credit = policy.credit
    if policy.version != 1:
        raise PolicyError(f"policy {where}: version {policy.version} is not supported (1)")
    if not credit.levels:
        raise PolicyError(f"policy {where}: credit needs levels")
    if unknown := set(credit.cost) - set(SEVERITIES):
        raise PolicyError(f"policy {where}: credit.cost: unknown severity {sorted(unknown)[0]}")
    if unknown := set(policy.cooldown_exempt) - set(POLICY_MEASURES):
        raise PolicyError(f"policy {where}: cooldown_exempt: unknown action {sorted(unknown)[0]}")
    names = set()
    for i, rule in enumerate(policy.rules):
        at = f"policy {where}: rules[{i}] ({rule.name})"
        if rule.name in names:
            raise PolicyError(f"{at}: a second rule with this name")
        names.add(rule.name)
        if rule.min_severity not in SEVERITIES:
            raise PolicyError(f"{at}: min_severity must be one of {', '.join(SEVERITIES)}")
        detectors = REGISTRY.finding_detectors
        if unknown := [d for d in rule.detectors if d not in detectors]:
            raise PolicyError(
                f"{at}: unknown detector {unknown[0]!r} (one of {', '.join(detectors)})"
            )
        if missing := set(credit.levels) - set(rule.ladder):
            raise PolicyError(f"{at}: ladder has no rung for credit level {sorted(missing)[0]}")
        if extra := set(rule.ladder) - set(credit.levels):
            raise PolicyError(f"{at}: ladder names unknown credit level {sorted(extra)[0]}")
        for level, steps in rule.ladder.items():
            for j, step in enumerate(map(_step, steps)):
                if problem := _step_problem(step):
                    raise PolicyError(f"{at}: ladder.{level}[{j}]: {problem}")


def _step_problem(step: Step) -> str | None:
    """What is wrong with a ladder's step, checked against its measure; None if nothing."""
    measure = MEASURES.get(step.action)
    if measure is None or not measure.by_policy:
        return f"unknown action {step.action!r} (one of {', '.join(POLICY_MEASURES)})"
    if not all(getattr(step, name) for name in measure.params):
        return f"{step.action} needs {', '.join(measure.params)}"
    if extra := [p for p in PARAMETERS if p not in measure.params and getattr(step, p)]:
        return f"{step.action} takes no {extra[0]}"
    if step.for_s is not None and not measure.time_bound:
        return f"{step.action} does not expire: it takes no for_s"
    return None


def _step(step: str | Step) -> Step:
    """A ladder's step, written as the measure's name alone or in full."""
    return Step(action=step) if isinstance(step, str) else step


class SubjectRecord(msgspec.Struct, gc=False):
    """What the policy remembers of one subject: its credit, its latest measures."""

    credit: Credit
    last: dict[str, int] = {}  # action -> ts it was last issued (for the cooldown)
    incident_start: int = -1  # ts of the first finding of the current incident
    incident_cost: float = 0.0  # what the incident has cost so far
    # discounts issued lately: (window_start, window_end, kind, count), so that detectors
    # seeing the same fabricated engagement (a burst in 1-minute and 5-minute windows)
    # do not have it taken off the counts twice
    discounted: list[tuple[int, int, str, int]] = []


class Enforcer:
    """Decides the actions for findings, one subject's record at a time (pure: the
    caller keeps the records, in memory or keyed state)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def new_record(self) -> SubjectRecord:
        return SubjectRecord(Credit(self.policy.credit.top))

    def decide(self, finding: Finding, record: SubjectRecord) -> list[Action]:
        """Charge the subject's credit for the finding, then apply every matching rule's
        rung for the level it is left at."""
        policy, credit = self.policy, self.policy.credit
        cost = credit.cost.get(finding.severity, 0.0)
        # One incident (findings within cooldown_s of its first, from any detector or
        # window) costs what its gravest finding costs, not the sum: escalation counts
        # incidents, not the detectors that saw one.
        if record.incident_start < 0 or finding.ts - record.incident_start >= (
            policy.cooldown_s * 1000
        ):
            record.incident_start, record.incident_cost = finding.ts, 0.0
        charge = max(0.0, cost - record.incident_cost)
        record.incident_cost += charge
        score = record.credit.charge(finding.ts, charge, credit.recover_per_day)
        level = level_of(score, credit.levels)
        actions: list[Action] = []
        for rule in policy.rules:
            if not _matches(rule, finding):
                continue
            for step in map(_step, rule.ladder[level]):
                actions.extend(self._issue(rule, step, finding, record, level, score))
        return actions

    def _issue(
        self,
        rule: Rule,
        step: Step,
        finding: Finding,
        record: SubjectRecord,
        level: str,
        score: float,
    ) -> list[Action]:
        policy = self.policy
        last = record.last.get(step.action)
        cooled = step.action not in policy.cooldown_exempt
        if cooled and last is not None and finding.ts - last < policy.cooldown_s * 1000:
            return []
        record.last[step.action] = finding.ts
        expires = finding.ts + step.for_s * 1000 if step.for_s else None
        out = []
        for subject_type, subject_id in _subjects(rule, finding):
            own = _own_params(step, subject_id, finding, record)
            if own is None:
                continue
            params: dict[str, Any] = {
                "rule": rule.name,
                "detector": finding.detector,
                "severity": finding.severity,
                "credit_level": level,
                "credit_score": round(score, 2),
                **own,
            }
            out.append(
                Action(
                    action_id=stable_id(
                        step.action, subject_type, subject_id, finding.finding_id, rule.name
                    ),
                    action=step.action,
                    subject_type=subject_type,  # type: ignore[arg-type]
                    subject_id=subject_id,
                    basis=sorted({finding.article.split("(")[0], "19"}),
                    finding_ids=[finding.finding_id],
                    mode=rule.mode,
                    ts=finding.ts,
                    expires_at=expires,
                    params=params,
                )
            )
        return out


def _subjects(rule: Rule, finding: Finding) -> list[tuple[str, str]]:
    """Whom the rule's measures are for: the finding's subject, or a group's members."""
    if rule.apply_to == "members" and finding.members:
        return [("account", m) for m in finding.members]
    return [(finding.subject_type, finding.subject_id)]


def _own_params(
    step: Step, subject_id: str, finding: Finding, record: SubjectRecord
) -> dict[str, Any] | None:
    """The parameters particular to the step's measure, or None when it has nothing left to
    do (the engagement a finding estimated fabricated was discounted by an earlier one)."""
    if step.action == "throttle":
        return {
            "descriptors": [
                {"key": "account_id", "value": subject_id},
                *({"key": "action", "value": a} for a in step.limits),
            ],
            "requests_per_unit": step.requests_per_unit,
            "unit": step.unit,
        }
    if step.action == "discount_engagement":
        discount = _discount(finding, record)
        if finding.evidence.get("fabricated") and not discount["engagement"]:
            return None
        return {"discount": discount}
    return {}


DISCOUNT_MEMORY_MS = DAY  # how long issued discounts are remembered


def _discount(finding: Finding, record: SubjectRecord) -> dict[str, Any]:
    """What to take off the subject's public counts: the engagement the finding estimates
    fabricated, by kind, in its window, less what earlier discounts already took off in
    that window (pro rata to their overlap with it), and the accounts it names. A finding
    without an estimate leaves `engagement` empty: the accounts and window say what."""
    start, end = finding.window_start, finding.window_end
    kept = [d for d in record.discounted if d[1] > finding.ts - DISCOUNT_MEMORY_MS]
    engagement: dict[str, int] = {}
    for kind, estimate in finding.evidence.get("fabricated", {}).items():
        covered = sum(
            count * max(0, min(end, e) - max(start, s)) / (e - s)
            for s, e, k, count in kept
            if k == kind and e > s
        )
        left = round(estimate - covered)
        if left > 0:
            engagement[kind] = left
            kept.append((start, end, kind, left))
    record.discounted = kept
    return {
        "engagement": engagement,
        "window_start": start,
        "window_end": end,
        "from_accounts": list(finding.members),
    }


def _matches(rule: Rule, finding: Finding) -> bool:
    if rule.detectors and finding.detector not in rule.detectors:
        return False
    if rule.articles and finding.article.split("(")[0] not in rule.articles:
        return False
    if rule.subject_types and finding.subject_type not in rule.subject_types:
        return False
    return SEVERITIES.index(finding.severity) >= SEVERITIES.index(rule.min_severity)


__all__ = ["Enforcer", "Policy", "PolicyError", "SubjectRecord", "load_policy"]
