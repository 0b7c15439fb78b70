"""The JSON contract: every command's --json prints one document in the one envelope.

    {"schema_version": 1, "tool": {"name": "autograd-check", "version": ...}, "kind": KIND, ...}

Each command runs as users run it, in its own process, so that "nothing but JSON on stdout" is
checked on the real stdout (a stray print, a warning, a progress line would break json.loads).
The Slurm cases run against the local single-node cluster (scripts/slurm-local.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from autograd_check import __version__
from autograd_check.base.document import KINDS

CLI = [sys.executable, "-m", "autograd_check"]
SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]
COVERED = {
    "check", "error", "tour", "tour-steps", "environment", "job", "report", "manifest",
    "sweep-plan", "submit-plan", "submitted", "sweep-submitted",
}
"""The kinds the cases below check: all of them (test_every_kind_has_a_case)."""


def environment() -> dict[str, str]:
    """This environment, outside any Slurm allocation, without a log folder of its own."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))
        and k not in ("AUTOGRAD_CHECK_LOG_DIR", "FORCE_COLOR", "PY_COLORS")
    }
    env.update(COLUMNS="120", NO_COLOR="1")
    return env


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=environment(), stdin=subprocess.DEVNULL)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def document(text: str, kind: str) -> dict[str, Any]:
    """The one document `text` holds (all of it), checked against the envelope."""
    assert kind in KINDS and kind in COVERED
    assert text.endswith("\n") and text.strip(), repr(text[-200:])
    doc = json.loads(text, parse_constant=_no_constants)  # the whole of stdout, nothing else
    assert isinstance(doc, dict)
    assert doc["schema_version"] == 1
    assert doc["tool"] == {"name": "autograd-check", "version": __version__}
    assert doc["kind"] == kind, doc.get("kind")
    return doc


def expect(done: subprocess.CompletedProcess[str], code: int, kind: str) -> dict[str, Any]:
    assert done.returncode == code, done.stderr[-3000:]
    return document(done.stdout, kind)




class TestHere:
    """Every command that needs no Slurm."""

    def test_run(self) -> None:
        doc = expect(cli("run", "--json", "--shape", "2x3"), 0, "check")
        assert doc["spec"]["shape"] == [2, 3] and doc["verdict"]["passed"] is True

    def test_run_across_ranks(self) -> None:
        doc = expect(cli("run", "--json", "--ranks", "2", "--model", "linear", "--shape", "4x3"),
                     0, "check")
        assert doc["spec"]["ranks"] == 2 and doc["verdict"]["passed"] is True
        ranks = doc["distributed"]
        assert ranks["ranks"] == 2 and ranks["ranks_agree"] is True and ranks["cause"] is None
        assert [s["name"] for s in doc["statistics"]] == ["linear.weight", "linear.bias"]

    def test_run_across_ranks_a_rank_failed(self) -> None:
        target = Path(__file__).with_name("ranks_targets.py")  # rank 1 kills itself
        doc = expect(cli("run", "--json", "--ranks", "2", "--target", f"{target}:Dies",
                         "--timeout", "60"), 4, "error")
        assert "rank 1 of 2 was killed by SIGKILL" in doc["error"]["message"]

    def test_run_bad_input(self) -> None:
        doc = expect(cli("run", "--json", "--shape", "0x3"), 2, "error")
        assert doc["error"]["exit_code"] == 2 and "dimension 1 is 0" in doc["error"]["message"]

    def test_usage_error(self) -> None:
        doc = expect(cli("run", "--json", "--bogus"), 2, "error")
        assert doc["error"]["message"].startswith("No such option: --bogus")

    def test_tour(self) -> None:
        doc = expect(cli("tour", "--json", "--step", "leaf"), 0, "tour")
        assert [s["name"] for s in doc["steps"]] == ["leaf"]

    def test_tour_list(self) -> None:
        doc = expect(cli("tour", "--list", "--json"), 0, "tour-steps")
        assert doc["steps"] and {"name", "title", "claim"} <= set(doc["steps"][0])

    def test_env(self) -> None:
        doc = expect(cli("env", "--json"), 0, "environment")
        assert {"python", "torch", "slurm"} <= set(doc)

    def test_status_from_the_log_folder(self, finished_job: tuple[Path, str]) -> None:
        folder, job_id = finished_job
        doc = expect(cli("status", job_id, "--log-dir", str(folder), "--json"), 0, "job")
        assert doc["job"]["state"] == "COMPLETED" and doc["job"]["result_available"] is True

    def test_result_from_the_log_folder(self, finished_job: tuple[Path, str]) -> None:
        folder, job_id = finished_job
        doc = expect(cli("result", job_id, "--log-dir", str(folder), "--json"), 0, "check")
        assert doc["spec"]["shape"] == [2, 2]

    def test_a_failed_job_adds_its_state(self, tmp_path: Path) -> None:
        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        doc = expect(cli("result", "999999", "--log-dir", str(folder), "--json"), 4, "error")
        assert doc["error"]["exit_code"] == 4
        assert doc["job"] == {"state": "UNKNOWN", "log_tail": ""}

    def test_sweep_here_and_its_report(self, tmp_path: Path) -> None:
        out = tmp_path / "sweep"
        doc = expect(cli("sweep", "--local", "--seeds", "0-1", "--shape", "2x2", "--out", str(out),
                         "--json"), 0, "report")
        report = expect(cli("report", str(out), "--json"), 0, "report")
        for key in ("grid_id", "total", "counts", "verdict"):
            assert report[key] == doc[key], key
        assert doc["total"] == 2
        document((out / "manifest.json").read_text(), "manifest")

    def test_sweep_dry_run(self, tmp_path: Path) -> None:
        expect(cli("sweep", "--local", "--seeds", "0-2", "--out", str(tmp_path / "s"),
                   "--dry-run", "--json"), 0, "sweep-plan")

    def test_submit_dry_run(self, tmp_path: Path) -> None:
        doc = expect(cli("submit", "--dry-run", "--json", "--log-dir", str(tmp_path / "logs")),
                     0, "submit-plan")
        assert doc["mode"] == "batch-job" and doc["srun_command"] is None
        assert doc["sbatch_script"].startswith("#!/bin/bash") and doc["spec"]["shape"] == [3, 8]

    def test_sweep_dry_run_on_slurm(self, tmp_path: Path) -> None:
        expect(cli("sweep", "--slurm", "--seeds", "0-2", "--out", str(tmp_path / "s"),
                   "--dry-run", "--json"), 0, "sweep-plan")


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestOnSlurm:
    def test_submit_status_result(self, tmp_path: Path) -> None:
        log_dir = str(tmp_path / "logs")
        sub = expect(cli("submit", "--no-wait", "--json", "--shape", "2x2", "--log-dir", log_dir,
                         *SMALL), 0, "submitted")
        job_id = sub["job"]["job_id"]
        assert sub["job"]["status_command"].startswith(f"autograd-check status {job_id}")
        status = expect(cli("status", job_id, "--log-dir", log_dir, "--json"), 0, "job")
        assert status["job"]["job_id"] == job_id
        result = expect(cli("result", job_id, "--log-dir", log_dir, "--wait", "--timeout", "240",
                            "--json"), 0, "check")
        assert result["environment"]["slurm"]["job_id"] == job_id

    def test_sweep_wait(self, tmp_path: Path) -> None:
        out = tmp_path / "sweep"
        doc = expect(cli("sweep", "--slurm", "--wait", "--seeds", "0", "--shape", "2x2", "--out",
                         str(out), "--json", *SMALL), 0, "report")
        assert doc["kind"] == "report"

    def test_sweep_without_wait(self, tmp_path: Path) -> None:
        out = tmp_path / "sweep"
        doc = expect(cli("sweep", "--slurm", "--no-wait", "--seeds", "0", "--shape", "2x2",
                         "--out", str(out), "--json", *SMALL), 0, "sweep-submitted")
        arrays = doc["submitted"]["arrays"]
        assert len(arrays) == 1 and doc["submitted"]["cases"] == 1
        # Nothing waits for it: leave the node to the next test.
        subprocess.run(["scancel", *arrays], capture_output=True, timeout=60, check=False)


def test_every_kind_has_a_case() -> None:
    assert COVERED == set(KINDS)


def test_every_kind_is_documented() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "json.md").read_text()
    assert [k for k in KINDS if f"| `{k}` |" not in page] == []
