"""`sweep --slurm` against the real single-node Slurm (scripts/slurm-local.sh): job arrays packed
N cases per task, the % limit, arrays split at MaxArraySize, scancel then resume, a planted
mismatch, a killed task, requeue on SIGUSR2, and resume never resubmitting a recorded case."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check import slurm
from autograd_check.cli import app
from autograd_check.store import Store

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
runner = CliRunner()
SMALL = ["--cpus", "1", "--mem", "500M", "--time", "5"]
"""Each task: 1 CPU and 500M, so that the 2-CPU test node runs two tasks at once."""


def sweep(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sweep", "--slurm", *SMALL, *args])
    return result.exit_code, result.stdout, result.stderr


def report(out: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["report", str(out), *args])
    return result.exit_code, result.stdout, result.stderr


def manifest(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return doc


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def task_jobs(out: Path, submission: int = -1) -> list[str]:
    return [job for array in manifest(out)["submissions"][submission]["arrays"]
            for job in array["task_jobs"]]


def all_ended(jobs: list[str]) -> bool:
    """No task pending or running. Without accounting (another test may switch it off), Slurm
    forgets cancelled tasks at once: a task nobody knows has ended."""
    states = slurm.array_states(jobs)
    return not any(s in slurm.ACTIVE_STATES for s in states.values())


def test_array_of_24_packed_4_per_task_passes_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A MaxArraySize of 4 here makes the 6 tasks go out as two arrays (4 + 2), as a grid larger
    # than the cluster's real limit would.
    monkeypatch.setattr(slurm, "max_array_size", lambda: 4)
    out = tmp_path / "s"
    code, stdout, stderr = sweep("--shapes", "3x8,4x4", "--dtypes", "float32,float64",
                                 "--seeds", "0-5", "--cases-per-task", "4", "--out", str(out),
                                 "--wait")
    assert code == 0, stderr
    assert "24 cases: 24 passed, 0 failed, 0 error, 0 missing → passed (exit 0)" in stdout
    assert "records 24/24" in stderr
    (submission,) = manifest(out)["submissions"]
    arrays = submission["arrays"]
    assert [len(a["task_jobs"]) for a in arrays] == [4, 2]
    assert all(len(keys) == 4 for a in arrays for keys in a["tasks"])
    assert "#SBATCH --array=0-3%4" in Path(arrays[0]["submission_file"]).read_text()
    store = Store(out)
    docs = store.read_records()
    assert len(docs) == 24
    # every case ran in the task the manifest says it was given to
    for array in arrays:
        for job, keys in zip(array["task_jobs"], array["tasks"], strict=True):
            for key in keys:
                ids = docs[key]["environment"]["slurm"]
                assert f"{ids['array_job_id']}_{ids['array_task_id']}" == job
    code, stdout, _ = report(out, "--json")
    assert code == 0 and json.loads(stdout)["counts"]["passed"] == 24

    # Resume of a complete sweep submits nothing.
    code, _, stderr = sweep("--shapes", "3x8,4x4", "--dtypes", "float32,float64", "--seeds",
                            "0-5", "--cases-per-task", "4", "--out", str(out), "--wait")
    assert code == 0 and "nothing to submit: every case has a record" in stderr
    assert len(manifest(out)["submissions"]) == 1


def test_scancel_some_tasks_then_resume_completes_once(tmp_path: Path) -> None:
    out = tmp_path / "s"
    grid = ["--shapes", "3x8,4x4", "--seeds", "0-11", "--cases-per-task", "4", "--out", str(out)]
    code, stdout, stderr = sweep(*grid, "--max-parallel", "1")
    assert code == 0, stderr
    assert "submitted 24 case(s) as Slurm job array" in stdout and "autograd-check report" in stdout
    jobs = task_jobs(out)
    assert len(jobs) == 6
    array_id = jobs[0].split("_")[0]
    assert "#SBATCH --array=0-5%1" in (out / "logs" / f"{array_id}_submission.sh").read_text()
    store = Store(out)
    wait_for(lambda: len(store.recorded_keys()) >= 4, 120, "the first task's records")
    subprocess.run(["scancel", f"{array_id}_[2-5]"], check=True)
    wait_for(lambda: all_ended(jobs), 120, "the array to end")

    first = {k: store.record_path(k).read_bytes() for k in store.recorded_keys()}
    assert 4 <= len(first) <= 8
    code, stdout, _ = report(out)
    assert code == 4 and "missing" in stdout
    code, stdout, _ = report(out, "--json")
    doc = json.loads(stdout)
    missing = {row["key"] for row in doc["missing"]}
    assert len(missing) == 24 - len(first)
    assert {t["state"] for t in doc["tasks"]} <= {"CANCELLED", "UNKNOWN"}
    assert all(row["job"] in jobs[2:] or row["job"] in jobs[:2] for row in doc["missing"])

    code, stdout, stderr = sweep(*grid, "--wait")
    assert code == 0, stderr
    assert f"resuming: {len(first)} of 24 cases already have a record" in stderr
    resubmitted = {key for array in manifest(out)["submissions"][-1]["arrays"]
                   for keys in array["tasks"] for key in keys}
    assert resubmitted == missing  # resume never resubmits a case that has a record
    assert len(store.recorded_keys()) == 24
    assert all(store.record_path(k).read_bytes() == v for k, v in first.items())


def test_planted_mismatch_shows_in_the_report_with_exit_1(tmp_path: Path) -> None:
    # Tolerance 0 with bfloat16: the hand-derived BCE gradient and autograd's round differently.
    out = tmp_path / "s"
    code, stdout, stderr = sweep("--shapes", "3x8,64x64", "--dtypes", "bfloat16", "--losses",
                                 "bce-logits", "--rtol", "0", "--atol", "0", "--seeds", "0-1",
                                 "--cases-per-task", "4", "--out", str(out), "--wait")
    assert code == 1, stderr
    assert "Failed cases (gradient mismatch)" in stdout
    code, stdout, _ = report(out, "--json")
    doc = json.loads(stdout)
    assert code == 1 and doc["counts"]["failed"] >= 1 and doc["counts"]["missing"] == 0
    for row in doc["failed"]:
        assert row["mismatched"] >= 1 and row["max_rel_diff"] > 0 and row["rtol"] == 0
        assert row["job"].startswith(task_jobs(out)[0])
    code, stdout, _ = report(out, "--markdown")
    assert code == 1 and "### Failed cases" in stdout


def test_killed_task_is_missing_with_exit_4_and_its_log_tail(tmp_path: Path) -> None:
    out = tmp_path / "s"
    code, _, stderr = sweep("--seeds", "0-7", "--cases-per-task", "4", "--max-parallel", "1",
                            "--out", str(out))
    assert code == 0, stderr
    jobs = task_jobs(out)
    victim = jobs[0]
    pids: list[int] = []

    def step_started() -> bool:
        shown = subprocess.run(["scontrol", "show", "job", "-o", victim], capture_output=True,
                               text=True).stdout
        own_id = re.search(r"\bJobId=(\d+)", shown)  # listpids wants the task's own job id
        if own_id is None or "JobState=RUNNING" not in shown:
            return False
        done = subprocess.run(["scontrol", "listpids", own_id[1]], capture_output=True,
                              text=True)
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        pids[:] = [int(r[0]) for r in rows if len(r) >= 3 and r[2] == "0"]
        return bool(pids)

    wait_for(step_started, 120, f"task {victim} to start its step")
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # the task's Python dies mid-way, as on an OOM kill
    wait_for(lambda: all_ended(jobs), 120, "the array to end")
    code, stdout, _ = report(out, "--json")
    doc = json.loads(stdout)
    assert code == 4 and doc["verdict"]["summary"] == "incomplete"
    task = next(t for t in doc["tasks"] if t["job"] == victim)
    assert task["state"] in ("FAILED", "UNKNOWN")  # UNKNOWN: forgotten, accounting off
    assert len(task["missing"]) == 4 - len(Store(out).recorded_keys() & set(task["missing"]))
    assert "Killed" in task["log_tail"] or "exit code" in task["log_tail"]
    assert task["log_paths"][0].endswith(f"{victim}_0_log.err")
    code, stdout, _ = report(out)
    assert code == 4 and f"task {victim} · " in stdout


def test_preempted_task_requeues_and_continues_from_its_first_missing_case(
    tmp_path: Path,
) -> None:
    out = tmp_path / "s"
    # Small cases first, then large ones: the signal lands after some records, before the end.
    code, _, stderr = sweep("--shapes", "3x8,2048x2048", "--dtypes", "float64", "--seeds", "0-3",
                            "--cases-per-task", "8", "--mem", "1G", "--out", str(out))
    assert code == 0, stderr
    (job,) = task_jobs(out)
    store = Store(out)
    wait_for(lambda: len(store.recorded_keys()) >= 1, 120, "the first record")
    subprocess.run(["scancel", "--signal=USR2", job], check=True)  # what Slurm sends at time-out

    def requeued() -> bool:
        done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                              text=True)
        return "Restarts=1" in done.stdout and "JobState=PENDING" in done.stdout

    wait_for(requeued, 60, "submitit to requeue the task")
    before = {k: store.record_path(k).read_bytes() for k in store.recorded_keys()}
    # Slurm holds a requeued job back for a while (BeginTime); let it start now. Not within the
    # second of the requeue: slurmd refuses a credential as old as the revocation of the last one.
    time.sleep(2.5)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    wait_for(lambda: len(store.recorded_keys()) == 8, 120, "the requeued task to finish")
    assert all(store.record_path(k).read_bytes() == v for k, v in before.items())
    log = (out / "logs" / f"{job}_0_log.out").read_text()
    assert f"'skipped': {len(before)}" in log
    assert report(out)[0] == 0


def test_refused_array_is_exit_3_with_sbatch_words(tmp_path: Path) -> None:
    out = tmp_path / "s"
    code, stdout, stderr = sweep("--seeds", "0-3", "--partition", "nosuchpartition", "--out",
                                 str(out))
    assert code == 3 and stdout == ""
    assert "Slurm refused the job array" in stderr and "partition" in stderr.lower()
    assert Store(out).recorded_keys() == set()
