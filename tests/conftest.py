"""Shared fixtures. The Kafka broker is real and started here; a test that needs it fails
with the broker's own error when it cannot start, it is never skipped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kafka import Broker


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = Broker(port=19392, data_dir=tmp_path_factory.mktemp("kafka"))
    try:
        broker.start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield broker
    broker.stop()
