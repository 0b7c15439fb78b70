"""Issue 10, items 2 and 4: a Slurm time limit, preemption or signal is the job's state (exit 4),
never the user's error; a target's sys.exit() is its check's failure, not the end of a sweep; a
case that hangs is bounded by --case-timeout (an error record, never a mismatch)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from submitit.core.utils import UncompletedJobError
from typer.testing import CliRunner

from autograd_check.base.errors import EXIT_JOB_FAILED, JobFailed
from autograd_check.cli import app
from autograd_check.slurm import watch
from autograd_check.slurm.commands import JobInfo
from autograd_check.slurm.log_dir import job_paths
from autograd_check.slurm.node import JobStopping, run_job, stop_signal_escapes
from autograd_check.sweep.grid import build_grid
from autograd_check.sweep.runner import ArrayTask, chunks, run_cases
from autograd_check.sweep.settings import DEFAULT_CASE_TIMEOUT_S
from autograd_check.sweep.store import Store

runner = CliRunner()

TARGETS = textwrap.dedent("""\
    import os
    import signal
    import sys
    import time


    def _grad(predicted, real):
        return 2 * (predicted - real)


    class Exit:
        def loss(self, predicted, real):
            sys.exit(7)

        manual_grad = staticmethod(_grad)


    class Sleeps:
        def loss(self, predicted, real):
            time.sleep(1000)

        manual_grad = staticmethod(_grad)


    class SlowFirst:
        # seed 0 (its real tensor starts with 0.4963) hangs, the others pass
        def loss(self, predicted, real):
            if abs(float(real.flatten()[0]) - 0.4963) < 1e-3:
                time.sleep(1000)
            return ((predicted - real) ** 2).sum()

        manual_grad = staticmethod(_grad)


    class Deaf:
        # a C call that never returns to Python (it lets go of the GIL, as torch kernels do)
        def loss(self, predicted, real):
            import ctypes

            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            ctypes.CDLL(None).sleep(1000)

        manual_grad = staticmethod(_grad)


    class Signalled:
        # Slurm's warning signal arrives while the user's loss runs
        def loss(self, predicted, real):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.2)
            return ((predicted - real) ** 2).sum()

        manual_grad = staticmethod(_grad)


    class CatchAll:
        # the user's own `except Exception` must not swallow the stop either
        def loss(self, predicted, real):
            try:
                os.kill(os.getpid(), signal.SIGUSR2)
                time.sleep(0.2)
            except Exception:
                pass
            return ((predicted - real) ** 2).sum()

        manual_grad = staticmethod(_grad)
""")


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    path = tmp_path / "targets.py"
    path.write_text(TARGETS)
    return path


@pytest.fixture
def usr2_handler() -> Iterator[list[Any]]:
    """A stand-in for submitit's handler of SIGUSR2, restored afterwards; the list holds what it
    should raise (an exception instance) and records that it ran."""
    raises: list[Any] = []

    def handler(signum: int, frame: object) -> None:
        raises.append("called")
        if isinstance(raises[0], BaseException):
            raise raises[0]

    previous = signal.signal(signal.SIGUSR2, handler)
    try:
        yield raises
    finally:
        signal.signal(signal.SIGUSR2, previous)


def spec_of(target: str) -> dict[str, Any]:
    from autograd_check.base.spec import build_spec

    return build_spec({"target": target}).to_dict()


class TestJobStoppedBySlurm:
    """Item 2: what the node does with Slurm's warning signal, and how its end is read back."""

    def test_a_single_check_goes_on_and_slurm_decides(
        self, targets: Path, usr2_handler: list[Any], capfd: pytest.CaptureFixture[str]
    ) -> None:
        usr2_handler.append(UncompletedJobError("timed-out and not checkpointable"))
        answer = run_job(spec_of(f"{targets}:Signalled"))
        assert answer["outcome"] == "result"
        assert answer["result"]["verdict"]["passed"] is True
        assert "got SIGUSR2 from Slurm" in capfd.readouterr().err
        assert usr2_handler == [usr2_handler[0]], "submitit's handler was not called"

    @pytest.mark.parametrize("cause", [UncompletedJobError("Job not requeued because: "
                                                           "timed-out too many times."),
                                       SystemExit(-1)])
    @pytest.mark.parametrize("name", ["Signalled", "CatchAll"])
    def test_an_array_task_stops_without_a_record(
        self, targets: Path, tmp_path: Path, usr2_handler: list[Any], cause: BaseException,
        name: str,
    ) -> None:
        usr2_handler.append(cause)
        grid = build_grid({"seeds": "0-1", "target": f"{targets}:{name}"})
        out = tmp_path / "out"
        Store(out).ensure_writable()
        packed = chunks(list(grid.cases()), 2)[0]
        task = ArrayTask()  # type: ignore[no-untyped-call]
        with pytest.raises(type(cause)):
            task(str(out), grid.grid_id(), packed, 60.0)
        assert Store(out).recorded_keys() == set(), "a stopped case must have no record"

    def test_stop_signal_escapes_gives_back_submitits_exception(
        self, usr2_handler: list[Any]
    ) -> None:
        usr2_handler.append(UncompletedJobError("timed-out"))
        with pytest.raises(UncompletedJobError), stop_signal_escapes():
            try:
                os.kill(os.getpid(), signal.SIGUSR2)
                signal.sigtimedwait([], 0.1) if hasattr(signal, "sigtimedwait") else None
            except Exception:  # noqa: BLE001  (what a user's code would do)
                pytest.fail("JobStopping must not be an Exception")
        assert not issubclass(JobStopping, (Exception, SystemExit))

    @pytest.mark.parametrize(("text", "state"), [
        ("submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out and not "
         "checkpointable.", "TIMEOUT"),
        ("UncompletedJobError: Job not requeued because: timed-out too many times.", "TIMEOUT"),
        ("UncompletedJobError: Job not requeued because: checkpoint function returned None.",
         "PREEMPTED"),
        ("ValueError: boom", None),
    ])
    def test_stopped_state(self, text: str, state: str | None) -> None:
        assert watch.stopped_state(text) == state

    def _answer(self, folder: Path, job_id: str, outcome: tuple[str, Any]) -> None:
        folder.mkdir(mode=0o700, exist_ok=True)
        paths = job_paths(folder, job_id)
        with open(paths.result_pickle, "wb") as f:
            pickle.dump(outcome, f)
        os.chmod(paths.result_pickle, 0o600)
        paths.stderr.write_text("slurmstepd: error: *** JOB 77 CANCELLED DUE TO TIME LIMIT ***\n")

    def test_collect_reads_submitits_timeout_as_the_jobs_state(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        folder = tmp_path / "logs"
        self._answer(folder, "77", ("error", "Traceback ...\nsubmitit.core.utils."
                     "UncompletedJobError: Job not requeued because: timed-out and not "
                     "checkpointable.\n"))
        monkeypatch.setattr(watch, "job_info", lambda *a, **k: JobInfo("77", "FAILED", "sacct"))
        with pytest.raises(JobFailed) as caught:
            watch.collect("77", folder)
        assert caught.value.state == "TIMEOUT"
        assert caught.value.exit_code == EXIT_JOB_FAILED
        assert "raise --time" in str(caught.value)
        assert "TIME LIMIT" in caught.value.log_tail

    @pytest.mark.parametrize("state", ["TIMEOUT", "PREEMPTED", "CANCELLED", "NODE_FAIL"])
    def test_collect_without_a_result_says_slurms_state(
        self, tmp_path: Path, state: str
    ) -> None:
        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        job_paths(folder, "78").stderr.write_text("*** JOB 78 ON vm CANCELLED ***\n")
        with pytest.raises(JobFailed) as caught:
            watch.collect("78", folder, JobInfo("78", state, "sacct", exit_code="0:15"))
        assert caught.value.state == state
        assert caught.value.exit_code == EXIT_JOB_FAILED
        assert "CANCELLED" in caught.value.log_tail


class TestTargetSysExit:
    """Item 4: a target's sys.exit() is the user's error for that case."""

    def test_run_fails_the_check_with_the_message(self, targets: Path) -> None:
        result = runner.invoke(app, ["run", "--target", f"{targets}:Exit", "--json"])
        assert result.exit_code == 1, result.output
        doc = json.loads(result.stdout)
        assert "raised SystemExit: 7" in doc["verdict"]["error"]

    def test_sweep_records_each_case_and_goes_on(self, targets: Path, tmp_path: Path) -> None:
        out = tmp_path / "s"
        result = runner.invoke(app, ["sweep", "--local", "--seeds", "0-2", "--target",
                                     f"{targets}:Exit", "--out", str(out)])
        assert result.exit_code == 1, result.output
        store = Store(out)
        assert len(store.recorded_keys()) == 3
        doc = store.read_record(sorted(store.recorded_keys())[0])
        assert doc is not None and "SystemExit: 7" in doc["verdict"]["error"]
        manifest = store.read_manifest()
        assert manifest is not None
        assert manifest["submissions"][-1]["status"] == "complete"
        assert not (out / ".running").exists()


class TestCaseTimeout:
    def test_default_is_documented(self) -> None:
        assert DEFAULT_CASE_TIMEOUT_S == 600
        result = runner.invoke(app, ["sweep", "--help"])
        assert "--case-timeout" in result.stdout

    def test_a_hung_case_is_an_error_and_the_sweep_goes_on(
        self, targets: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "s"
        result = runner.invoke(app, ["sweep", "--local", "--seeds", "0-2", "--target",
                                     f"{targets}:SlowFirst", "--out", str(out),
                                     "--case-timeout", "0.5"])
        assert result.exit_code == 3, result.output  # an error, never 1 (a mismatch)
        store = Store(out)
        docs = {k: store.read_record(k) for k in store.recorded_keys()}
        assert len(docs) == 3
        timed = [d for d in docs.values() if d and d.get("error", {}).get("timed_out")]
        assert len(timed) == 1 and "--case-timeout" in timed[0]["error"]["message"]
        assert sum(1 for d in docs.values() if d and d.get("verdict", {}).get("passed")) == 2

    def test_from_the_config_file(self, targets: Path, tmp_path: Path) -> None:
        config = tmp_path / "c.toml"
        config.write_text(f'[check]\ntarget = "{targets}:Sleeps"\n[sweep]\ncase_timeout = 0.3\n')
        out = tmp_path / "s"
        result = runner.invoke(app, ["sweep", "--local", "--config", str(config), "--out",
                                     str(out)])
        assert result.exit_code == 3, result.output
        (doc,) = [Store(out).read_record(k) for k in Store(out).recorded_keys()]
        assert doc is not None and doc["error"]["timed_out"] is True

    @pytest.mark.parametrize("value", ["-1", '"soon"', "true", "inf"])
    def test_bad_config_values_are_bad_input(self, tmp_path: Path, value: str) -> None:
        config = tmp_path / "c.toml"
        config.write_text(f"[sweep]\ncase_timeout = {value}\n")
        result = runner.invoke(app, ["sweep", "--local", "--dry-run", "--config", str(config),
                                     "--out", str(tmp_path / "s")])
        assert result.exit_code == 2, result.output
        assert "case_timeout" in result.stderr

    def test_no_limit_with_zero(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["sweep", "--local", "--seeds", "0", "--case-timeout", "0",
                                     "--out", str(tmp_path / "s")])
        assert result.exit_code == 0, result.output

    def test_a_case_python_cannot_interrupt_ends_the_process_with_its_record(
        self, targets: Path, tmp_path: Path
    ) -> None:
        """SIGALRM blocked (as in C code that never returns): the watchdog writes the record
        HANG_GRACE_S later, closes the run and ends the process; a rerun goes on."""
        out = tmp_path / "s"
        code = ("import sys; import autograd_check.sweep.runner as r; r.HANG_GRACE_S = 1.0; "
                "from autograd_check.cli import main; sys.argv[0] = 'autograd-check'; main()")
        args = ["sweep", "--local", "--seeds", "0-1", "--target", f"{targets}:Deaf", "--out",
                str(out), "--case-timeout", "0.5"]
        done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == EXIT_JOB_FAILED, done.stderr
        assert "could not interrupt" in done.stderr
        store = Store(out)
        (key,) = store.recorded_keys()
        doc = store.read_record(key)
        assert doc is not None and doc["error"]["timed_out"] is True
        manifest = store.read_manifest()
        assert manifest is not None and manifest["submissions"][-1]["status"] == "case hung"
        assert not (out / ".running").exists()

    def test_run_cases_without_a_timeout_sets_no_alarm(self, tmp_path: Path) -> None:
        grid = build_grid({"seeds": "0"})
        store = Store(tmp_path / "s")
        store.ensure_writable()
        run_cases(store, list(grid.cases()), grid.grid_id(), case_timeout=None)
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
