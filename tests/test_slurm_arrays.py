"""array_states from what sacct and scontrol print, without a cluster: the controller's word wins
over accounting that lags it (the real-cluster cases are in test_sweep_slurm.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

import pytest

from autograd_check.slurm import arrays

JOBS = ["403_0", "403_1", "403_2", "403_3"]

# Task 0 runs as job 404; tasks 1-2 wait in the array's own record (ArrayTaskId is the range).
CONTROLLER = (
    "JobId=403 ArrayJobId=403 ArrayTaskId=1-2%1 JobState=PENDING Reason=JobArrayTaskLimit\n"
    "JobId=404 ArrayJobId=403 ArrayTaskId=0 JobState=RUNNING Reason=None\n"
)


def fake_slurm(
    monkeypatch: pytest.MonkeyPatch, sacct: str | None, scontrol: str | None
) -> None:
    """sacct and scontrol answer with these outputs (None: the command fails)."""

    def run(cmd: Sequence[str], *args: object, **kwargs: object
            ) -> subprocess.CompletedProcess[str] | None:
        out = {"sacct": sacct, "scontrol": scontrol}.get(cmd[0])
        return None if out is None else subprocess.CompletedProcess(list(cmd), 0, out, "")

    monkeypatch.setattr(arrays, "run_command", run)
    monkeypatch.setattr(arrays, "have", lambda name: name in ("sacct", "scontrol"))


def test_a_task_cancelled_while_pending_is_cancelled_though_accounting_still_lists_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `scancel 403_3`: the controller took task 3 out of the pending range at once; slurmdbd,
    # busy, still has the range as it was when the array was submitted.
    fake_slurm(monkeypatch, sacct="403_0|RUNNING\n403_[1-3%1]|PENDING\n", scontrol=CONTROLLER)
    assert arrays.array_states(JOBS) == {
        "403_0": "RUNNING", "403_1": "PENDING", "403_2": "PENDING", "403_3": "CANCELLED",
    }


def test_accounting_up_to_date_gives_the_same_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_slurm(monkeypatch, sacct="403_0|RUNNING\n403_[1-2%1]|PENDING\n", scontrol=CONTROLLER)
    assert arrays.array_states(JOBS)["403_3"] == "CANCELLED"


def test_a_pending_task_the_controller_still_lists_stays_pending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_slurm(monkeypatch, sacct="403_0|RUNNING\n403_[1-3%1]|PENDING\n",
               scontrol=CONTROLLER.replace("1-2%1", "1-3%1"))
    assert arrays.array_states(JOBS)["403_3"] == "PENDING"


def test_without_the_controller_accounting_is_the_only_word(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # scontrol failing (a hung controller) must not turn accounting's pending tasks into
    # cancelled ones: nothing fresher says they left the array.
    fake_slurm(monkeypatch, sacct="403_0|RUNNING\n403_[1-3%1]|PENDING\n", scontrol=None)
    assert arrays.array_states(JOBS)["403_3"] == "PENDING"


def test_a_task_that_started_is_the_controllers_record_not_accountings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Task 1 started as job 405 a moment ago; accounting has not heard of it yet.
    controller = CONTROLLER.replace("1-2%1", "2%1") + (
        "JobId=405 ArrayJobId=403 ArrayTaskId=1 JobState=RUNNING Reason=None\n"
    )
    fake_slurm(monkeypatch, sacct="403_0|RUNNING\n403_[1-3%1]|PENDING\n", scontrol=controller)
    assert arrays.array_states(JOBS) == {
        "403_0": "RUNNING", "403_1": "RUNNING", "403_2": "PENDING", "403_3": "CANCELLED",
    }
