"""`sweep --local`: records, resume, --rerun-failed, --force, bad input (exit 2 before anything
runs), config files, and Ctrl-C (a real SIGINT to a real process) then resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.sweep.store import Store

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def sweep(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sweep", "--local", *args])
    return result.exit_code, result.stdout, result.stderr


def records(out: Path) -> dict[str, dict[str, Any]]:
    """Every record in OUT that reads as one, by key."""
    store = Store(out)
    docs = {key: store.read_record(key) for key in store.recorded_keys()}
    return {key: doc for key, doc in docs.items() if doc is not None}


class TestLocalSweep:
    def test_runs_every_case_and_reports(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        code, stdout, stderr = sweep("--shapes", "3x8,4x4", "--dtypes", "float32,float64",
                                     "--seeds", "0-2", "--out", str(out))
        assert code == 0, stderr
        docs = records(out)
        assert len(docs) == 12
        doc = docs["4x4_float64_cpu_mse-sum_seed2"]
        # the record is run --json's document plus the case
        assert doc["spec"]["shape"] == [4, 4] and doc["spec"]["seed"] == 2
        assert doc["verdict"]["passed"] is True and doc["schema_version"] == 1
        assert doc["case"]["key"] == "4x4_float64_cpu_mse-sum_seed2"
        assert doc["environment"]["slurm"] is None
        assert "12 cases: 12 passed, 0 failed, 0 error, 0 missing → passed (exit 0)" in stdout
        # progress is on stderr (one line, as stderr is not a terminal here)
        assert "ran 12 case(s) here in" in stderr and "12 passed, 0 failed, 0 error" in stderr
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["cases"] == 12
        (submission,) = manifest["submissions"]
        assert submission["mode"] == "local" and submission["status"] == "complete"
        assert submission["ran"] == 12
        assert [p.name for p in (out / "records").iterdir() if p.name.startswith(".")] == []

    def test_same_seed_gives_the_same_record_as_run(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "5", "--out", str(out))[0] == 0
        single = runner.invoke(app, ["run", "--seed", "5", "--json"])
        ran = json.loads(single.stdout)
        doc = records(out)["3x8_float32_cpu_mse-sum_seed5"]
        assert doc["tensors"] == ran["tensors"] and doc["statistics"] == ran["statistics"]

    def test_resume_runs_only_what_is_missing(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-5", "--out", str(out))[0] == 0
        store = Store(out)
        before = {k: store.record_path(k).read_text() for k in store.recorded_keys()}
        store.record_path("3x8_float32_cpu_mse-sum_seed3").unlink()
        code, stdout, stderr = sweep("--seeds", "0-5", "--out", str(out))
        assert code == 0
        assert "resuming: 5 of 6 cases already have a record" in stderr and "running 1" in stderr
        after = {k: store.record_path(k).read_text() for k in store.recorded_keys()}
        assert set(after) == set(before)
        # untouched records are byte-identical: nothing ran twice
        assert all(after[k] == before[k] for k in before if not k.endswith("seed3"))
        manifest = json.loads((out / "manifest.json").read_text())
        assert [s["ran"] for s in manifest["submissions"]] == [6, 1]

    def test_rerun_failed_and_force(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-2", "--out", str(out))[0] == 0
        store = Store(out)
        key = "3x8_float32_cpu_mse-sum_seed1"
        doc = store.read_record(key)
        assert doc is not None
        doc["verdict"]["passed"] = False  # as if this case had failed
        store.write_record(key, doc)
        code, stdout, _ = sweep("--seeds", "0-2", "--out", str(out))
        assert code == 1 and "3 cases: 2 passed, 1 failed" in stdout
        code, stdout, stderr = sweep("--seeds", "0-2", "--out", str(out), "--rerun-failed")
        assert code == 0 and "running 1" in stderr
        code, _, stderr = sweep("--seeds", "0-2", "--out", str(out), "--force")
        assert code == 0 and "--force: removed 3 record(s)" in stderr
        assert len(json.loads((out / "manifest.json").read_text())["submissions"]) == 1

    def test_json_report(self, tmp_path: Path) -> None:
        code, stdout, _ = sweep("--seeds", "0-1", "--out", str(tmp_path), "--json")
        assert code == 0
        doc = json.loads(stdout)
        assert doc["counts"]["passed"] == 2 and doc["verdict"]["exit_code"] == 0

    def test_dry_run_writes_nothing(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        code, stdout, _ = sweep("--seeds", "0-2", "--dtypes", "float32,float64", "--out",
                                str(out), "--dry-run")
        assert code == 0 and not out.exists()
        assert "6 cases (1 shape × 2 dtypes × 1 device × 1 loss × 3 seeds); 6 to run here" \
            in stdout
        assert "3x8_float64_cpu_mse-sum_seed2" in stdout

    def test_config_file(self, tmp_path: Path) -> None:
        config = tmp_path / "sweep.toml"
        config.write_text('[check]\nrtol = 0.001\n[sweep]\nshapes = ["3x8", [2, 2]]\n'
                          'seeds = "0-1"\ndtypes = ["float64"]\n')
        out = tmp_path / "s"
        code, _, stderr = sweep("--config", str(config), "--out", str(out), "--seeds", "7")
        assert code == 0, stderr
        docs = records(out)
        assert set(docs) == {"3x8_float64_cpu_mse-sum_seed7", "2x2_float64_cpu_mse-sum_seed7"}
        assert all(d["statistics"][0]["rtol"] == 0.001 for d in docs.values())

    @pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("sweep-*.toml")))
    def test_shipped_configs_expand(self, config: Path) -> None:
        result = runner.invoke(app, ["sweep", "--config", str(config), "--dry-run", "--slurm",
                                     "--out", "unused", "--json"])
        assert result.exit_code == 0, result.stderr
        assert len(json.loads(result.stdout)["cases"]) >= 4


class TestStoreProblems:
    def test_unreadable_record_is_run_again_and_report_agrees(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-2", "--out", str(out))[0] == 0
        store = Store(out)
        key = "3x8_float32_cpu_mse-sum_seed1"
        store.record_path(key).write_text('{"spec": ')  # half a record
        assert runner.invoke(app, ["report", str(out)]).exit_code == 4  # counted missing
        code, stdout, stderr = sweep("--seeds", "0-2", "--out", str(out))
        assert code == 0, stderr
        assert "1 unusable (unreadable, or another grid's) record(s) moved to" in stderr
        assert "resuming: 2 of 3 cases already have a record" in stderr and "running 1" in stderr
        assert "3 cases: 3 passed" in stdout
        assert store.read_record(key) is not None
        assert len(list((out / "superseded").iterdir())) == 1  # the half record, kept aside

    def test_nothing_to_run_adds_no_submission(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-1", "--out", str(out))[0] == 0
        code, _, stderr = sweep("--seeds", "0-1", "--out", str(out))
        assert code == 0 and "nothing to run: every case has a record" in stderr
        assert len(json.loads((out / "manifest.json").read_text())["submissions"]) == 1

    def test_repeated_values_are_said_on_stderr(self, tmp_path: Path) -> None:
        code, _, stderr = sweep("--seeds", "0-2,1", "--shapes", "3x8,3x8,4x4", "--out",
                                str(tmp_path / "s"))
        assert code == 0
        assert "--shapes: 3x8 given more than once; each value runs once" in stderr
        assert "--seeds: 1 given more than once; each value runs once" in stderr
        assert len(records(tmp_path / "s")) == 6

    def test_force_onto_another_grid_clears_superseded_and_logs(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-1", "--out", str(out))[0] == 0
        Store(out).supersede("3x8_float32_cpu_mse-sum_seed0")
        (out / "logs").mkdir()
        (out / "logs" / "9_0_0_log.out").write_text("an old array's log")
        code, _, stderr = sweep("--seeds", "0-2", "--out", str(out), "--force")
        assert code == 0, stderr
        assert "--force: removed 1 record(s), superseded/, logs/ from" in stderr
        assert not (out / "superseded").exists() and not (out / "logs").exists()
        assert len(records(out)) == 3

    def test_refused_while_an_earlier_local_sweep_runs(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        assert sweep("--seeds", "0-1", "--out", str(out))[0] == 0
        # A live process whose command line names autograd, standing for a sweep still running.
        alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)  # autograd"])
        try:
            store = Store(out)
            store.add_submission({"mode": "local", "host": socket.gethostname(),
                                  "pid": alive.pid, "cases": 2})
            for extra in ([], ["--force"]):
                code, stdout, stderr = sweep("--seeds", "0-1", "--out", str(out), *extra)
                assert code == 2 and stdout == ""
                assert f"still running (pid {alive.pid} on" in stderr
        finally:
            alive.kill()
            alive.wait(timeout=30)
        code, _, stderr = sweep("--seeds", "0-1", "--out", str(out))
        assert code == 0, stderr  # its process is gone: nothing holds the directory


class TestBadInput:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--seeds", "9-0"], "seed range '9-0' runs backwards"),
            (["--shapes", ""], "--shapes is empty"),
            (["--shapes", "3x8,"], "item 2 is empty"),
            (["--dtypes", "float8"], "dtype 'float8' is not supported"),
            (["--devices", "tpu"], "device 'tpu' is not known"),
            (["--losses", "nope"], "loss 'nope' is not known"),
            (["--seeds", "0-99", "--max-cases", "50"], "100 cases"),
            (["--shape", "3x8", "--shapes", "3x8"], "give --shape or --shapes, not both"),
            (["--shapes", "100000x100000"], "choose a smaller --shape"),
        ],
    )
    def test_exit_2_and_nothing_written(self, tmp_path: Path, args: list[str],
                                        message: str) -> None:
        out = tmp_path / "s"
        code, stdout, stderr = sweep(*args, "--out", str(out))
        assert code == 2 and stdout == ""
        assert stderr.startswith("autograd-check: error: ") and message in stderr
        assert stderr.count("\n") == 1
        assert not out.exists()

    def test_another_grid_in_out_is_refused(self, tmp_path: Path) -> None:
        assert sweep("--seeds", "0-1", "--out", str(tmp_path))[0] == 0
        code, stdout, stderr = sweep("--seeds", "0-2", "--out", str(tmp_path))
        assert code == 2 and "holds another sweep" in stderr and "--force" in stderr
        assert len(records(tmp_path)) == 2
        code, _, stderr = sweep("--seeds", "0-2", "--out", str(tmp_path), "--dry-run")
        assert code == 2 and "holds another sweep" in stderr
        assert sweep("--seeds", "0-2", "--out", str(tmp_path), "--force")[0] == 0
        assert len(records(tmp_path)) == 3

    def test_unwritable_out(self, tmp_path: Path) -> None:
        (tmp_path / "file").write_text("")
        code, _, stderr = sweep("--out", str(tmp_path / "file" / "s"))
        assert code == 2 and "is not a writable directory" in stderr

    def test_bad_config_value(self, tmp_path: Path) -> None:
        config = tmp_path / "c.toml"
        config.write_text("[sweep]\ncases_per_task = 0\n")
        code, _, stderr = sweep("--config", str(config), "--out", str(tmp_path / "s"))
        assert code == 2 and "cases_per_task 0 is not allowed" in stderr
        config.write_text("[sweep]\ncolour = 1\n")
        code, _, stderr = sweep("--config", str(config), "--out", str(tmp_path / "s"))
        assert code == 2 and "unknown key 'colour' in [sweep]" in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_loses_nothing_and_resume_completes(tmp_path: Path, signum: int) -> None:
    """SIGINT (Ctrl-C) or SIGTERM (kill) to a real process mid-sweep: exit 130, only whole
    records, then resume finishes with each case run exactly once."""
    out = tmp_path / "s"
    args = [sys.executable, "-m", "autograd_check", "sweep", "--local", "--shapes", "256x256",
            "--seeds", "0-59", "--out", str(out)]
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    store = Store(out)
    try:
        deadline = time.monotonic() + 120
        while len(store.recorded_keys()) < 5:  # mid-sweep: some records, most cases to go
            if proc.poll() is not None:
                said = proc.communicate(timeout=30)[1].decode()
                pytest.fail(f"the sweep ended (exit {proc.returncode}) before 5 records:\n{said}")
            if time.monotonic() > deadline:
                pytest.fail("the sweep wrote no 5 records within 120 s")
            time.sleep(0.01)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr.decode()
    assert b"interrupted: " in stderr and b"run the same command again to resume" in stderr
    assert b"Traceback" not in stderr
    first = {k: store.record_path(k).read_bytes() for k in store.recorded_keys()}
    assert 5 <= len(first) < 60
    assert [n for n in os.listdir(store.records_dir) if not n.endswith(".json")] == []
    for text in first.values():
        json.loads(text)  # every record is whole
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["submissions"][-1]["status"] == "interrupted"

    resumed = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"resuming: {len(first)} of 60 cases".encode() in resumed.stderr
    assert len(store.recorded_keys()) == 60
    assert all(store.record_path(k).read_bytes() == v for k, v in first.items())


def test_slurm_without_sbatch_is_exit_3_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "s"
    result = runner.invoke(app, ["sweep", "--slurm", "--seeds", "0-3", "--out", str(out)])
    assert result.exit_code == 3 and result.stdout == ""
    assert "Slurm is not available here (sbatch not found on PATH)" in result.stderr
    assert not out.exists()


def test_default_mode_follows_where_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No sbatch: local. sbatch here: Slurm. Inside a job step: local (it is the node's work)."""
    from autograd_check.sweep.settings import default_mode

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_STEP_ID", raising=False)
    assert default_mode() == "local"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text("#!/bin/sh\n")
    sbatch.chmod(0o755)
    assert default_mode() == "slurm"
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert default_mode() == "slurm"  # an salloc shell: the array is submitted from it
    monkeypatch.setenv("SLURM_STEP_ID", "0")
    assert default_mode() == "local"
