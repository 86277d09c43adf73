"""Shared fixtures. The Kafka broker and the PostgreSQL server are real and started here;
a test that needs one fails with its own error when it cannot start, it is never skipped."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.kafka import Broker
from tests.postgres import Server


def _free_port_pair() -> int:
    """A free port whose next one is free too (the broker's client and KRaft controller
    ports): another test run, or a benchmark's broker, may hold any fixed pair."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port >= 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row for the Kafka broker")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(port=_free_port_pair(), data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A real PostgreSQL server; a test that needs it fails when it cannot start."""
    with socket.socket() as probe:  # a free port: another test run may hold any fixed one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = Server(port=port)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()
