"""`cvm down` stops a `cvm up` from another shell and leaves no process behind."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Cli, descendants, group_alive, pid_alive, stop_up

pytestmark = pytest.mark.e2e


def test_down_leaves_nothing_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cli = Cli(tmp_path)
    up = cli.spawn_up("--nodes", "1")
    try:
        state = cli.wait_ready(up)
        assert set(state["groups"]) == {"anvil", "redis", "backend", "node-0"}
        assert (tmp_path / "deployment.json").exists()
        below = descendants(up.pid)
        assert len(below) >= 4

        stopped = cli.json("down")
        assert stopped["stopped"] is True
        assert up.wait(60) == 0
    finally:
        stop_up(up)
    assert [name for name, pgid in state["groups"].items() if group_alive(pgid)] == []
    assert [pid for pid in below if pid_alive(pid)] == []
    assert not (tmp_path / "stack.json").exists()
    assert not (tmp_path / "deployment.json").exists(), "the chain's record went with it"
    assert cli.json("down")["stopped"] is False
