"""A stage agent and Faust's rebalance: a revocation waits for the round in flight to write
its state, and records taken before a revocation are left to their partition's owner.

In the fault campaign's `join` kind, a worker's round went on writing its partitions'
state after Faust had revoked them (the round awaited its sends meanwhile): the older
state landed on the changelog after the new owner's, a worker that recovered the
partition later read it back, and churn findings appeared that replay does not make (14
in one world, every one after a hand-over). Faust itself cannot run here without a
broker, so the agent is built without its Faust wiring and driven as Faust drives it."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, NamedTuple

from pipeline.distributed.worker import StageAgent


def _agent(rounds: list[list[int]], gate: asyncio.Event | None = None) -> StageAgent:
    """A StageAgent whose round records the partitions it was given and, with `gate`,
    waits on it halfway, as a real round waits on its producer."""
    agent = StageAgent.__new__(StageAgent)
    agent.owned = {0: object(), 1: object()}  # type: ignore[dict-item]
    agent.topic = "t.stage-churn"
    agent.assigned = None
    agent.skipped = 0
    agent._round = asyncio.Lock()

    async def body(events: list[Any]) -> None:
        rounds.append([e.message.partition for e in events])
        if gate is not None:
            await gate.wait()

    agent._run_round = body  # type: ignore[method-assign]
    return agent


class TP(NamedTuple):  # Faust's TP: a topic and a partition
    topic: str
    partition: int


def _records(*partitions: int) -> list[Any]:
    return [SimpleNamespace(message=SimpleNamespace(partition=p)) for p in partitions]


def test_a_revocation_waits_for_the_round_in_flight() -> None:
    async def scenario() -> list[str]:
        said: list[str] = []
        gate = asyncio.Event()
        agent = _agent([], gate)
        round_task = asyncio.create_task(agent.run_round(_records(0, 1)))
        await asyncio.sleep(0.01)  # the round is awaiting its sends
        revoke = asyncio.create_task(agent.on_partitions_revoked(None, set()))
        await asyncio.sleep(0.05)
        said.append("revoked" if revoke.done() else "waiting")
        assert agent.owned, "the cached partitions went while a round still used them"
        gate.set()
        await round_task
        await revoke
        said.append("revoked" if not agent.owned else "kept")
        return said

    assert asyncio.run(scenario()) == ["waiting", "revoked"]


def test_records_of_partitions_revoked_are_left_to_their_owner() -> None:
    async def scenario() -> tuple[list[list[int]], int]:
        rounds: list[list[int]] = []
        agent = _agent(rounds)
        await agent.run_round(_records(0, 1))  # before any assignment: all count
        await agent.on_partitions_revoked(None, set())
        await agent.run_round(_records(0, 1))  # taken before the revocation: none ours
        assigned = [TP("t.stage-churn", 1), TP("other", 0)]
        await agent.on_partitions_assigned(None, assigned)
        await agent.run_round(_records(0, 1, 1))
        return rounds, agent.skipped

    rounds, skipped = asyncio.run(scenario())
    assert rounds == [[0, 1], [1, 1]]  # the round between ran nothing
    assert skipped == 3
