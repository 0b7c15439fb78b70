"""submit, status, result, env and run's salloc warning, through the CLI, without a cluster."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autograd_check.base.spec import CheckSpec
from autograd_check.cli import app
from autograd_check.slurm.log_dir import job_paths
from autograd_check.slurm.step import STEP_MARKER

runner = CliRunner()


@pytest.fixture
def no_slurm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not inside an allocation, whatever shell the tests run from."""
    for var in list(os.environ):
        if var.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_")):
            monkeypatch.delenv(var)


@pytest.fixture
def no_slurm_tools(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))




def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("autograd-check: error: ")
    return lines[0]


@pytest.mark.usefixtures("no_slurm_env")
class TestBadInputBeforeSlurm:
    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--time", "abc"], "time 'abc' is not a time"),
            (["--gpus", "-1"], "gpus '-1' is not allowed"),
            (["--job-name", "x\ny"], "newline"),
            (["--job-name", "x;reboot"], "shell characters"),
            (["--sbatch-arg", "exclusive"], "has no '='"),
            (["--sbatch-arg", "output=/x"], "set by --log-dir"),
            (["--mem", "lots"], "mem 'lots' is not a size"),
            (["--shape", "0x3"], "dimension 1 is 0"),
            (["--timeout", "-1"], "timeout '-1'"),
        ],
    )
    def test_exit_2(self, tmp_path: Path, args: list[str], words: str) -> None:
        log_dir = tmp_path / "logs"
        result = runner.invoke(app, ["submit", "--wait", "--log-dir", str(log_dir), *args])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert words in one_error_line(result.stderr)
        assert not log_dir.exists(), "nothing was prepared for Slurm"

    def test_json_error_envelope(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["submit", "--json", "--time", "abc"])
        assert result.exit_code == 2
        doc = json.loads(result.stdout)
        assert doc["error"]["exit_code"] == 2 and "time 'abc'" in doc["error"]["message"]

    @pytest.mark.parametrize("command", ["status", "result"])
    def test_bad_job_id(self, command: str) -> None:
        result = runner.invoke(app, [command, "12;rm"])
        assert result.exit_code == 2
        assert "is not a Slurm job id" in one_error_line(result.stderr)


@pytest.mark.usefixtures("no_slurm_env", "no_slurm_tools")
class TestNoSlurm:
    def test_submit_exit_3_with_hint(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["submit", "--wait", "--log-dir", str(tmp_path / "l")])
        assert result.exit_code == 3
        line = one_error_line(result.stderr)
        assert "Slurm is not available here" in line and "autograd-check run" in line

    def test_dry_run_needs_no_slurm(self, tmp_path: Path) -> None:
        log_dir = tmp_path / "logs"
        result = runner.invoke(
            app, ["submit", "--dry-run", "--device", "cuda", "--log-dir", str(log_dir),
                  "--setup", "module load cuda", "--sbatch-arg", "comment=a b"]
        )
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("#!/bin/bash")
        assert "#SBATCH --gpus-per-node=1" in result.stdout
        assert "#SBATCH --comment='a b'" in result.stdout
        assert "\nmodule load cuda\n" in result.stdout
        assert not log_dir.exists()

    def test_env_says_what_submit_would_do(self) -> None:
        result = runner.invoke(app, ["env", "--json"])
        assert result.exit_code == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["torch"]["version"]
        assert doc["slurm"]["tools"]["sbatch"] is None
        assert doc["slurm"]["allocation"] is None
        assert doc["slurm"]["submit_would"].startswith("nothing: Slurm is not available")
        human = runner.invoke(app, ["env"])
        assert human.exit_code == 0 and "submit would" in human.stdout

    def test_result_reads_the_log_folder(self, finished_job: tuple[Path, str]) -> None:
        """Re-attaching needs only the files, even where no Slurm command runs."""
        folder, job_id = finished_job
        result = runner.invoke(app, ["result", job_id, "--log-dir", str(folder)])
        assert result.exit_code == 0, result.stderr
        assert "PASS" in result.stdout and "Slurm job" in result.stdout
        as_json = runner.invoke(app, ["result", job_id, "--log-dir", str(folder), "--json"])
        doc = json.loads(as_json.stdout)
        assert doc["verdict"]["passed"] is True and doc["spec"]["shape"] == [2, 2]

    def test_status_from_the_log_folder(self, finished_job: tuple[Path, str]) -> None:
        folder, job_id = finished_job
        result = runner.invoke(app, ["status", job_id, "--log-dir", str(folder), "--json"])
        assert result.exit_code == 0, result.stderr
        job = json.loads(result.stdout)["job"]
        assert job["state"] == "COMPLETED" and job["source"] == "result file"
        assert job["result_available"] is True

    def test_log_dir_from_the_environment(self, finished_job: tuple[Path, str]) -> None:
        """--log-dir's envvar (typer's envvar=, shown in --help)."""
        folder, job_id = finished_job
        result = runner.invoke(app, ["status", job_id, "--json"],
                               env={"AUTOGRAD_CHECK_LOG_DIR": str(folder)})
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["job"]["log_dir"] == str(folder)
        assert "AUTOGRAD_CHECK_LOG_DIR" in runner.invoke(app, ["status", "--help"]).stdout

    def test_unknown_job(self, tmp_path: Path) -> None:
        """No queue, no accounting, nothing in the log folder: the job is not known (4, the
        exit code of a job that failed or vanished), not Slurm missing (3): the files alone
        could have answered."""
        result = runner.invoke(app, ["status", "999999", "--log-dir", str(tmp_path)])
        assert result.exit_code == 4, result.stderr
        assert "Slurm job 999999 is unknown" in one_error_line(result.stderr)


@pytest.mark.usefixtures("no_slurm_env")
class TestResultSafety:
    def test_refuses_a_folder_others_can_write(
        self, tmp_path: Path, finished_job: tuple[Path, str]
    ) -> None:
        folder, job_id = finished_job
        shared = tmp_path / "shared"
        shared.mkdir()
        src = job_paths(folder, job_id).result_pickle
        job_paths(shared, job_id).result_pickle.write_bytes(src.read_bytes())
        shared.chmod(0o777)
        result = runner.invoke(app, ["result", job_id, "--log-dir", str(shared)])
        assert result.exit_code == 3
        assert "can be written by other users" in one_error_line(result.stderr)
        assert result.stdout == ""


class TestRunInsideAnAllocation:
    def test_warns_when_not_on_the_allocated_node(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for var in ("SLURM_STEP_ID", "SLURMD_NODENAME"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("SLURM_JOB_ID", "4711")
        monkeypatch.setenv("SLURM_JOB_NODELIST", "compute-[7-8]")
        assert not socket.gethostname().startswith("compute-")
        result = runner.invoke(app, ["run", "--shape", "2x2", "--json"])
        assert result.exit_code == 0
        json.loads(result.stdout)  # stdout is still the plain JSON document
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("autograd-check: warning:")
        assert "allocation 4711" in lines[0] and "srun" in lines[0] and "submit" in lines[0]

    def test_quiet_on_the_node(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("SLURM_JOB_ID", "4711")
        monkeypatch.setenv("SLURM_JOB_NODELIST", socket.gethostname())
        monkeypatch.delenv("SLURM_STEP_ID", raising=False)
        result = runner.invoke(app, ["run", "--shape", "2x2", "--json"])
        assert result.exit_code == 0 and result.stderr == ""

    def test_dry_run_in_an_allocation_shows_the_srun_line(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("SLURM_JOB_ID", "4711")
        monkeypatch.setenv("SLURM_JOB_NODELIST", "vm")
        monkeypatch.delenv("SLURM_STEP_ID", raising=False)
        result = runner.invoke(app, ["submit", "--dry-run", "--shape", "2x2", "--cpus", "1"])
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("srun --ntasks=1 --nodes=1")
        assert "--cpus-per-task=1" in result.stdout and "_step --spec" in result.stdout
        new_job = runner.invoke(app, ["submit", "--dry-run", "--new-job"])
        assert new_job.stdout.startswith("#!/bin/bash")


def test_hidden_step_command() -> None:
    spec = json.dumps(CheckSpec(shape=(2, 2)).to_dict())
    result = runner.invoke(app, ["_step", "--spec", spec])
    assert result.exit_code == 0, result.stderr
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith(STEP_MARKER)
    assert json.loads(line[len(STEP_MARKER):])["outcome"] == "result"
    assert "_step" not in runner.invoke(app, ["--help"]).stdout


@pytest.mark.usefixtures("no_slurm_env")
class TestCtrlC:
    """Ctrl-C while waiting stops the wait, not the job: one line saying how to get back to it."""

    @pytest.fixture
    def interrupted_wait(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
        from autograd_check.slurm import batch, commands, watch

        def interrupt(*args: object, **kwargs: object) -> None:
            raise KeyboardInterrupt

        log_dir = tmp_path / "logs"
        submitted = batch.Submitted("77", log_dir, log_dir / "o", log_dir / "e", log_dir / "s")
        monkeypatch.setattr(commands, "require_slurm", lambda *tools: None)
        monkeypatch.setattr(batch, "submit_job", lambda *a, **k: submitted)
        monkeypatch.setattr(watch, "wait_for_job", interrupt)
        return log_dir

    def test_submit_wait(self, interrupted_wait: Path) -> None:
        result = runner.invoke(app, ["submit", "--wait", "--log-dir", str(interrupted_wait)])
        assert result.exit_code == 130
        assert result.stdout == ""
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("autograd-check: stopped waiting; Slurm job 77 keeps running")
        assert f"autograd-check status 77 --log-dir {interrupted_wait}" in last
        assert f"autograd-check result 77 --log-dir {interrupted_wait} --wait" in last
        assert len(result.stderr.strip().splitlines()) == 2  # "submitted ...", then that line

    def test_result_wait(self, interrupted_wait: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from autograd_check.slurm import watch

        # job 77 as a running job, whatever the test cluster's own job 77 was
        monkeypatch.setattr(watch, "job_status", lambda *args: None)
        result = runner.invoke(app, ["result", "77", "--wait"])
        assert result.exit_code == 130
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Slurm job 77 keeps running" in lines[0]
        assert "autograd-check result 77 --wait" in lines[0] and "Traceback" not in lines[0]


@pytest.mark.usefixtures("no_slurm_env")
def test_status_says_when_a_job_will_never_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from autograd_check.slurm import watch
    from autograd_check.slurm.commands import JobInfo

    pending = JobInfo("55", "PENDING", "scontrol", reason="PartitionTimeLimit", partition="debug")
    monkeypatch.setattr(watch, "job_info", lambda job_id, deadline=None: pending)
    result = runner.invoke(app, ["status", "55", "--log-dir", str(tmp_path)])
    assert result.exit_code == 0, result.stderr
    hint = next(ln for ln in result.stdout.splitlines() if ln.startswith("  hint"))
    assert "Slurm will never start it: --time is above the partition's limit" in hint
    assert hint.endswith("scancel 55")
    doc = json.loads(runner.invoke(app, ["status", "55", "--log-dir", str(tmp_path),
                                         "--json"]).stdout)
    assert doc["job"]["never_starts"].startswith("--time is above")
    # A job that waits for an ordinary reason gets no hint.
    monkeypatch.setattr(watch, "job_info", lambda job_id, deadline=None: JobInfo(
        "55", "PENDING", "scontrol", reason="Priority"))
    result = runner.invoke(app, ["status", "55", "--log-dir", str(tmp_path)])
    assert "hint" not in result.stdout and "never" not in result.stdout


def test_env_lines_have_no_trailing_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich pads table cells to the width of their column; env must not end lines in spaces."""
    from autograd_check.slurm import env_facts as slurm_facts_module

    facts = slurm_facts_module.slurm_facts()
    facts["partitions"] = [
        {"name": "debug", "default": True, "available": "up", "time_limit": "1:00:00",
         "nodes": 1, "state": "idle", "gres": None, "node_list": "vm", "cpus_per_node": "2",
         "memory_mb_per_node": "8000"},
        {"name": "gpu-long-name", "default": False, "available": "up", "time_limit": "2-00:00:00",
         "nodes": 12, "state": "mix", "gres": "gpu:a100:4", "node_list": "g[01-12]",
         "cpus_per_node": "64", "memory_mb_per_node": "512000"},
    ]
    monkeypatch.setattr("autograd_check.cli.env.slurm_facts", lambda: facts)
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "gpu-long-name" in result.stdout and lines and lines[-1].strip()
    assert [ln for ln in lines if ln != ln.rstrip()] == []


class TestJobStatus:
    """slurm.watch.job_status, the state `status` shows, without the CLI."""

    def test_a_finished_job_known_only_by_its_files(
        self, monkeypatch: pytest.MonkeyPatch, finished_job: tuple[Path, str]
    ) -> None:
        from autograd_check.slurm import watch

        folder, job_id = finished_job
        monkeypatch.setattr(watch, "job_info", lambda job_id, deadline=None: None)
        found = watch.job_status(job_id, folder)
        assert (found.state, found.source, found.result_available) == (
            "COMPLETED", "result file", True)
        assert found.logs == {"stdout": None, "stderr": None, "script": None}
        assert found.to_dict()["log_dir"] == str(folder) and found.never_starts is None

    def test_a_pending_job_that_will_never_start(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        from autograd_check.slurm import watch
        from autograd_check.slurm.commands import JobInfo

        pending = JobInfo("55", "PENDING", "scontrol", reason="PartitionTimeLimit",
                          partition="debug")
        monkeypatch.setattr(watch, "job_info", lambda job_id, deadline=None: pending)
        found = watch.job_status("55", tmp_path)
        assert (found.state, found.source, found.partition) == ("PENDING", "scontrol", "debug")
        assert found.finished is False and found.result_available is False
        assert found.never_starts is not None
        assert found.never_starts.startswith("--time is above the partition's limit")

    def test_a_job_nobody_knows(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        from autograd_check.base.errors import JobFailed
        from autograd_check.slurm import watch

        monkeypatch.setattr(watch, "job_info", lambda job_id, deadline=None: None)
        with pytest.raises(JobFailed, match="Slurm job 77 is unknown") as caught:
            watch.job_status("77", tmp_path)
        assert caught.value.state == "UNKNOWN" and caught.value.exit_code == 4

    @pytest.mark.usefixtures("no_slurm_tools")
    def test_no_slurm_and_no_folder(self, tmp_path: Path) -> None:
        from autograd_check.base.errors import EnvironmentProblem
        from autograd_check.slurm import watch

        with pytest.raises(EnvironmentProblem, match="Slurm is not available here"):
            watch.job_status("77", tmp_path / "missing")
