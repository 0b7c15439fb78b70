"""process.pid_alive, the one answer to "does the process a sweep recorded still run?" (DIR's
claim, the manifest's local runs): a process that has ended, even one not yet collected by its
parent, and a pid that now belongs to another user are not alive."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from autograd_check.base.process import pid_alive, process_start


def state_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except OSError:
        return None


def test_this_process_is_alive() -> None:
    assert pid_alive(os.getpid()) is True
    assert process_start(os.getpid()) is not None


def test_a_collected_process_is_not() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait(timeout=60)
    assert pid_alive(done.pid) is False
    assert process_start(done.pid) is None


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc")
def test_a_zombie_is_not() -> None:
    """Ended, but its parent (this test) has not collected it: kill(pid, 0) still succeeds."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60
        while state_of(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)  # not poll(): that would collect it
        assert state_of(child.pid) == "Z"
        assert pid_alive(child.pid) is False
    finally:
        child.wait(timeout=60)


def test_another_users_process_is_not() -> None:
    """kill(pid, 0) answers EPERM: a process this user started keeps its uid, so the recorded
    one is gone and its pid reused. Asked from a child that runs as another user (uid 65534)
    when the tests run as root; otherwise about pid 1, root's."""
    if os.getuid() != 0:
        assert pid_alive(1) is False
        return
    root_pid = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child)
        code = 3
        try:
            os.setgid(65534)
            os.setuid(65534)
            code = 0 if (pid_alive(root_pid), pid_alive(os.getpid())) == (False, True) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("pid", [0, -1, 2**40])
def test_no_pid_that_names_a_group_or_none(pid: int) -> None:
    assert pid_alive(pid) is False
