"""The on-premise path end to end: cluster/rehearse.sh runs `ray up cluster/onprem.yaml` against this
machine over SSH, `ray submit` of a short smoke search, checks its results table and runs `ray down`.
Slow, and it needs root (an SSH server on port 22) and no other Ray on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_ray_up_submit_and_down_on_this_machine_over_ssh() -> None:
    if shutil.which("bash") is None or os.geteuid() != 0:
        pytest.skip("the rehearsal needs bash and root (it starts an SSH server on port 22)")
    if subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True).returncode == 0:
        pytest.skip("a Ray is running on this machine, and ray down would stop it")
    environment = {**os.environ, "ASTRA_PYTHON": sys.executable}
    for name in ("RAY_ADDRESS", "ASTRA_REHEARSAL_KEEP"):
        environment.pop(name, None)
    done = subprocess.run(
        ["bash", str(REPO / "cluster" / "rehearse.sh")],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-5000:]
    assert "2 trials, " in output and "rehearsal passed" in output
    # Nothing is left running, and the key and the PATH block are gone.
    assert subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True).returncode != 0
    home = Path.home()
    assert "astra-rehearsal" not in (home / ".ssh" / "authorized_keys").read_text(encoding="utf-8")
    assert "astra-rehearsal" not in (home / ".bashrc").read_text(encoding="utf-8")
