"""The sweep below the command line, without CliRunner: settings from flags and [sweep], the plan
and its preview, resume and skip selection, supersede, the lock, the refusal while an earlier
submission into DIR runs (a local sweep's live pid, an array's live tasks), the manifest's
bookkeeping, interrupting a local run, and the progress views the CLI wires to the callbacks."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from autograd_check.base.errors import EXIT_INTERRUPTED, BadInput
from autograd_check.slurm.arrays import ArrayProgress, JobIdentity, SubmittedArray
from autograd_check.slurm.options import SlurmOptions
from autograd_check.sweep import earlier, launch
from autograd_check.sweep.earlier import live_local, stop_earlier
from autograd_check.sweep.grid import Case, build_grid
from autograd_check.sweep.launch import (
    LocalRun,
    Started,
    Submission,
    SweepInterrupted,
    add_local_submission,
    run_local,
    start_sweep,
    submit,
    watch_sweep,
)
from autograd_check.sweep.plan import Plan, plan_sweep, preview
from autograd_check.sweep.report import load_report, slurm_states, task_log_paths
from autograd_check.sweep.runner import Tally
from autograd_check.sweep.settings import Settings, SweepFlags, read_request
from autograd_check.sweep.store import Store

NO_CHECK_FLAGS: dict[str, Any] = {"config": None}
NO_AXES: dict[str, Any] = {}


def local_plan(out: Path, seeds: str = "0-2", **values: Any) -> Plan:
    grid = build_grid({"seeds": seeds, **values})
    return Plan(grid, list(grid.cases()), "local", Store(out))


def slurm_plan(out: Path, seeds: str = "0-3", per_task: int = 2) -> Plan:
    grid = build_grid({"seeds": seeds})
    return Plan(grid, list(grid.cases()), "slurm", Store(out), per_task, None,
                SlurmOptions(log_dir=out / "logs", timeout=5.0))


def notes() -> tuple[list[str], Any]:
    said: list[str] = []
    return said, said.append


def run_all(plan: Plan, **kwargs: Any) -> tuple[Started, list[str]]:
    said, on_note = notes()
    started = start_sweep(plan, rerun_failed=kwargs.pop("rerun_failed", False),
                          force=kwargs.pop("force", False), on_note=on_note)
    if started.local_index is not None:
        run_local(plan, started)
    return started, said


def config(tmp_path: Path, text: str) -> dict[str, Any]:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return {"config": path}


class TestSettings:
    def test_defaults(self) -> None:
        request = read_request(NO_CHECK_FLAGS, NO_AXES, SweepFlags())
        assert request.settings == Settings()
        assert request.config is None
        assert request.grid_values == dict.fromkeys(("shape", "dtype", "device", "loss", "seed"))

    def test_flags_over_the_sweep_table(self, tmp_path: Path) -> None:
        given = config(tmp_path, '[sweep]\nout = "o"\nmode = "slurm"\nmax_cases = 5\n'
                       "cases_per_task = 3\nmax_parallel = 2\n")
        request = read_request(given, NO_AXES, SweepFlags(mode="local", cases_per_task=7))
        assert request.settings == Settings(out=Path("o"), mode="local", max_cases=5,
                                            cases_per_task=7, max_parallel=2)
        assert request.config == given["config"]

    def test_an_axis_flag_replaces_the_files_axis_plural_or_singular(self, tmp_path: Path) -> None:
        given = config(tmp_path, '[check]\nseed = 3\nrtol = 0.5\n[sweep]\ndtypes = ["float64"]\n'
                       'shapes = ["2x2"]\n')
        values = read_request({**given, "shape": "4x4"}, {"seeds": "0-1", "dtypes": None},
                              SweepFlags()).grid_values
        assert values["seeds"] == "0-1" and "seed" not in [k for k, v in values.items() if v]
        assert values["shape"] == "4x4" and "shapes" not in values
        assert values["dtypes"] == ["float64"] and values["rtol"] == 0.5

    @pytest.mark.parametrize(
        ("table", "message"),
        [
            ("cases_per_task = 0", "[sweep]: cases_per_task 0 is not allowed; expected an "
             "integer >= 1"),
            ("max_cases = true", "[sweep]: max_cases True is not allowed"),
            ('max_parallel = "2"', "[sweep]: max_parallel '2' is not allowed"),
            ('mode = "cloud"', "[sweep]: mode 'cloud' is not known; choose 'local' or 'slurm'"),
            ('out = ""', "[sweep]: out '' is not a directory name"),
            ("colour = 1", "unknown key 'colour' in [sweep]"),
        ],
    )
    def test_bad_sweep_table_names_the_file_and_key(self, tmp_path: Path, table: str,
                                                    message: str) -> None:
        given = config(tmp_path, f"[sweep]\n{table}\n")
        with pytest.raises(BadInput) as e:
            read_request(given, NO_AXES, SweepFlags())
        assert message in str(e.value) and str(given["config"]) in str(e.value)

    def test_bad_check_table_is_refused_as_run_refuses_it(self, tmp_path: Path) -> None:
        with pytest.raises(BadInput, match=r"c.toml' \[check\]: rtol '-1' is not allowed"):
            read_request(config(tmp_path, '[check]\nrtol = "-1"\n'), NO_AXES, SweepFlags())


class TestPlan:
    def test_local_plan_notes_repeated_values(self, tmp_path: Path) -> None:
        said, on_note = notes()
        plan = plan_sweep(NO_CHECK_FLAGS, {"seeds": "0-2,1"},
                          SweepFlags(out=tmp_path / "s", mode="local"), {}, on_note=on_note)
        assert plan.mode == "local" and plan.slurm is None and len(plan.cases) == 3
        assert plan.store.root == tmp_path / "s"
        assert said == ["--seeds: 1 given more than once; each value runs once"]

    def test_too_many_cases_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(BadInput, match="above --max-cases 3"):
            plan_sweep(NO_CHECK_FLAGS, {"seeds": "0-3"},
                       SweepFlags(out=tmp_path, mode="local", max_cases=3), {})

    def test_slurm_plan_and_its_preview(self, tmp_path: Path) -> None:
        plan = plan_sweep(NO_CHECK_FLAGS, {"seeds": "0-4"},
                          SweepFlags(out=tmp_path / "s", mode="slurm", cases_per_task=2),
                          {"log_dir": tmp_path / "logs"})
        assert plan.slurm is not None and plan.log_dir() == tmp_path / "logs"
        shown = preview(plan, rerun_failed=False, force=False)
        doc = shown.to_dict()
        assert doc["kind"] == "sweep-plan" and doc["schema_version"] == 1
        assert doc["tool"]["name"] == "autograd-check"
        assert doc["tasks"] == 3 and doc["cases_per_task"] == 2 and doc["skipped"] == 0
        assert [c["key"] for c in doc["cases"]] == [c.key for c in plan.cases]
        assert "#SBATCH --array=0-2" in (doc["sbatch_script"] or "")
        assert not (tmp_path / "s").exists()  # a preview writes nothing

    def test_preview_skips_recorded_cases_unless_forced(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        plan.store.record_path(plan.cases[1].key).unlink()
        shown = preview(plan, rerun_failed=False, force=False)
        assert [c.key for c in shown.todo] == [plan.cases[1].key] and shown.skipped == 2
        assert len(preview(plan, rerun_failed=False, force=True).todo) == 3
        with pytest.raises(BadInput, match="holds another sweep"):
            preview(local_plan(tmp_path, seeds="0-5"), rerun_failed=False, force=False)


class TestStart:
    def test_first_run_records_every_case_and_its_submission(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        started, said = run_all(plan)
        assert started.todo == plan.cases and started.skipped == 0 and said == []
        assert plan.store.recorded_keys() == {c.key for c in plan.cases}
        manifest = plan.store.read_manifest()
        assert manifest is not None
        (submission,) = manifest["submissions"]
        assert submission["mode"] == "local" and submission["pid"] == os.getpid()
        assert submission["host"] == socket.gethostname() and submission["cases"] == 3
        assert submission["status"] == "complete" and submission["ran"] == 3
        assert "ended" in submission

    def test_resume_selects_only_cases_without_a_credited_record(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        store = plan.store
        store.record_path(plan.cases[0].key).unlink()
        store.record_path(plan.cases[2].key).write_text("{half")
        said, on_note = notes()
        started = start_sweep(plan, rerun_failed=False, force=False, on_note=on_note)
        assert [c.key for c in started.todo] == [plan.cases[0].key, plan.cases[2].key]
        assert started.skipped == 1
        assert said[0].startswith("1 unusable (unreadable, or another grid's) record(s) moved to")
        assert said[1] == (f"resuming: 1 of 3 cases already have a record in {store.root}; "
                           "running 2")
        assert [p.name.split(".")[0] for p in (store.root / "superseded").iterdir()] == [
            plan.cases[2].key]

    def test_rerun_failed_supersedes_the_failed_record(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        key = plan.cases[1].key
        doc = plan.store.read_record(key)
        assert doc is not None
        doc["verdict"]["passed"] = False
        plan.store.write_record(key, doc)
        assert start_sweep(plan, rerun_failed=False, force=False).todo == []
        said, on_note = notes()
        started = start_sweep(plan, rerun_failed=True, force=False, on_note=on_note)
        assert [c.key for c in started.todo] == [key]
        assert said[0].startswith("--rerun-failed: 1 failed record(s) moved to")
        assert not plan.store.record_path(key).exists()

    def test_nothing_to_run_records_no_submission(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        started, said = run_all(plan)
        assert started.local_index is None and started.todo == []
        assert said[-1] == "nothing to run: every case has a record"
        manifest = plan.store.read_manifest()
        assert manifest is not None and len(manifest["submissions"]) == 1

    def test_force_onto_another_grid_clears_it(self, tmp_path: Path) -> None:
        run_all(local_plan(tmp_path, seeds="0-1"))
        with pytest.raises(BadInput, match="holds another sweep"):
            start_sweep(local_plan(tmp_path), rerun_failed=False, force=False)
        plan = local_plan(tmp_path)
        started, said = run_all(plan, force=True)
        assert len(started.todo) == 3
        assert said == [f"--force: removed 2 record(s) from {plan.store.root}"]

    def test_waits_for_the_lock_another_process_holds(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        plan.store.ensure_writable()
        hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()")
        holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / ".lock")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "held\n"
            said: list[str] = []

            def on_note(message: str) -> None:
                said.append(message)
                if message.startswith("waiting"):
                    assert holder.stdin is not None and holder.poll() is None
                    holder.stdin.write("release\n")  # the other sweep finishes submitting
                    holder.stdin.flush()

            started = start_sweep(plan, rerun_failed=False, force=False, on_note=on_note)
        finally:
            if holder.poll() is None:
                holder.kill()
            holder.wait(timeout=30)
        assert said == [f"waiting for another sweep into {plan.store.root} to finish submitting"]
        assert started.local_index == 0

    def test_unwritable_out_is_refused(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        with pytest.raises(BadInput, match="is not a writable directory"):
            start_sweep(local_plan(tmp_path / "file" / "s"), rerun_failed=False, force=False)


def sleeper(marker: str) -> subprocess.Popen[bytes]:
    """A live process whose command line does (or does not) name autograd."""
    return subprocess.Popen([sys.executable, "-c", f"import sys; sys.stdin.read()  # {marker}"],
                            stdin=subprocess.PIPE)


class TestEarlierSubmission:
    def test_live_local_sees_only_a_living_sweep_of_this_host(self) -> None:
        host = socket.gethostname()
        ours, other = sleeper("autograd"), sleeper("something else")
        try:
            def manifest(pid: int, **extra: Any) -> dict[str, Any]:
                return {"submissions": [{"mode": "local", "host": host, "pid": pid, **extra}]}

            assert live_local(manifest(ours.pid)) == f"pid {ours.pid} on {host}"
            assert live_local(manifest(other.pid)) is None  # a pid reused by another program
            assert live_local(manifest(ours.pid, ended="x")) is None
            assert live_local(manifest(ours.pid), host="another-host") is None
            assert live_local(manifest(os.getpid())) is None  # this process itself
            assert live_local({"submissions": [{"mode": "slurm", "pid": ours.pid,
                                                "host": host}]}) is None
        finally:
            for proc in (ours, other):
                proc.kill()
                proc.wait(timeout=30)
        assert live_local(manifest(ours.pid)) is None  # gone (and reaped)

    def test_a_running_local_sweep_is_refused_even_with_force(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        alive = sleeper("autograd")
        try:
            plan.store.add_submission({"mode": "local", "host": socket.gethostname(),
                                       "pid": alive.pid, "cases": 3})
            for force in (False, True):
                with pytest.raises(BadInput, match=rf"still running \(pid {alive.pid} on "):
                    start_sweep(plan, rerun_failed=False, force=force)
        finally:
            alive.kill()
            alive.wait(timeout=30)
        assert start_sweep(plan, rerun_failed=False, force=False).todo == []

    def test_live_array_is_refused_or_cancelled_with_force(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = Store(tmp_path)
        store.prepare(build_grid({}), force=False)
        store.add_submission({"mode": "slurm", "parameters": {"job_name": "autograd-check"},
                              "arrays": [{"task_jobs": ["12_0", "12_1"],
                                          "log_dir": str(tmp_path / "logs")}]})
        asked: list[list[str]] = []
        cancelled: list[list[str]] = []

        def live_tasks(jobs: list[str]) -> dict[str, str]:
            asked.append(jobs)
            return {"12_1": "RUNNING"}

        monkeypatch.setattr(earlier, "live_tasks", live_tasks)
        # the controller confirms array 12 is this sweep's (see test_slurm_stops for the rule)
        monkeypatch.setattr(earlier, "job_identities", lambda ids: {i: JobIdentity(
            i, "autograd-check", str(tmp_path / "logs" / f"{i}_1_0_log.out"), None, None)
            for i in ids})
        monkeypatch.setattr(earlier, "cancel_arrays", cancelled.append)
        with pytest.raises(BadInput) as e:
            stop_earlier(store, force=False)
        message = str(e.value)
        assert asked == [["12_0", "12_1"]]
        assert f"job array 12 of an earlier sweep into --out {str(tmp_path)!r} still has 1 " \
               "task(s) pending or running (12_1)" in message
        assert "scancel 12" in message and "--force" in message and cancelled == []
        said, on_note = notes()
        stop_earlier(store, force=True, on_note=on_note)
        assert cancelled == [["12_1"]]
        assert said == [f"--force: job array 12 of an earlier sweep into --out {str(tmp_path)!r} "
                        "still has 1 task(s) pending or running (12_1); cancelling it"]

    def test_no_manifest_no_refusal(self, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """A folder no sweep wrote into: nothing to stop, so neither the queue nor scancel is
        asked, and nothing is written."""
        def asked(*_: Any) -> Any:
            raise AssertionError("the queue was asked about a sweep that never ran")

        monkeypatch.setattr(earlier, "live_tasks", asked)
        monkeypatch.setattr(earlier, "cancel_arrays", asked)
        said, on_note = notes()
        assert stop_earlier(Store(tmp_path / "new"), force=True, on_note=on_note) is None
        assert said == [] and not (tmp_path / "new").exists()


class TestBookkeeping:
    def test_submit_records_each_array_as_slurm_accepts_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        plan = slurm_plan(tmp_path / "s", seeds="0-4", per_task=2)
        plan.store.prepare(plan.grid, force=False)
        sent: list[Any] = []

        def submit_arrays(task: Any, task_args: list[Any], opts: Any, params: Any, folder: Path,
                          *, clean: bool, on_submitted: Any) -> None:
            sent.extend(task_args)
            # two arrays (as at MaxArraySize 2): tasks 0-1, then task 2
            on_submitted(SubmittedArray("7", ["7_0", "7_1"], folder / "7_submission.sh"), 0)
            on_submitted(SubmittedArray("8", ["8"], folder / "8_submission.sh"), 2)

        monkeypatch.setattr(launch, "submit_arrays", submit_arrays)
        said, on_note = notes()
        jobs = submit(plan, plan.cases, on_note=on_note)
        assert jobs == ["7_0", "7_1", "8"]
        assert [len(chunk) for _, _, chunk, _ in sent] == [2, 2, 1]
        assert {timeout for *_, timeout in sent} == {plan.case_timeout}
        assert {out for out, _, _, _ in sent} == {str(plan.store.root.resolve())}
        assert said == ["submitted job array 7: 2 task(s), 4 case(s)",
                        "submitted job array 8: 1 task(s), 1 case(s)"]
        manifest = plan.store.read_manifest()
        assert manifest is not None
        (submission,) = manifest["submissions"]
        assert submission["mode"] == "slurm" and submission["cases"] == 5
        assert submission["tasks"] == 3 and submission["cases_per_task"] == 2
        keys = [c.key for c in plan.cases]
        assert [a["tasks"] for a in submission["arrays"]] == [[keys[0:2], keys[2:4]], [keys[4:]]]
        assert [a["task_jobs"] for a in submission["arrays"]] == [["7_0", "7_1"], ["8"]]

    def test_submission_document(self, tmp_path: Path) -> None:
        doc = Submission(tmp_path / "my out", 5, ["9_0", "9_1", "10"]).to_dict()
        assert doc["kind"] == "sweep-submitted" and doc["schema_version"] == 1
        assert doc["submitted"] == {"cases": 5, "arrays": ["9", "10"],
                                    "tasks": ["9_0", "9_1", "10"]}
        assert doc["report_command"] == f"autograd-check report '{tmp_path / 'my out'}'"

    def test_local_submission_records_this_process(self, tmp_path: Path) -> None:
        store = Store(tmp_path)
        store.prepare(build_grid({}), force=False)
        assert add_local_submission(store, 4) == 0
        assert add_local_submission(store, 2) == 1
        manifest = store.read_manifest()
        assert manifest is not None
        assert [(s["pid"], s["cases"]) for s in manifest["submissions"]] == [
            (os.getpid(), 4), (os.getpid(), 2)]


class TestRunLocal:
    @pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
    def test_interrupt_keeps_records_and_marks_the_run(self, tmp_path: Path, how: str) -> None:
        plan = local_plan(tmp_path)
        started = start_sweep(plan, rerun_failed=False, force=False)
        before = signal.getsignal(signal.SIGTERM)

        def stop_after_first(case: Case, tally: Tally) -> None:
            if how == "SIGTERM":
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt

        with pytest.raises(SweepInterrupted) as e:
            run_local(plan, started, on_done=stop_after_first)
        assert e.value.exit_code == EXIT_INTERRUPTED == 130
        assert str(e.value) == (f"interrupted: 1 of 3 cases have a record in {plan.store.root}; "
                                "run the same command again to resume")
        assert signal.getsignal(signal.SIGTERM) == before
        manifest = plan.store.read_manifest()
        assert manifest is not None
        assert manifest["submissions"][0]["status"] == "interrupted"
        assert manifest["submissions"][0]["ran"] == 1

    def test_on_done_hears_each_case_with_the_tally(self, tmp_path: Path) -> None:
        plan = local_plan(tmp_path)
        started = start_sweep(plan, rerun_failed=False, force=False)
        heard: list[tuple[str, int]] = []
        ran = run_local(plan, started, on_done=lambda c, t: heard.append((c.key, t.passed)))
        assert heard == [(c.key, i) for i, c in enumerate(plan.cases, start=1)]
        assert ran.tally.passed == 3 and ran.seconds > 0


class TestWatch:
    def test_gave_up_waiting_is_said(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        plan = slurm_plan(tmp_path)
        progress = ArrayProgress(1, 1, 0, 0, 0, 4, 5.0, {"3_0": "PENDING", "3_1": "RUNNING"})
        seen: list[ArrayProgress] = []

        def watch_arrays(jobs: list[str], recorded: Any, cases: int, timeout: float,
                         on_update: Any) -> ArrayProgress:
            assert jobs == ["3_0", "3_1"] and cases == 4 and timeout == 5.0
            assert recorded() == 0
            on_update(progress)
            return progress

        monkeypatch.setattr(launch, "watch_arrays", watch_arrays)
        said, on_note = notes()
        states = watch_sweep(plan, ["3_0", "3_1"], on_update=seen.append, on_note=on_note)
        assert states == progress.states and seen == [progress]
        assert said == [f"gave up waiting after 5 s (--timeout); the array goes on: run "
                        f"`autograd-check report {plan.store.root}` later"]


class TestReportData:
    def test_task_logs_are_submitits_names(self, tmp_path: Path) -> None:
        assert task_log_paths(str(tmp_path), "12_3") == [tmp_path / "12_3_0_log.err",
                                                          tmp_path / "12_3_0_log.out"]

    def test_load_report_refuses_what_is_not_a_sweep(self, tmp_path: Path) -> None:
        with pytest.raises(BadInput, match="is not a directory"):
            load_report(tmp_path / "nope")
        with pytest.raises(BadInput, match="holds no sweep"):
            load_report(tmp_path)

    def test_no_slurm_here_no_states(self, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
        plan = local_plan(tmp_path)
        run_all(plan)
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
        assert slurm_states(plan.store) is None
        assert load_report(tmp_path).exit_code == 0


class TestProgressViews:
    def test_sweep_bar_in_a_log_draws_nothing_and_sums_up(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        from autograd_check.render.progress import SweepBar

        console = Console(file=io.StringIO(), force_terminal=False)
        case = next(build_grid({}).cases())
        with SweepBar(1, console) as bar:
            bar.advance(case, Tally(passed=1))
        bar.summary(LocalRun(Tally(passed=1), 2.04))
        assert console.file.getvalue() == ""  # type: ignore[attr-defined]
        assert capsys.readouterr().err == (
            "autograd-check: ran 1 case(s) here in 2.0 s: 1 passed, 0 failed, 0 error\n")

    def test_sweep_bar_on_a_terminal(self, capsys: pytest.CaptureFixture[str]) -> None:
        from autograd_check.render.progress import SweepBar

        console = Console(file=io.StringIO(), force_terminal=True, width=120)
        case = next(build_grid({}).cases())
        with SweepBar(1, console) as bar:
            bar.advance(case, Tally(passed=1))
        bar.summary(LocalRun(Tally(passed=1), 2.0))
        text = console.file.getvalue()  # type: ignore[attr-defined]
        assert "sweep" in text and "1/1" in text and f"1 passed, 0 failed, 0 error · {case.key}" \
            in text
        assert capsys.readouterr().err == ""  # the bar said it all

    def test_array_log_lines_only_on_a_change(self) -> None:
        from autograd_check.render.progress import array_progress

        console = Console(file=io.StringIO(), force_terminal=False, width=200)
        with array_progress(console) as on_update:
            for elapsed, done in ((1.0, 0), (2.0, 0), (65.0, 1)):
                on_update(ArrayProgress(0, 1 - done, done, 0, done, 1, elapsed, {}))
        lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
        assert lines == [
            "array: 0 pending · 1 running · 0 done · 0 failed · records 0/1 · 0:01 elapsed",
            "array: 0 pending · 0 running · 1 done · 0 failed · records 1/1 · 1:05 elapsed",
        ]
