"""The Slurm layer without a cluster: where we are, private log folders, answers from the node."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest

from autograd_check.base.errors import (
    EXIT_NOT_ENDED,
    BadInput,
    EnvironmentProblem,
    JobFailed,
    JobNotEnded,
)
from autograd_check.base.spec import CheckSpec
from autograd_check.slurm.allocation import current_allocation, run_outside_node_warning
from autograd_check.slurm.commands import JobInfo, parse_scontrol_record
from autograd_check.slurm.log_dir import ensure_private, job_paths, prepare_log_dir, resolve_log_dir
from autograd_check.slurm.node import outcome_to_result, run_job
from autograd_check.slurm.options import SlurmOptions
from autograd_check.slurm.step import STEP_MARKER, step_answer, step_main
from autograd_check.slurm.watch import collect, load_outcome, wait_for_job

SMALL = CheckSpec(shape=(2, 3)).to_dict()


@pytest.fixture(scope="module")
def answer() -> dict[str, object]:
    """A real answer of the job function, computed here (it is what the node pickles)."""
    return run_job(SMALL)


def pickletools_globals(data: bytes) -> str:
    """The module names a pickle refers to (what loading it would import)."""
    import pickletools

    names = [str(arg) for op, arg, _ in pickletools.genops(data) if "UNICODE" in op.name]
    return " ".join(n for n in names if "." in n and " " not in n)


def write_outcome(folder: Path, job_id: str, outcome: tuple[str, object]) -> Path:
    folder.mkdir(mode=0o700, exist_ok=True)
    path = job_paths(folder, job_id).result_pickle
    with open(path, "wb") as f:
        pickle.dump(outcome, f)
    path.chmod(0o600)
    return Path(path)


class TestWhereWeAre:
    def test_outside_slurm(self) -> None:
        assert current_allocation({}) is None
        assert run_outside_node_warning({}) is None

    def test_salloc_shell_on_a_login_node(self) -> None:
        env = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "node[1-2]"}
        alloc = current_allocation(env)
        assert alloc is not None
        assert alloc.nodes == ("node1", "node2") and not alloc.in_step
        if alloc.host.split(".")[0] not in ("node1", "node2"):
            warning = run_outside_node_warning(env)
            assert warning is not None
            assert "allocation 42" in warning and "srun" in warning and "submit" in warning

    def test_on_the_node_or_in_a_step_no_warning(self) -> None:
        on_node = {"SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "vm", "SLURMD_NODENAME": "vm"}
        assert run_outside_node_warning(on_node) is None
        in_step = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_JOB_NODELIST": "elsewhere"}
        alloc = current_allocation(in_step)
        assert alloc is not None and alloc.in_step
        assert run_outside_node_warning(in_step) is None

    def test_log_dir_default_and_env(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        monkeypatch.delenv("AUTOGRAD_CHECK_LOG_DIR", raising=False)
        assert resolve_log_dir(None) == Path.home() / ".autograd-check" / "slurm"
        monkeypatch.setenv("AUTOGRAD_CHECK_LOG_DIR", str(tmp_path / "x"))
        assert resolve_log_dir(None) == tmp_path / "x"
        assert SlurmOptions(log_dir=tmp_path / "y").folder() == tmp_path / "y"


class TestPrivateFolder:
    def test_created_0700(self, tmp_path: Path) -> None:
        old = os.umask(0o022)
        try:
            folder = tmp_path / "a" / "logs"
            prepare_log_dir(folder)
        finally:
            os.umask(old)
        assert folder.stat().st_mode & 0o777 == 0o700

    def test_refuses_folder_others_can_write(self, tmp_path: Path) -> None:
        folder = tmp_path / "shared"
        folder.mkdir()
        folder.chmod(0o777)
        with pytest.raises(BadInput, match="can be written by other users"):
            prepare_log_dir(folder)

    def test_results_not_loaded_from_a_writable_folder(
        self, tmp_path: Path, answer: dict[str, object]
    ) -> None:
        folder = tmp_path / "logs"
        write_outcome(folder, "5", ("success", answer))
        assert load_outcome(folder, "5") == ("success", answer)
        folder.chmod(0o775)
        with pytest.raises(EnvironmentProblem, match="only loaded from a private folder"):
            load_outcome(folder, "5")
        folder.chmod(0o700)
        job_paths(folder, "5").result_pickle.chmod(0o666)
        with pytest.raises(EnvironmentProblem, match="result file"):
            load_outcome(folder, "5")

    def test_missing(self, tmp_path: Path) -> None:
        with pytest.raises(EnvironmentProblem, match="cannot be read"):
            ensure_private(tmp_path / "nope", "log dir")


class TestAnswers:
    def test_job_function_answers_plain_data(self, answer: dict[str, object]) -> None:
        assert answer["outcome"] == "result"
        result = outcome_to_result(answer, "Slurm job 1")
        assert result.passed and result.spec["shape"] == [2, 3]
        # The view shows tensors in the result's order: the tutorial's, not alphabetical.
        assert list(result.tensors)[:2] == ["real", "predicted"]
        # Plain data only: no class of ours, and nothing of torch's (unpickling torch's
        # TorchVersion would import torch on the submitting side, seconds for nothing).
        assert "torch." not in pickletools_globals(pickle.dumps(answer))

    def test_domain_error_on_the_node_comes_back(self) -> None:
        huge = CheckSpec(shape=(1 << 20, 1 << 20)).to_dict()
        answer = run_job(huge)
        assert answer["outcome"] == "error" and answer["exit_code"] == 2
        with pytest.raises(BadInput, match=r"needs about .* \(on node .*, Slurm job 9\)"):
            outcome_to_result(answer, "Slurm job 9")

    def test_environment_error_kind(self) -> None:
        env_error = {"outcome": "error", "kind": "EnvironmentProblem", "exit_code": 3,
                     "message": "no CUDA device", "host": "gpu1"}
        with pytest.raises(EnvironmentProblem, match="no CUDA device \\(on node gpu1, job 3\\)"):
            outcome_to_result(env_error, "job 3")

    def test_collect_success(self, tmp_path: Path, answer: dict[str, object]) -> None:
        folder = tmp_path / "logs"
        write_outcome(folder, "6", ("success", answer))
        assert collect("6", folder).exit_code == 0

    def test_collect_exception_on_node(self, tmp_path: Path) -> None:
        folder = tmp_path / "logs"
        trace = "Traceback (most recent call last):\n  ...\nRuntimeError: boom\n"
        write_outcome(folder, "7", ("error", trace))
        with pytest.raises(JobFailed, match="exception on the node: RuntimeError: boom") as e:
            collect("7", folder)
        assert e.value.exit_code == 4

    def test_collect_failed_state_with_log_tail(self, tmp_path: Path) -> None:
        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        paths = job_paths(folder, "8")
        Path(paths.stderr).write_text("line 1\nslurmstepd: error: Detected 1 oom_kill event\n")
        info = JobInfo("8", "OUT_OF_MEMORY", "sacct", exit_code="0:125")
        with pytest.raises(JobFailed, match="ran out of memory .*OUT_OF_MEMORY") as e:
            collect("8", folder, info)
        assert "oom_kill" in e.value.log_tail and e.value.state == "OUT_OF_MEMORY"

    def test_collect_still_running(self, tmp_path: Path) -> None:
        """Not a failure (4): a job of its own exit code, 5, that says to --wait."""
        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        with pytest.raises(JobNotEnded, match="RUNNING.*no result yet.*--wait") as e:
            collect("9", folder, JobInfo("9", "RUNNING", "scontrol"))
        assert e.value.exit_code == EXIT_NOT_ENDED == 5 and e.value.state == "RUNNING"
        assert not isinstance(e.value, JobFailed)

    def test_result_of_a_running_job_exits_5_with_its_state(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from typer.testing import CliRunner

        from autograd_check.cli import app

        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        monkeypatch.setattr("autograd_check.slurm.watch.job_info",
                            lambda job_id: JobInfo(job_id, "PENDING", "squeue"))
        got = CliRunner().invoke(app, ["result", "9", "--log-dir", str(folder), "--json"])
        assert got.exit_code == 5, got.output
        assert "Slurm job 9 is PENDING: no result yet" in got.stderr
        assert json.loads(got.stdout)["job"]["state"] == "PENDING"

    def test_wait_returns_at_once_when_the_result_is_there(
        self, tmp_path: Path, answer: dict[str, object]
    ) -> None:
        folder = tmp_path / "logs"
        write_outcome(folder, "10", ("success", answer))
        seen: list[str] = []
        start = time.monotonic()
        info = wait_for_job("10", folder, 30, lambda i, _t: seen.append(i.state))
        assert info.state == "COMPLETED" and seen == ["COMPLETED"]
        assert time.monotonic() - start < 5


class TestStep:
    def test_step_main_answers_one_marked_line(self) -> None:
        line, code = step_main(json.dumps(SMALL))
        assert code == 0 and line.startswith(STEP_MARKER) and "\n" not in line
        answer = step_answer("setup noise\n" + line + "\n")
        assert answer is not None and answer["outcome"] == "result"
        assert list(outcome_to_result(answer, "step").tensors)[:2] == ["real", "predicted"]

    def test_step_main_bad_spec(self) -> None:
        line, code = step_main("{not json")
        assert code == 2
        answer = step_answer(line)
        assert answer is not None and answer["kind"] == "BadInput"
        line, code = step_main(json.dumps({"shape": "0x1"}))
        assert code == 2 and "dimension" in line

    def test_no_answer(self) -> None:
        assert step_answer("srun: error: something\n") is None


def test_scontrol_record() -> None:
    line = (
        "JobId=12 JobName=autograd-check UserId=root(0) JobState=CANCELLED Reason=None "
        "ExitCode=0:15 RunTime=00:00:03 NodeList=vm AllocNode:Sid=localhost:6984 "
        "TRES=cpu=1,mem=500M,node=1"
    )
    rec = parse_scontrol_record(line)
    assert rec["JobId"] == "12" and rec["JobState"] == "CANCELLED"
    assert rec["TRES"] == "cpu=1,mem=500M,node=1" and rec["AllocNode:Sid"] == "localhost:6984"
