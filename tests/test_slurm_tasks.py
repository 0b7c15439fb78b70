"""slurm/tasks.py on log files written here: which rank srun saw end first, and that rank's own
lines (the real job: tests/test_ranks_slurm.py, a killed rank)."""

from __future__ import annotations

from pathlib import Path

import pytest

from autograd_check.slurm.tasks import dead_rank, ended_task, task_tail

SRUN_KILLED = """\
srun: error: n1: task 1: Killed
srun: launch/slurm: _step_signal: Terminating StepId=7.0
srun: error: n1: task 0: Killed
"""


@pytest.mark.parametrize(("text", "ended"), [
    (SRUN_KILLED, (1, "Killed")),
    ("srun: error: n2: task 3: Exited with exit code 9\n", (3, "Exited with exit code 9")),
    ("srun: error: vm: tasks 0-1: Killed\n", (0, "Killed")),
    ("submitit INFO (...) - Starting\n", None),
])
def test_the_task_srun_saw_end_first(text: str, ended: tuple[int, str] | None) -> None:
    assert ended_task(text) == ended


def _job(folder: Path, tasks: int) -> None:
    for task in range(tasks):
        (folder / f"7_{task}_log.out").write_text(
            "submitit INFO (2026) - Starting with JobEnvironment\n" + "".join(
                f"rank {task}: line {i}\n" for i in range(30)))
        (folder / f"7_{task}_log.err").write_text("")
    (folder / "7_1_log.err").write_text("Traceback (most recent call last):\nMemoryError\n")


def test_the_dead_rank_is_named_with_its_own_last_lines(tmp_path: Path) -> None:
    _job(tmp_path, 2)
    said, tail = dead_rank(tmp_path, "7", SRUN_KILLED) or ("", "")
    assert said == "rank 1 of 2 ended first (Killed)"
    lines = tail.splitlines()
    assert lines[:3] == [f"{tmp_path / '7_1_log.err'}:", "[rank 1] Traceback (most recent call "
                         "last):", "[rank 1] MemoryError"]
    # stdout's last lines, submitit's own left out
    assert lines[3] == f"{tmp_path / '7_1_log.out'}:"
    assert lines[4:] == [f"[rank 1] rank 1: line {i}" for i in range(18, 30)]


def test_a_job_of_one_task_has_no_dead_rank(tmp_path: Path) -> None:
    _job(tmp_path, 1)
    assert dead_rank(tmp_path, "7", "srun: error: vm: task 0: Killed\n") is None


def test_a_task_without_logs_has_an_empty_tail(tmp_path: Path) -> None:
    assert task_tail(tmp_path, "7", 1) == ""
