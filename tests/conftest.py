"""Shared fixtures. The Kafka broker and the PostgreSQL server are real and started here;
a test that needs one fails with its own error when it cannot start, it is never skipped."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.kafka import Broker, free_port_pair
from tests.postgres import Server


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(port=free_port_pair(), data_dir=tmp_path_factory.mktemp("kafka"))
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
