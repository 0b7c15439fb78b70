"""Issue 10, items 2 and 8, against the real single-node Slurm (scripts/slurm-local.sh), with unit
tests of the same rules beside them: a time limit is the job's state (exit 4), never a gradient
mismatch; `sweep --force` cancels only the jobs that are this sweep's arrays."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.slurm.arrays import JobIdentity
from autograd_check.sweep import earlier

runner = CliRunner()

SLOW = textwrap.dedent("""\
    import time


    class Slow:
        def loss(self, predicted, real):
            time.sleep(600)  # outlives --time 1 with Slurm's check interval and KillWait
            return ((predicted - real) ** 2).sum()

        def manual_grad(self, predicted, real):
            return 2 * (predicted - real)
""")


def lower_the_limit_once_running(logs: Path, stop: threading.Event,
                                 lowered: list[subprocess.CompletedProcess[str]]) -> None:
    """When the job's log appears (it runs), `scontrol update TimeLimit=0` for it, once."""
    while not stop.wait(0.5):
        started = sorted(logs.glob("*_log.err"))
        if started:
            job = started[0].name.split("_")[0]
            lowered.append(subprocess.run(
                ["scontrol", "update", f"JobId={job}", "TimeLimit=0"],
                capture_output=True, text=True, timeout=60))
            return


def manifest_with_array(log_dir: str, job: str, name: str = "autograd-check") -> dict[str, Any]:
    return {"submissions": [{"mode": "slurm", "parameters": {"job_name": name},
                             "log_dir": log_dir,
                             "arrays": [{"job_id": job, "task_jobs": [f"{job}_0", f"{job}_1"],
                                         "log_dir": log_dir}]}]}


class TestWhoseJobs:
    """The rule, with the controller's answers faked."""

    def test_only_a_job_with_the_sweeps_name_and_log_folder_is_ours(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        logs = tmp_path / "logs"
        logs.mkdir()
        manifest = manifest_with_array(str(logs), "10")
        manifest["submissions"][0]["arrays"].append(
            {"job_id": "11", "task_jobs": ["11_0"], "log_dir": str(logs)})
        manifest["submissions"][0]["arrays"].append(
            {"job_id": "12", "task_jobs": ["12_0"], "log_dir": str(logs)})
        seen = {
            "10": JobIdentity("10", "autograd-check", str(logs / "10_0_0_log.out"), None, None),
            "11": JobIdentity("11", "wrap", str(tmp_path / "slurm-11.out"), None, None),
            "12": JobIdentity("12", "autograd-check", "/elsewhere/12_0_0_log.out", None, None),
        }
        monkeypatch.setattr(earlier, "job_identities", lambda ids: {i: seen[i] for i in ids
                                                                    if i in seen})
        alive = {"10_0": "RUNNING", "10_1": "PENDING", "11_0": "RUNNING", "12_0": "RUNNING",
                 "13_0": "RUNNING"}
        ours, foreign = earlier.sort_jobs(manifest, alive)
        assert ours == {"10_0": "RUNNING", "10_1": "PENDING"}
        assert "job name is 'wrap'" in foreign["11"]
        assert "/elsewhere" in foreign["12"]
        assert "does not say" in foreign["13"]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestOnTheCluster:
    def test_a_time_limit_is_the_jobs_state_not_a_mismatch(self, tmp_path: Path) -> None:
        """--time 1 (Slurm's least) and a loss that sleeps 600 s: TIMEOUT, exit 4, the log.
        Once the job runs, its limit is lowered to 0 (scontrol update, as an admin may): Slurm
        ends it for its time limit at its next check, within seconds, not after the minute."""
        target = tmp_path / "slow.py"
        target.write_text(SLOW)
        logs = tmp_path / "logs"
        lowered: list[subprocess.CompletedProcess[str]] = []
        stop = threading.Event()
        lower = threading.Thread(target=lower_the_limit_once_running,
                                 args=(logs, stop, lowered))
        lower.start()
        try:
            result = runner.invoke(app, ["submit", "--wait", "--time", "1", "--timeout", "240",
                                         "--cpus", "1", "--mem", "500M", "--target",
                                         f"{target}:Slow", "--log-dir", str(logs)])
        finally:
            stop.set()
            lower.join()
        assert [done.returncode for done in lowered] == [0], lowered
        assert result.exit_code == 4, result.output
        assert "TIMEOUT" in result.stderr
        assert "raise --time" in result.stderr
        assert "UncompletedJobError" not in result.output
        assert "FAIL" not in result.stdout
        job = next(p.name.split("_")[0] for p in logs.glob("*_log.err"))
        again = runner.invoke(app, ["result", job, "--log-dir", str(logs)])
        assert again.exit_code == 4, again.output
        assert "TIMEOUT" in again.stderr

    def test_force_leaves_a_job_that_is_not_the_sweeps_alone(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        first = runner.invoke(app, ["sweep", "--local", "--seeds", "0", "--out", str(out)])
        assert first.exit_code == 0, first.output
        done = subprocess.run(["sbatch", "--parsable", "--time", "2", "--mem", "100M",
                               "--output", str(tmp_path / "foreign-%j.out"), "--wrap",
                               "sleep 60"], capture_output=True, text=True, check=True)
        foreign = done.stdout.strip().split(";")[0]
        try:
            path = out / "manifest.json"
            manifest = json.loads(path.read_text())
            manifest["submissions"].append({
                "mode": "slurm", "host": "vm", "cases": 1, "log_dir": str(out / "logs"),
                "parameters": {"job_name": "autograd-check"},
                "arrays": [{"job_id": foreign, "task_jobs": [foreign],
                            "log_dir": str(out / "logs")}],
            })
            path.write_text(json.dumps(manifest))
            result = runner.invoke(app, ["sweep", "--local", "--seeds", "0", "--out", str(out),
                                         "--force"])
            assert result.exit_code == 0, result.output
            assert f"job {foreign}" in result.stderr and "left alone" in result.stderr
            time.sleep(1)
            state = subprocess.run(["squeue", "-h", "-j", foreign, "-o", "%T"],
                                   capture_output=True, text=True).stdout.strip()
            assert state in ("PENDING", "RUNNING"), f"job {foreign} is {state!r}"
        finally:
            subprocess.run(["scancel", foreign], check=False)
