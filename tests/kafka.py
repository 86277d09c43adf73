"""A real Kafka broker for tests, started with deploy/kafka/kafka.sh (never faked)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


class Broker:
    def __init__(self, port: int, data_dir: Path, initial_rebalance_delay_ms: int = 0) -> None:
        self.port = port
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(port),
            "KAFKA_DATA_DIR": str(data_dir),
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": str(initial_rebalance_delay_ms),
        }
        self.bootstrap = f"127.0.0.1:{port}"

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        proc = self.run("start")
        if proc.returncode != 0:
            raise RuntimeError(
                f"could not start Kafka with {SCRIPT}:\n{proc.stdout}\n{proc.stderr}"
            )

    def stop(self) -> None:
        self.run("clean", timeout=120)


def free_port_pair() -> int:
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
