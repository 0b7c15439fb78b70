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

from autograd_check.cli import app
from autograd_check.slurm import arrays as slurm_arrays
from autograd_check.slurm import commands
from autograd_check.sweep.store import Store

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


def records(out: Path) -> dict[str, dict[str, Any]]:
    """Every record in OUT that reads as one, by key."""
    store = Store(out)
    docs = {key: store.read_record(key) for key in store.recorded_keys()}
    return {key: doc for key, doc in docs.items() if doc is not None}


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
    states = slurm_arrays.array_states(jobs)
    return not any(s in commands.ACTIVE_STATES for s in states.values())


def test_array_of_24_packed_4_per_task_passes_and_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A MaxArraySize of 4 here makes the 6 tasks go out as two arrays (4 + 2), as a grid larger
    # than the cluster's real limit would.
    monkeypatch.setattr(slurm_arrays, "max_array_size", lambda: 4)  # submit_arrays reads it
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
    docs = records(out)
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
    (array,) = manifest(out)["submissions"][0]["arrays"]
    given = {key: job for job, keys in zip(array["task_jobs"], array["tasks"], strict=True)
             for key in keys}  # case → the task it was given to
    store = Store(out)
    wait_for(lambda: len(store.recorded_keys()) >= 4, 120, "the first task's records")
    subprocess.run(["scancel", f"{array_id}_[2-5]"], check=True, timeout=30)
    wait_for(lambda: all_ended(jobs), 120, "the array to end")

    # One task at a time (%1): task 0 had just finished when tasks 2-5 were cancelled, so they
    # never started, and task 1 (running or next) was left to finish.
    first = {k: store.record_path(k).read_bytes() for k in store.recorded_keys()}
    assert set(first) == {key for key, job in given.items() if job in jobs[:2]}
    code, stdout, _ = report(out)
    assert code == 4 and "missing" in stdout
    code, stdout, _ = report(out, "--json")
    doc = json.loads(stdout)
    missing = {row["key"] for row in doc["missing"]}
    # each missing case is reported with the cancelled task it was given to
    assert {row["key"]: row["job"] for row in doc["missing"]} == {
        key: job for key, job in given.items() if job in jobs[2:]}
    assert {t["job"] for t in doc["tasks"]} == set(jobs[2:])
    assert {t["state"] for t in doc["tasks"]} <= {"CANCELLED", "UNKNOWN"}

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


def _in_job(pid: int, job_id: str) -> bool:
    """Whether process `pid` runs in Slurm job `job_id` (its environment says so)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"SLURM_JOB_ID={job_id}".encode() in environ


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
                               text=True, timeout=30).stdout
        own_id = re.search(r"\bJobId=(\d+)", shown)  # listpids wants the task's own job id
        if own_id is None or "JobState=RUNNING" not in shown:
            return False
        done = subprocess.run(["scontrol", "listpids", own_id[1]], capture_output=True,
                              text=True, timeout=30)
        rows = [line.split() for line in done.stdout.splitlines()[1:]]
        # only processes that are this job's own: a pid listed a moment ago may belong to
        # another process by now (never kill one that does not carry the job's id)
        pids[:] = [int(r[0]) for r in rows if len(r) >= 3 and r[2] == "0"
                   and _in_job(int(r[0]), own_id[1])]
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
    # what Slurm sends at time-out
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    requeued_at: list[float] = []  # the requeue's second: the requeued job's SubmitTime

    def requeued() -> bool:
        done = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True,
                              text=True, timeout=30)
        submitted = re.search(r"\bSubmitTime=(\S+)", done.stdout)
        if "Restarts=1" in done.stdout and "JobState=PENDING" in done.stdout and submitted:
            requeued_at[:] = [time.mktime(time.strptime(submitted[1], "%Y-%m-%dT%H:%M:%S"))]
            return True
        return False

    wait_for(requeued, 60, "submitit to requeue the task")
    before = {k: store.record_path(k).read_bytes() for k in store.recorded_keys()}
    # Slurm holds a requeued job back for a while (BeginTime); let it start now. Not within the
    # second of the requeue: slurmd refuses a credential as old as the revocation of the last one
    # (both in whole seconds), so wait until a whole second after the requeue's has begun.
    wait_for(lambda: time.time() >= requeued_at[0] + 2, 10, "the second after the requeue's")
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True,
                   timeout=30)
    wait_for(lambda: len(store.recorded_keys()) == 8, 120, "the requeued task's records")
    assert all(store.record_path(k).read_bytes() == v for k, v in before.items())
    # its summary line comes after its last record: wait for the task to end before reading it
    wait_for(lambda: all_ended([job]), 60, "the requeued task to end")
    log = (out / "logs" / f"{job}_0_log.out").read_text()
    summary = {"passed": 8 - len(before), "failed": 0, "error": 0, "skipped": len(before)}
    assert f"autograd-check array task: {summary}\n" in log, log
    assert report(out)[0] == 0


def test_refused_array_is_exit_3_with_sbatch_words(tmp_path: Path) -> None:
    out = tmp_path / "s"
    code, stdout, stderr = sweep("--seeds", "0-3", "--partition", "nosuchpartition", "--out",
                                 str(out))
    assert code == 3 and stdout == ""
    assert "Slurm refused the job array" in stderr and "partition" in stderr.lower()
    assert Store(out).recorded_keys() == set()


def cancel_and_wait(out: Path) -> None:
    """Leave the cluster as found: cancel every array of the sweep and wait until they end."""
    jobs = [job for s in manifest(out)["submissions"] for a in s.get("arrays", [])
            for job in a["task_jobs"]]
    if jobs:
        subprocess.run(["scancel", *sorted({j.split("_")[0] for j in jobs})], check=False,
                       timeout=30)
        wait_for(lambda: all_ended(jobs), 120, "the cancelled arrays to end")


def test_second_sweep_while_the_first_is_queued_is_refused(tmp_path: Path) -> None:
    """Running the same sweep again while its array is still queued would run cases twice."""
    out = tmp_path / "s"
    grid = ["--seeds", "0-3", "--cases-per-task", "2", "--setup", "sleep 30", "--out", str(out)]
    try:
        code, _, stderr = sweep(*grid)
        assert code == 0, stderr
        (first,) = {j.split("_")[0] for j in task_jobs(out)}
        code, stdout, stderr = sweep(*grid)
        assert code == 2 and stdout == ""
        assert stderr.count("\n") == 1
        assert f"job array {first} of an earlier sweep into --out" in stderr
        assert "pending or running" in stderr and f"scancel {first}" in stderr
        assert "autograd-check report" in stderr and "--force" in stderr
        assert len(manifest(out)["submissions"]) == 1  # nothing was submitted again
    finally:
        cancel_and_wait(out)


def test_force_cancels_the_running_array_and_only_the_new_grid_counts(tmp_path: Path) -> None:
    """--force onto an array still running: the old array is cancelled, and no record of the old
    grid (tolerance 0, so some of its cases fail) is credited to the new one."""
    out = tmp_path / "s"
    grid = ["--shapes", "64x64", "--dtypes", "bfloat16,float32", "--losses", "bce-logits",
            "--seeds", "0-1", "--out", str(out)]
    try:
        code, _, stderr = sweep(*grid, "--rtol", "0", "--atol", "0", "--setup", "sleep 4")
        assert code == 0, stderr
        old_jobs = task_jobs(out)
        old_array = old_jobs[0].split("_")[0]
        code, _, stderr = sweep(*grid)  # another grid (default tolerances): refused
        assert code == 2 and "holds another sweep" in stderr
        code, stdout, stderr = sweep(*grid, "--force", "--wait")
        assert code == 0, stderr + stdout
        assert f"--force: job array {old_array} of an earlier sweep" in stderr
        assert "cancelling it" in stderr
        old_states = slurm_arrays.array_states(old_jobs).values()
        assert not any(s in commands.ACTIVE_STATES for s in old_states)
        doc = manifest(out)
        new_array = task_jobs(out)[0].split("_")[0]
        assert new_array != old_array and len(doc["submissions"]) == 1
        for record in records(out).values():
            assert record["case"]["grid_id"] == doc["grid_id"]
            assert record["environment"]["slurm"]["array_job_id"] == new_array
            assert record["spec"]["rtol"] is None
        code, stdout, _ = report(out, "--json")
        assert code == 0 and json.loads(stdout)["counts"]["passed"] == 4
    finally:
        cancel_and_wait(out)


def test_tasks_cancelled_before_they_start_are_cancelled_not_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s"
    code, _, stderr = sweep("--seeds", "0-3", "--max-parallel", "1", "--setup", "sleep 30",
                            "--out", str(out))
    assert code == 0, stderr
    jobs = task_jobs(out)
    array_id = jobs[0].split("_")[0]
    try:
        wait_for(lambda: slurm_arrays.array_states(jobs[:1]).get(jobs[0]) == "RUNNING", 60,
                 "the first task to start")
        # Task 3 leaves the array while 1 and 2 still wait: no record anywhere names it.
        subprocess.run(["scancel", f"{array_id}_3"], check=True, timeout=30)
        wait_for(lambda: slurm_arrays.array_states(jobs).get(jobs[3]) == "CANCELLED", 30,
                 "task 3 to show as cancelled")
        assert slurm_arrays.array_states(jobs)[jobs[1]] == "PENDING"
        # Every waiting task cancelled: only the array's own record (ArrayTaskId=4294967294
        # in scontrol) says so; without accounting it is the only word.
        subprocess.run(["scancel", f"{array_id}_[1-2]"], check=True, timeout=30)
        real_run = commands.run_command

        def no_accounting(cmd: Any, *args: Any, **kwargs: Any) -> Any:
            return None if cmd[0] == "sacct" else real_run(cmd, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(slurm_arrays, "run_command", no_accounting)  # array_states looks it up there
            wait_for(lambda: {slurm_arrays.array_states(jobs).get(j) for j in jobs[1:3]}
                     == {"CANCELLED"}, 30, "tasks 1 and 2 to show as cancelled")
        code, stdout, _ = report(out, "--json")
        states = {t["job"]: t["state"] for t in json.loads(stdout)["tasks"]}
        assert code == 4
        assert states[jobs[1]] == states[jobs[2]] == states[jobs[3]] == "CANCELLED"
        code, stdout, _ = report(out)
        assert "UNKNOWN to Slurm now" not in stdout and f"task {jobs[3]} · CANCELLED" in stdout
    finally:
        cancel_and_wait(out)
