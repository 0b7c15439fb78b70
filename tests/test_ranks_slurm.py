"""submit --ranks 2 on the real local cluster (scripts/slurm-local.sh): one Slurm job of two
tasks (submitit), or one srun step of two tasks inside `salloc -n 2`; a correct module passes
under DDP and FSDP2, a planted bug fails with its cause, a killed rank ends the job (exit 4, with
Slurm's words in the log tail), and a submitting shell's torch.distributed variables are not read.

Every job asks for one CPU per rank (the node's two) and 1 GB; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]

ROOT = Path(__file__).resolve().parents[1]
CORRECT = f"{ROOT / 'examples' / 'ranks_correct.py'}:TwoLayer"
BUGS = ROOT / "examples" / "ranks_bugs.py"
CLI = [sys.executable, "-m", "autograd_check"]
JOB = ["--cpus", "1", "--mem", "1G", "--timeout", "120"]
ALLOC = ["salloc", "--nodes=1", "--ntasks=2", "--cpus-per-task=1", "--mem=1G", "--time=5",
         "--job-name=agc-test-ranks"]
PARAMETERS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                  "AUTOGRAD_CHECK_RENDEZVOUS")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Slurm allocation or torchrun variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))
           and k not in RANK_VARIABLES}
    env.update(COLUMNS="120", NO_COLOR="1", **extra)
    return env


def cli(*args: str, wrap: tuple[str, ...] = (), timeout: float = 180,
        **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrap, *CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**extra))


def submitted_id(stderr: str) -> str:
    match = re.search(r"submitted Slurm job (\d+)", stderr)
    assert match, stderr
    return match.group(1)


def assert_passed(doc: dict[str, Any], parallel: str) -> None:
    assert doc["verdict"]["passed"] is True, doc["verdict"]
    assert [s["name"] for s in doc["statistics"]] == PARAMETERS
    ranks = doc["distributed"]
    assert ranks["ranks"] == 2 and ranks["parallel"] == parallel and ranks["ranks_agree"] is True
    assert len(ranks["hosts"]) == 2 and ranks["cause"] is None


class TestAJobOfTwoTasks:
    @pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.fsdp)])
    def test_the_correct_module_passes(self, tmp_path: Path, parallel: str) -> None:
        logs = tmp_path / "logs"
        done = cli("submit", "--ranks", "2", "--target", CORRECT, "--parallel", parallel,
                   "--accumulate", "2", "--dtype", "float64", "--wait", "--json",
                   "--log-dir", str(logs), *JOB)
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert_passed(doc, parallel)
        job_id = submitted_id(done.stderr)
        assert doc["environment"]["slurm"]["job_id"] == job_id
        # one task per rank, each with its own log; the rendezvous file is gone
        assert (logs / f"{job_id}_0_log.out").exists() and (logs / f"{job_id}_1_log.out").exists()
        assert not list(logs.glob(".rendezvous-*"))

    def test_a_submitting_shells_rank_variables_are_not_read(self, tmp_path: Path) -> None:
        done = cli("submit", "--ranks", "2", "--model", "mlp", "--shape", "8x8", "--loss",
                   "mse-mean", "--dtype", "float64", "--wait", "--json",
                   "--log-dir", str(tmp_path / "logs"), *JOB,
                   MASTER_PORT="29500", MASTER_ADDR="no-such-host.invalid", RANK="3",
                   WORLD_SIZE="7")
        assert done.returncode == 0, done.stderr
        assert_passed(json.loads(done.stdout), "ddp")

    def test_a_planted_bug_fails_with_its_cause(self, tmp_path: Path) -> None:
        done = cli("submit", "--ranks", "2", "--target", f"{BUGS}:UnscaledAccumulation",
                   "--accumulate", "2", "--wait", "--json", "--log-dir", str(tmp_path / "logs"),
                   *JOB)
        assert done.returncode == 1, done.stderr
        doc = json.loads(done.stdout)
        assert doc["verdict"]["passed"] is False
        [finding] = doc["diagnosis"]
        assert finding["kind"] == "scale" and finding["factor"] == 2.0
        assert finding["text"].startswith(
            "every gradient is 2 (= K, K = 2 micro-batches) times the reference: the accumulated "
            "loss is not divided by the 2 micro-batches (unscaled accumulation)")

    def test_a_killed_rank_fails_the_job_with_its_log(self, tmp_path: Path) -> None:
        target = DIES
        start = time.monotonic()
        done = cli("submit", "--ranks", "2", "--target", f"{target}:Dies", "--wait",
                   "--log-dir", str(tmp_path / "logs"), "--cpus", "1", "--mem", "1G",
                   "--timeout", "60")
        took = time.monotonic() - start
        assert done.returncode == 4, done.stderr
        job_id = submitted_id(done.stderr)
        lines = done.stderr.splitlines()
        error = [ln for ln in lines if ln.startswith("autograd-check: error: ")]
        assert len(error) == 1 and re.fullmatch(
            rf"autograd-check: error: Slurm job {job_id} failed \(state FAILED, exit code "
            r"\d+:\d+\): rank 1 of 2 ended first \(Killed\)", error[0]), done.stderr
        # the tail of the job's log: srun saying which task was killed, then that rank's own
        # output, as a local run shows it
        assert "last lines of the job's log:" in lines, done.stderr
        assert any(re.fullmatch(r"  srun: error: \S+: task 1: Killed", ln) for ln in lines), \
            done.stderr
        own = lines.index(f"  {tmp_path / 'logs' / f'{job_id}_1_log.out'}:")
        assert lines[own + 1:] == ["  [rank 1] rank 1: about to be killed"], done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        assert took < 60, took
        log = (tmp_path / "logs" / f"{job_id}_1_log.out").read_text()
        assert "rank 1: about to be killed" in log


    def test_the_users_exception_on_one_rank_is_a_failed_check(self, tmp_path: Path) -> None:
        """Rank 1 raises; rank 0, the job's answer, reads its error once its all-reduce breaks."""
        target = DIES
        done = cli("submit", "--ranks", "2", "--target", f"{target}:RaisesOnRank1", "--wait",
                   "--json", "--log-dir", str(tmp_path / "logs"), *JOB)
        assert done.returncode == 1, done.stderr
        doc = json.loads(done.stdout)
        error, host = doc["verdict"]["error"], doc["environment"]["host"]
        assert error.startswith(f"rank 1 of 2, on host {host}: train_step() raised ValueError: "
                                "planted: rank 1 refuses (at ranks_targets.py:"), error
        assert doc["distributed"]["raised_on"] == {"rank": 1, "host": host}


class TestAStepInsideAnAllocation:
    def test_one_srun_step_of_two_tasks_passes(self, tmp_path: Path) -> None:
        logs = tmp_path / "logs"
        done = cli("submit", "--ranks", "2", "--target", CORRECT, "--dtype", "float64",
                   "--json", "--timeout", "120", "--log-dir", str(logs), wrap=tuple(ALLOC))
        assert done.returncode == 0, done.stderr
        granted = re.search(r"Granted job allocation (\d+)", done.stderr)
        assert granted, done.stderr
        doc = json.loads(done.stdout)
        assert_passed(doc, "ddp")
        slurm = doc["environment"]["slurm"]
        assert slurm["job_id"] == granted.group(1) and slurm["step_id"] is not None
        assert f"step of Slurm job {granted.group(1)}" in done.stderr
        assert not list(logs.glob("*_log.out")), "no batch job was queued"
        assert not list(logs.glob("step-ranks-*")), "a passed step leaves no rank logs behind"

    def test_a_killed_rank_ends_the_step(self, tmp_path: Path) -> None:
        target = DIES
        start = time.monotonic()
        done = cli("submit", "--ranks", "2", "--target", f"{target}:Dies", "--timeout", "60",
                   "--log-dir", str(tmp_path / "logs"), wrap=tuple(ALLOC))
        took = time.monotonic() - start
        assert done.returncode == 4, done.stderr
        assert re.search(r"autograd-check: error: a step of Slurm job \d+ ended without a "
                         r"result \(state CANCELLED, srun exit code -?\d+\): rank 1 of 2 ended "
                         r"first \(Killed\)", done.stderr), done.stderr
        assert re.search(r"\n  srun: error: \S+: task 1: Killed\n", done.stderr), done.stderr
        # then that rank's own output, from its own log, as a local run and a batch job show it
        lines = done.stderr.splitlines()
        own = [i for i, ln in enumerate(lines)
               if re.fullmatch(r"  \S+/step-ranks-[0-9a-f]{8}-1\.out:", ln)]
        assert own and lines[own[0] + 1] == "  [rank 1] rank 1: about to be killed", done.stderr
        assert "Traceback" not in done.stderr
        assert took < 60, took


DIES = Path(__file__).with_name("ranks_targets.py")
"""Targets that kill or raise (tests/ranks_targets.py)."""



def test_an_allocation_with_too_few_tasks_says_what_to_ask_for(tmp_path: Path) -> None:
    one_task = [*ALLOC[:2], "--ntasks=1", *ALLOC[3:]]
    done = cli("submit", "--ranks", "2", "--target", CORRECT, "--log-dir",
               str(tmp_path / "logs"), wrap=tuple(one_task))
    assert done.returncode == 3, done.stderr
    assert re.search(r"autograd-check: error: allocation \d+ has 1 task\(s\), and --ranks 2 runs "
                     r"one task per rank: ask salloc for --ntasks=2 \(or give --new-job\)",
                     done.stderr), done.stderr
