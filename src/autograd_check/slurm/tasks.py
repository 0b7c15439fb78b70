"""The rank that ended a job of N tasks (submit --ranks N), and its own output.

A job's log tail is task 0's (submitit's batch script and srun write there): when rank 1 is
killed, it says `srun: error: n1: task 1: Killed` and nothing of what rank 1 printed. Each task
has its own logs, `JOB_TASK_log.out` and `.err`, in the job's folder: this module names the task
that srun saw end first, and gives the last lines of its own logs, each marked `[rank T]` as a
local run's are (distributed/launch.py).
"""

from __future__ import annotations

import re
from pathlib import Path

TASK_LINES = 12
"""Lines of the dead rank's own stderr (and as many of its stdout) shown."""
_ENDED = re.compile(r"^srun: error: \S+: tasks? (\d+)(?:[-,]\d+)*: (.+)$", re.MULTILINE)
"""srun's word on a task that ended badly: 'srun: error: vm: task 1: Killed',
'... task 1: Exited with exit code 9' (several: 'tasks 0-1: Killed')."""
_LAUNCHER = ("submitit ", "srun: ", "slurmstepd")
"""Lines of the launcher in a task's log, not of the rank itself."""


def task_count(folder: Path, job_id: str) -> int:
    """How many tasks of the job left a log (1 for a job that is not over ranks)."""
    return len(list(folder.glob(f"{job_id}_*_log.out"))) or 1


def ended_task(log_text: str) -> tuple[int, str] | None:
    """(task, how) of the first task srun says ended badly, from task 0's stderr log."""
    match = _ENDED.search(log_text)
    if match is None:
        return None
    return int(match.group(1)), match.group(2).strip()


def own_lines(path: Path, lines: int) -> list[str]:
    """The last lines of a task's log that are its own (not the launcher's)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    own = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(_LAUNCHER)]
    return own[-lines:]


def task_tail(folder: Path, job_id: str, task: int, lines: int = TASK_LINES) -> str:
    """The last lines of a task's own stderr, then of its stdout, each marked [rank T]."""
    out = []
    for suffix in ("err", "out"):
        path = folder / f"{job_id}_{task}_log.{suffix}"
        last = own_lines(path, lines)
        if last:
            out.append(f"{path}:")
            out += [f"[rank {task}] {ln}" for ln in last]
    return "\n".join(out)


def dead_rank(folder: Path, job_id: str, task0_err: str) -> tuple[str, str] | None:
    """For a job over ranks that failed: ('rank 1 of 2 ended first (Killed)', rank 1's own log
    tail), the rank srun saw end first; None for a job of one task, or when srun named none."""
    tasks = task_count(folder, job_id)
    ended = ended_task(task0_err)
    if tasks < 2 or ended is None:
        return None
    task, how = ended
    return f"rank {task} of {tasks} ended first ({how})", task_tail(folder, job_id, task)
