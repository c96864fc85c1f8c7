"""`cvm demo` reuses a running stack only if it runs the launcher the demo was asked for."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from cvm.cli import app
from devstack.state import StackState


def test_demo_refuses_a_running_stack_of_another_launcher(tmp_path: Path) -> None:
    # This test process stands for the stack's runner: alive, with its own start time.
    StackState(os.getpid(), "ready", str(tmp_path), str(tmp_path / "deployment.json"),
               launcher="qemu").save(tmp_path)  # fmt: skip
    args = ["demo", "--data-dir", str(tmp_path), "--launcher", "simulated"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--launcher qemu" in lines[0], result.output
