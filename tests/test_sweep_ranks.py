"""`sweep --ranks 1,2 --parallel ddp,fsdp`: rank counts and wrappers as grid axes. Locally each
case starts its ranks itself (bounded by --case-timeout; a rank's death is that case's error); on
Slurm each rank count is its own job array whose tasks are jobs of N Slurm tasks, which run their
cases as N ranks, rank 0 alone writing records. A grid without the axes is the grid it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.slurm import arrays as slurm_arrays
from autograd_check.slurm import commands
from autograd_check.sweep.grid import build_grid
from autograd_check.sweep.store import Store

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
GRID = ["--ranks", "1,2", "--parallel", "ddp,fsdp", "--model", "mlp", "--shape", "8x8",
        "--dtype", "float64"]
KEYS = {f"8x8_float64_cpu_mse-sum_seed0_ranks{r}_{p}" for r in (1, 2) for p in ("ddp", "fsdp")}


def sweep(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["sweep", *args])
    return result.exit_code, result.stdout, result.stderr


def records(out: Path) -> dict[str, dict[str, Any]]:
    store = Store(out)
    docs = {key: store.read_record(key) for key in store.recorded_keys()}
    return {key: doc for key, doc in docs.items() if doc is not None}


def manifest(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return doc


TARGETS = Path(__file__).with_name("ranks_targets.py")
"""Targets that sleep or die (tests/ranks_targets.py)."""


class TestLocal:
    @pytest.mark.fsdp
    def test_four_cases_pass_with_their_distributed_block_and_report(self, tmp_path: Path
                                                                     ) -> None:
        out = tmp_path / "s"
        code, stdout, stderr = sweep("--local", *GRID, "--out", str(out))
        assert code == 0, stderr
        assert "4 cases: 4 passed, 0 failed, 0 error, 0 missing → passed (exit 0)" in stdout
        docs = records(out)
        assert set(docs) == KEYS
        for key, doc in docs.items():
            ranks = doc["distributed"]
            assert doc["verdict"]["passed"] is True and ranks["ranks_agree"] is True
            assert (f"_ranks{ranks['ranks']}_{ranks['parallel']}") in key
            assert (doc["spec"]["ranks"], doc["spec"]["parallel"]) == (ranks["ranks"],
                                                                       ranks["parallel"])
            assert len(ranks["hosts"]) == ranks["ranks"]
        grid = manifest(out)["grid"]
        assert (grid["ranks"], grid["parallel"]) == ([1, 2], ["ddp", "fsdp"])

        # the report counts by rank count and wrapper, in every form
        result = runner.invoke(app, ["report", str(out)])
        assert result.exit_code == 0
        rows = [line.split() for line in result.stdout.splitlines()]
        assert ["ranks", "1", "2", "2", "0", "0", "0"] in rows
        assert ["parallel", "ddp", "2", "2", "0", "0", "0"] in rows and ["fsdp", "2", "2", "0",
                                                                        "0", "0"] in rows
        result = runner.invoke(app, ["report", str(out), "--json"])
        doc = json.loads(result.stdout)
        assert {(c["ranks"], c["parallel"]) for c in doc["cases"]} == {
            (1, "ddp"), (1, "fsdp"), (2, "ddp"), (2, "fsdp")}
        assert {(g["group"], g["value"]) for g in doc["groups"]} >= {
            ("ranks", "1"), ("ranks", "2"), ("parallel", "ddp"), ("parallel", "fsdp")}
        markdown = runner.invoke(app, ["report", str(out), "--markdown"]).stdout
        assert "ranks 1, 2; parallel ddp, fsdp" in markdown and "| ranks | 2 | 2 | 2 |" in markdown

        # resume: every case has its record, nothing runs again
        code, _, stderr = sweep("--local", *GRID, "--out", str(out))
        assert code == 0 and "nothing to run: every case has a record" in stderr

    def test_a_grid_without_the_axes_is_as_before(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        code, _, stderr = sweep("--local", "--seeds", "0-1", "--out", str(out), "--json")
        assert code == 0, stderr
        assert set(records(out)) == {"3x8_float32_cpu_mse-sum_seed0",
                                     "3x8_float32_cpu_mse-sum_seed1"}
        assert set(manifest(out)["grid"]) == {"shapes", "dtypes", "devices", "losses", "seeds",
                                              "check"}
        doc = json.loads(runner.invoke(app, ["report", str(out), "--json"]).stdout)
        assert all("ranks" not in c and "parallel" not in c for c in doc["cases"])
        assert {g["group"] for g in doc["groups"]} == {"dtype", "device", "loss", "shape"}
        # the id of a grid without the axes is unchanged (the manifests of earlier sweeps)
        assert build_grid({}).grid_id() == "175b60175d4a1235"

    def test_one_rank_count_alone_is_an_axis_too(self) -> None:
        grid = build_grid({"ranks": 2, "model": "linear", "shape": "4x3", "accumulate": "2"})
        (case,) = grid.cases()
        assert case.key == "4x3_float32_cpu_mse-sum_seed0_ranks2"
        assert (case.spec.ranks, case.spec.parallel, case.spec.accumulate) == (2, "ddp", 2)
        assert dict(grid.common) == {"accumulate": 2, "model": "linear"}
        assert "2 rank counts" not in grid.size_text() and "1 rank count" in grid.size_text()

    @pytest.mark.parametrize(("values", "shape"), [
        ({"ranks": "1,2,4"}, (8, 8)),  # two rows per micro-batch of 4 ranks
        ({"ranks": "2,3"}, (12, 8)),
        ({"ranks": "1,3"}, (3, 8)),  # the tutorial's 3x8 splits: kept
        ({"ranks": "2", "accumulate": "3"}, (12, 8)),
    ])
    def test_a_model_sweep_without_a_shape_picks_one_every_rank_count_splits(
        self, values: dict[str, str], shape: tuple[int, int]
    ) -> None:
        """As `run --ranks N` does with no --shape: the default 3x8 would stop the first case
        that cannot split it."""
        grid = build_grid({**values, "model": "mlp"})
        assert grid.shapes == (shape,)
        assert all(case.spec.shape == shape for case in grid.cases())
        # a shape given is the user's: judged with each case, never replaced
        assert build_grid({**values, "model": "mlp", "shape": "6x8"}).shapes == ((6, 8),)

    def test_case_timeout_stops_a_case_over_ranks(self, tmp_path: Path) -> None:
        target = TARGETS
        out = tmp_path / "s"
        started = time.monotonic()
        code, stdout, stderr = sweep("--local", "--ranks", "2", "--target",
                                     f"{target}:Sleeps", "--case-timeout", "2", "--out",
                                     str(out))
        assert time.monotonic() - started < 60  # not the ranks' own 600 s
        assert code == 3, stderr
        (doc,) = records(out).values()
        assert doc["error"]["timed_out"] is True and "--case-timeout" in doc["error"]["message"]

    def test_a_rank_that_dies_is_its_case_error(self, tmp_path: Path) -> None:
        target = TARGETS
        out = tmp_path / "s"
        code, stdout, stderr = sweep("--local", "--ranks", "2", "--target",
                                     f"{target}:ExitsOnRank1", "--out", str(out))
        assert code == 3, stderr
        (doc,) = records(out).values()
        assert doc["error"]["exit_code"] == 4, doc["error"]  # JobFailed: a rank failed
        assert "rank 1 of 2 exited with code 9" in doc["error"]["message"]
        assert "Cases that could not run (1)" in stdout

    @pytest.mark.fsdp
    def test_config_file_axes(self, tmp_path: Path) -> None:
        config = tmp_path / "sweep.toml"
        config.write_text('[check]\nmodel = "linear"\nshape = "4x3"\n'
                          '[sweep]\nranks = [1, 2]\nparallel = ["fsdp"]\n')
        code, stdout, stderr = sweep("--local", "--config", str(config), "--dry-run", "--out",
                                     str(tmp_path / "s"))
        assert code == 0, stderr
        assert "4x3_float32_cpu_mse-sum_seed0_ranks1_fsdp" in stdout
        assert "4x3_float32_cpu_mse-sum_seed0_ranks2_fsdp" in stdout
        # a flag replaces the file's axis
        code, stdout, _ = sweep("--local", "--config", str(config), "--ranks", "4", "--dry-run",
                                "--out", str(tmp_path / "s"))
        assert code == 0 and "4x3_float32_cpu_mse-sum_seed0_ranks4_fsdp" in stdout
        assert "ranks1" not in stdout


class TestRefused:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--parallel", "ddp,fsdp", "--model", "mlp"],
             "--parallel applies only with --ranks"),
            (["--ranks", "1,3", "--model", "mlp", "--shape", "8x8"],
             "case 8x8_float32_cpu_mse-sum_seed0_ranks3: shape 8x8: its first dimension (the "
             "batch) must split into 3 ranks"),
            (["--ranks", "2", "--model", "mlp", "--shape", "8x8", "--accumulate", "3"],
             "must split into 2 ranks x 3 micro-batches"),
            (["--accumulate", "2", "--model", "mlp"], "accumulate applies only with ranks"),
            (["--ranks", "1,2"], "ranks needs a model"),
            (["--ranks", "1,0", "--model", "mlp"], "--ranks: ranks '0' is not allowed"),
            (["--ranks", "2", "--parallel", "dp", "--model", "mlp"],
             "--parallel: parallel 'dp' is not known"),
            (["--slurm", "--ranks", "2,3", "--nodes", "2", "--model", "mlp", "--shape", "12x4"],
             "--ranks 3 does not split evenly over --nodes 2"),
            (["--slurm", "--nodes", "2"], "--nodes applies only with --ranks"),
        ],
    )
    def test_exit_2_one_line_and_nothing_written(self, tmp_path: Path, args: list[str],
                                                 message: str) -> None:
        out = tmp_path / "s"
        for dry in ([], ["--dry-run"]):
            code, stdout, stderr = sweep(*(["--local"] if "--slurm" not in args else []),
                                         *args, *dry, "--out", str(out))
            assert code == 2 and stdout == "", stderr
            assert stderr.startswith("autograd-check: error: ") and message in stderr
            assert stderr.count("\n") == 1
            assert not out.exists()


def test_slurm_dry_run_shows_one_array_per_rank_count(tmp_path: Path) -> None:
    """No cluster needed: --dry-run writes the scripts without Slurm."""
    out = tmp_path / "s"
    args = ["--slurm", "--ranks", "1,2", "--model", "mlp", "--shape", "8x8", "--seeds", "0-2",
            "--cases-per-task", "2", "--out", str(out), "--dry-run"]
    code, stdout, stderr = sweep(*args)
    assert code == 0, stderr
    assert "one array of N-task jobs per rank count" in stdout
    assert "--ranks 1: 3 case(s) in 2 array task(s), each one job of 1 Slurm task(s)" in stdout
    assert "--ranks 2: 3 case(s) in 2 array task(s), each one job of 2 Slurm task(s)" in stdout
    assert stdout.count("#SBATCH --ntasks-per-node=1") == 1
    assert stdout.count("#SBATCH --ntasks-per-node=2") == 1
    assert "--kill-on-bad-exit=1" in stdout
    code, stdout, _ = sweep(*args, "--json")
    doc = json.loads(stdout)
    assert doc["tasks"] == 4
    assert [(a["ranks"], a["cases"], a["tasks"], a["tasks_per_node"]) for a in doc["arrays"]] \
        == [(1, 3, 2, 1), (2, 3, 2, 2)]
    assert not out.exists()
    # without the axis: one script, no per-array list (as before)
    code, stdout, _ = sweep("--slurm", "--seeds", "0-2", "--out", str(out), "--dry-run", "--json")
    doc = json.loads(stdout)
    assert code == 0 and "arrays" not in doc and doc["tasks"] == 3


RANK_SCRIPT = """
import os, sys
from pathlib import Path

rank = int(sys.argv[3])
os.environ.update(SLURM_PROCID=str(rank), SLURM_NTASKS="2", SLURM_LOCALID=str(rank))
from autograd_check.sweep.grid import build_grid
from autograd_check.sweep.runner import run_as_ranks
from autograd_check.sweep.store import Store

grid = build_grid({"ranks": "2", "parallel": "ddp,fsdp", "model": "linear", "shape": "4x3"})
tally = run_as_ranks(Store(Path(sys.argv[1])), list(grid.cases()), grid.grid_id(), rank=rank,
                     root=Path(sys.argv[2]))
print(tally.passed, len(tally.skipped))
"""


@pytest.mark.fsdp
def test_two_tasks_as_ranks_run_every_case_and_only_rank_0_writes(tmp_path: Path) -> None:
    """What each Slurm task of an array task runs (runner.run_as_ranks), as two processes here:
    the cases one after another, each meeting in its own folder; rank 0's records only."""
    out, root = tmp_path / "s", tmp_path / "logs" / "rendezvous" / "7.0"
    (tmp_path / "logs").mkdir(mode=0o700)

    def both() -> list[str]:
        procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(out), str(root),
                                   str(rank)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
                 for rank in (0, 1)]
        said = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], said
        return [s[0].strip() for s in said]

    assert both() == ["2 0", "2 0"]
    docs = records(out)
    assert set(docs) == {"4x3_float32_cpu_mse-sum_seed0_ranks2_ddp",
                         "4x3_float32_cpu_mse-sum_seed0_ranks2_fsdp"}
    assert all(d["distributed"]["ranks"] == 2 and d["verdict"]["passed"] for d in docs.values())
    assert not root.exists()  # rank 0 tidied the meeting folders
    # run again: every rank skips the recorded cases alike, and nothing is written
    before = {k: Store(out).record_path(k).read_bytes() for k in docs}
    assert both() == ["0 2", "0 2"]
    assert {k: Store(out).record_path(k).read_bytes() for k in docs} == before


@pytest.mark.slurm
@pytest.mark.fsdp
@pytest.mark.usefixtures("slurm_cluster")
def test_slurm_sweep_sends_one_array_per_rank_count(tmp_path: Path) -> None:
    out = tmp_path / "s"
    small = ["--cpus", "1", "--mem", "1G", "--time", "5"]
    grid = ["--ranks", "1,2", "--parallel", "ddp,fsdp", "--model", "mlp", "--shape", "8x8",
            "--seeds", "0-1", "--cases-per-task", "2"]
    code, stdout, stderr = sweep("--slurm", *small, *grid, "--out", str(out), "--wait")
    assert code == 0, stderr
    assert "8 cases: 8 passed, 0 failed, 0 error, 0 missing → passed (exit 0)" in stdout
    assert "2 task(s) of 1 Slurm task(s) each (--ranks 1), 4 case(s)" in stderr
    assert "2 task(s) of 2 Slurm task(s) each (--ranks 2), 4 case(s)" in stderr
    (submission,) = manifest(out)["submissions"]
    arrays = submission["arrays"]
    assert [(a["ranks"], a["parameters"]["ntasks_per_node"], len(a["task_jobs"]))
            for a in arrays] == [(1, 1, 2), (2, 2, 2)]
    docs = records(out)
    assert len(docs) == 8
    for array in arrays:
        for job, keys in zip(array["task_jobs"], array["tasks"], strict=True):
            assert len(keys) == 2
            for key in keys:  # run in the task the manifest gave it to, by its ranks
                doc = docs[key]
                ids = doc["environment"]["slurm"]
                assert f"{ids['array_job_id']}_{ids['array_task_id']}" == job
                assert doc["distributed"]["ranks"] == array["ranks"] == doc["spec"]["ranks"]
                assert len(doc["distributed"]["hosts"]) == array["ranks"]
    logs = out / "logs"
    two = arrays[1]["task_jobs"][0]
    assert "(rank 1 of 2: its results are discarded" in (logs / f"{two}_1_log.out").read_text()
    assert list((logs / "rendezvous").iterdir()) == []  # each task tidied its meeting folders
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["ranks", "1", "4", "4", "0", "0", "0"] in rows and ["2", "4", "4", "0", "0",
                                                                "0"] in rows

    # resume: a lost record of the 2-rank array runs again there, and nothing else is sent.
    # --wait ends at the last record; the tasks may still be ending (and refuse a new sweep).
    jobs = [job for array in arrays for job in array["task_jobs"]]
    deadline = time.monotonic() + 60
    while any(s in commands.ACTIVE_STATES for s in slurm_arrays.array_states(jobs).values()):
        assert time.monotonic() < deadline, "the arrays did not end"
        time.sleep(0.2)
    lost = "8x8_float32_cpu_mse-sum_seed1_ranks2_fsdp"
    Store(out).record_path(lost).unlink()
    code, stdout, stderr = sweep("--slurm", *small, *grid, "--out", str(out), "--wait")
    assert code == 0, stderr
    assert "running 1" in stderr and "1 task(s) of 2 Slurm task(s) each (--ranks 2)" in stderr
    again = manifest(out)["submissions"][1]["arrays"]
    assert [(a["ranks"], a["tasks"]) for a in again] == [(2, [[lost]])]
    assert records(out)[lost]["distributed"]["parallel"] == "fsdp"
