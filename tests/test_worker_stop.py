"""A worker told to stop exits within kafka.stop_timeout_s. Faust's own stop has no bound:
under load, a worker sent SIGTERM in the hand-over test was still stopping 60 s later."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path

from pipeline.distributed.stopping import FORCED_EXIT, arm_stop_deadline
from tests.helpers import T0, write_lines
from tests.kafka import Broker
from tests.test_kafka_handover import _follow, _wait_for_inputs
from tests.test_kafka_worker import PORTS, _env, _produce, _stop, _worker


def test_the_deadline_exits_once_it_passes_and_says_why(caplog) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:  # os._exit would end the test run
        codes.append(code)
        exited.set()

    started = time.monotonic()
    arm_stop_deadline(0.2, exit=fake_exit)
    assert exited.wait(5), "the deadline never fired"
    assert time.monotonic() - started >= 0.2
    assert codes == [FORCED_EXIT]
    assert "did not stop within kafka.stop_timeout_s" in caplog.text


def test_a_cancelled_deadline_does_nothing() -> None:
    codes: list[int] = []
    timer = arm_stop_deadline(0.2, exit=codes.append)
    timer.cancel()
    time.sleep(0.4)
    assert codes == []


def test_a_worker_whose_stop_outlasts_the_bound_exits_at_it(kafka: Broker, tmp_path: Path) -> None:
    """A real worker, with a bound shorter than any Faust stop (which commits, leaves the
    consumer groups and closes every table store): it must exit at the bound, saying so."""
    PORTS.clear()
    overlay = tmp_path / "stop.yaml"
    overlay.write_text("kafka:\n  stop_timeout_s: 0.1\n")
    env = {**_env(kafka, "stopbound", tmp_path), "LOCKSTEP_CONFIG": str(overlay)}
    workers = [_worker(env, "w1", tmp_path)]
    try:
        lines = [_follow(f"s{i}", T0 + i * 1_000, f"u{i}") for i in range(50)]
        _produce(env, write_lines(tmp_path / "events.jsonl", lines))
        _wait_for_inputs(PORTS["w1"], len(lines), workers)
        started = time.monotonic()
        workers[0].send_signal(signal.SIGTERM)
        try:
            code = workers[0].wait(timeout=15)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError("the worker outlived its stop bound by 15 s") from exc
        took = time.monotonic() - started
    finally:
        _stop(workers)
    log = (tmp_path / "w1.log").read_text()
    assert "did not stop within kafka.stop_timeout_s (0.1 s)" in log, log[-3000:]
    assert code == FORCED_EXIT
    assert took < 10


def test_a_forced_exit_names_what_the_stop_was_waiting_for(caplog) -> None:
    """The line names each pending task and where in its await chain it waits, so a
    stop that hangs can be told apart from one that is merely slow."""
    import asyncio

    exited = threading.Event()

    async def stuck_in_a_commit() -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(stuck_in_a_commit())
        arm_stop_deadline(0.2, exit=lambda code: exited.set(), loop=asyncio.get_running_loop())
        while not exited.is_set():
            await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(main())
    assert "still pending:" in caplog.text
    assert "stuck_in_a_commit at locks.py:" in caplog.text  # inside Event.wait
