"""The process a command runs in, against what a user's code does to it.

- A target that forks (at import, say) leaves two processes running the same command: each
  would print its document and write its records. The command records its process id when it
  starts (claimed); a copy that reaches a point where results are written ends there, silently,
  without writing (leave_if_copy), so only the original process writes results.
- A target that calls os._exit(0) (some libraries do on fatal errors) would end the process with
  exit 0 and no verdict: a PASS to any caller that reads only the exit code. While a check runs
  in this process, os._exit called from its main thread raises TargetExited (a SystemExit:
  the user's code ended the check, which is a failed check, exit 1, as sys.exit() is), so the
  check ends with a verdict. Our own threads (a sweep's watchdog) and forked copies still exit.
- Whether an earlier process (a sweep that holds its folder) still runs: pid_alive, with the
  start time that tells a reused pid from the process recorded (process_start).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import NoReturn

_REAL_EXIT = os._exit
_original_pid: int | None = None


@contextlib.contextmanager
def claimed() -> Iterator[None]:
    """For the block (a command): this process runs it, and is the one that writes its results.
    Outside, no process is a copy: a test runner may fork between commands."""
    global _original_pid
    before, _original_pid = _original_pid, os.getpid()
    try:
        yield
    finally:
        if os.getpid() == _original_pid:
            _original_pid = before


def is_copy() -> bool:
    """Whether this process is a fork of the command's, made while it ran (by a user's code)."""
    return _original_pid is not None and os.getpid() != _original_pid


def leave_if_copy() -> None:
    """Before writing a result: a forked copy ends here, writing nothing (no buffered output
    flushed: os._exit), so that the user sees one result, the original process's."""
    if is_copy():
        _REAL_EXIT(0)


class TargetExited(SystemExit):
    """os._exit(code) called by the user's code while a check ran in this process."""

    def __init__(self, code: int) -> None:
        super().__init__(f"os._exit({code}) was called, which would have ended the process "
                         "before the check had a verdict")
        self.exit_status = code


@contextlib.contextmanager
def exits_become_errors() -> Iterator[None]:
    """For the block: os._exit from this thread of this process raises TargetExited instead."""
    owner, thread = os.getpid(), threading.current_thread()

    def guarded_exit(status: int) -> NoReturn:
        if os.getpid() != owner or threading.current_thread() is not thread:
            _REAL_EXIT(status)
        raise TargetExited(status)

    previous = os._exit
    os._exit = guarded_exit
    try:
        yield
    finally:
        os._exit = previous


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (field 3 on); None when /proc cannot
    tell (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces and ')'.
    return text.rpartition(")")[2].split()


def process_start(pid: int) -> str | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None when the
    process does not exist (or /proc cannot tell)."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a running process that this user could have started.

    Not alive: no such process; a zombie (it has ended and runs no code: only its parent has
    not collected it yet); a process of another user (EPERM: a process this user started keeps
    its uid, so the recorded process is gone and its pid reused); pid 0 or below (kill would
    signal a group), or one too large to be a pid. Another OSError says nothing certain: alive,
    so that nothing is taken over from a process that may still run.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError):
        return False
    except OSError:
        return True
    fields = _stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))  # zombie, or dead while being collected
