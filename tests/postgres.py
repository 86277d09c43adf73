"""A real PostgreSQL server for tests, started with deploy/postgres/postgres.sh (Debian's
packages, installed when missing; never faked)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "postgres" / "postgres.sh"


class Server:
    def __init__(self, port: int) -> None:
        # Its own directory under /tmp, open to the postgres account the server runs as
        # (pytest's temporary directories are private to the user running the tests).
        self.home = Path(tempfile.mkdtemp(prefix="lockstep-pg-"))
        self.home.chmod(0o755)
        self.env = {**os.environ, "PG_DATA_DIR": str(self.home / "data"), "PG_PORT": str(port)}
        self.url = ""

    def _run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(SCRIPT), command],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=600,
            check=False,
        )

    def start(self) -> None:
        proc = self._run("start")
        if proc.returncode != 0:
            raise RuntimeError(
                f"could not start PostgreSQL with {SCRIPT}:\n{proc.stdout}\n{proc.stderr}"
            )
        self.url = proc.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        self._run("stop")
