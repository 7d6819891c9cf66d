"""Starting, watching and stopping process trees like Flower's.

A SuperLink starts a SuperExec that leaves its session, and a SuperNode
starts ClientApp processes: stopping or crashing a "site" must take the whole
tree. Plain ``sh``/``sleep`` stand in for the Flower binaries here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fedbone.federation.deployment.processes import (
    FlowerProcess,
    descendant_pids,
    kill_tree,
    start_flower_process,
    wait_until_listening,
)
from fedbone.federation.deployment.runtime import DeploymentError

# A parent that starts a child in a session of its own (as SuperExec does).
_TREE = ["sh", "-c", "setsid sleep 60 & echo started; wait"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie (exited, not yet reaped) counts as gone.
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _started_tree(tmp_path: Path) -> tuple[FlowerProcess, list[int]]:
    process = start_flower_process("tree", _TREE, tmp_path / "tree.log", os.environ)
    deadline = time.monotonic() + 10.0
    while not (children := descendant_pids(process.process.pid)):
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    return process, children


def _wait_gone(pids: list[int], timeout_s: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_stop_ends_the_process_and_what_it_started(tmp_path: Path) -> None:
    process, children = _started_tree(tmp_path)

    process.stop(timeout_s=5.0)

    assert not process.running
    assert _wait_gone(children) == []


def test_kill_tree_ends_everything_at_once(tmp_path: Path) -> None:
    process, children = _started_tree(tmp_path)

    kill_tree(process)

    assert process.process.returncode == -9
    assert _wait_gone(children) == []


def test_the_log_holds_the_output(tmp_path: Path) -> None:
    process, _ = _started_tree(tmp_path)

    process.stop(timeout_s=5.0)

    assert "started" in process.log_tail()


def test_a_process_that_exits_before_listening_is_reported_with_its_log(
    tmp_path: Path,
) -> None:
    process = start_flower_process(
        "superlink",
        ["sh", "-c", "echo 'certificate expired'; exit 3"],
        tmp_path / "superlink.log",
        os.environ,
    )

    with pytest.raises(DeploymentError) as caught:
        wait_until_listening("127.0.0.1:9", process, timeout_s=10.0)

    assert caught.value.codes == ["process-failed"]
    assert "exited before listening" in str(caught.value)
    assert "certificate expired" in str(caught.value)
