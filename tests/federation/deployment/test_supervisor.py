"""``fedbone site start`` keeps its SuperNode going through refused activations.

The supervisor runs in a child Python (it installs signal handlers and
becomes a subreaper, which a test process should not); a shell script plays
``flower-supernode``, with a counter file saying how often it was started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

DRIVER = textwrap.dedent(
    """
    import logging, sys
    from fedbone.errors import FedboneError
    from fedbone.federation.deployment.supervisor import run_supernode
    logging.basicConfig(level=logging.INFO)
    try:
        code = run_supernode(
            ["sh", sys.argv[1]], {"PATH": "/usr/bin:/bin"}, site="A",
            retry_s=float(sys.argv[2]), pause_s=0.2,
        )
    except FedboneError as exc:
        print("FAILED", exc, file=sys.stderr)
        code = 2
    sys.exit(code)
    """
)


# What flower-supernode prints when it is refused; it then exits with status 1.
REFUSED = "echo 'Exit Code: 305'; echo '[code: 2004] Failed to activate'; exit 1\n"


def _fake_supernode(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "supernode.sh"
    script.write_text(
        f"count=$(cat {tmp_path}/starts 2>/dev/null || echo 0)\n"
        f"count=$((count + 1)); echo $count > {tmp_path}/starts\n" + body
    )
    return script


def _supervise(script: Path, retry_s: float = 30.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(script), str(retry_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _starts(tmp_path: Path) -> int:
    return int((tmp_path / "starts").read_text())


def test_a_refused_supernode_is_started_again_until_it_gets_in(
    tmp_path: Path,
) -> None:
    script = _fake_supernode(tmp_path, f'if [ "$count" -lt 3 ]; then {REFUSED}fi\n')

    supervisor = _supervise(script)
    output, _ = supervisor.communicate(timeout=60)

    assert supervisor.returncode == 0, output
    assert _starts(tmp_path) == 3
    assert output.count("refused to activate") == 2


def test_a_supernode_refused_for_too_long_ends_with_the_likely_causes(
    tmp_path: Path,
) -> None:
    script = _fake_supernode(tmp_path, REFUSED)

    supervisor = _supervise(script, retry_s=1.0)
    output, _ = supervisor.communicate(timeout=60)

    assert supervisor.returncode == 2
    assert "activation-refused" in output
    assert "fedbone server register --site A" in output
    assert 2 <= _starts(tmp_path) <= 6


def test_any_other_exit_is_passed_on_at_once(tmp_path: Path) -> None:
    script = _fake_supernode(tmp_path, "echo 'Exit Code: 301'; exit 1\n")

    supervisor = _supervise(script)
    output, _ = supervisor.communicate(timeout=60)

    assert supervisor.returncode == 1
    assert "Exit Code: 301" in output  # the SuperNode's output is passed on
    assert _starts(tmp_path) == 1


def test_sigterm_reaches_the_supernode_and_ends_the_site(tmp_path: Path) -> None:
    script = _fake_supernode(
        tmp_path,
        f"trap 'echo stopped > {tmp_path}/term; exit 0' TERM\n"
        "while true; do sleep 0.1; done\n",
    )
    supervisor = _supervise(script)
    deadline = time.monotonic() + 30
    while not (tmp_path / "starts").is_file():
        assert time.monotonic() < deadline
        time.sleep(0.05)

    supervisor.send_signal(signal.SIGTERM)
    supervisor.communicate(timeout=30)

    assert supervisor.returncode == 0
    assert (tmp_path / "term").read_text().strip() == "stopped"
    assert _starts(tmp_path) == 1


def test_what_a_refused_attempt_left_running_is_stopped(tmp_path: Path) -> None:
    # Like Flower's SuperExec: a child in its own session, outliving the node.
    script = _fake_supernode(
        tmp_path,
        f"setsid sleep 300 & echo $! > {tmp_path}/orphan.$count\n"
        f'if [ "$count" -lt 2 ]; then {REFUSED}fi\n',
    )

    supervisor = _supervise(script)
    output, _ = supervisor.communicate(timeout=60)

    assert supervisor.returncode == 0, output
    for attempt in (1, 2):
        orphan = int((tmp_path / f"orphan.{attempt}").read_text())
        assert not _running(orphan), f"attempt {attempt} left pid {orphan}"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_supernode_signalled_with_the_supervisor_gets_one_sigterm(
    tmp_path: Path,
) -> None:
    # systemd and process-tree stops signal every process; Flower's SuperNode
    # dies without leaving gracefully on a second SIGTERM.
    script = _fake_supernode(
        tmp_path,
        f"echo $$ > {tmp_path}/pid\n"
        f"trap 'echo term >> {tmp_path}/term; sleep 1; exit 0' TERM\n"
        "while true; do sleep 0.1; done\n",
    )
    supervisor = _supervise(script)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").is_file():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.2)
    child = int((tmp_path / "pid").read_text())

    os.kill(child, signal.SIGTERM)
    supervisor.send_signal(signal.SIGTERM)
    supervisor.communicate(timeout=30)

    assert supervisor.returncode == 0
    assert (tmp_path / "term").read_text().splitlines() == ["term"]
