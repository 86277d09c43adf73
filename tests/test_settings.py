"""Where settings come from: the packaged defaults, a user's file (`--config`, or
LOCKSTEP_CONFIG as containers set it), and a policy kept beside that file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.core.settings import DEFAULT_CONFIG, load_settings, policy_path
from tests.helpers import lockstep


def test_a_user_files_relative_policy_is_found_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "lockstep.yaml").write_text("enforcement:\n  policy: strict.yaml\n")
    (folder / "strict.yaml").write_text((DEFAULT_CONFIG.parent / "policy.yaml").read_text())
    assert policy_path(load_settings(folder / "lockstep.yaml")) == folder / "strict.yaml"
    # a name the folder does not hold is still looked up next to the defaults
    (folder / "lockstep.yaml").write_text("enforcement:\n  policy: policy.yaml\n")
    assert policy_path(load_settings(folder / "lockstep.yaml")) == (
        DEFAULT_CONFIG.parent / "policy.yaml"
    )


def test_lockstep_config_names_the_overlay_of_every_command(tmp_path: Path) -> None:
    overlay = tmp_path / "lockstep.yaml"
    overlay.write_text("run:\n  batch_size: 1234\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCKSTEP_")}
    shown = lockstep("config", env={**env, "LOCKSTEP_CONFIG": str(overlay)})
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["batch_size"] == 1234
    plain = lockstep("config", env=env)
    assert json.loads(plain.stdout)["run"]["batch_size"] != 1234
