"""What a target does to the process that runs its check (issue 17, items 5 and 8): os._exit(0)
in its code never makes a check without a verdict exit 0, and a fork at its import never makes a
second result. A real process each time: os._exit and fork would act on the test runner itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "autograd_check"]

GRAD = """
def manual_grad(predicted, real):
    return 2 * (predicted - real)
"""
EXITS = """
import os


def loss(predicted, real):
    os._exit(0)
""" + GRAD
FORKS = """
import os

os.fork()  # both processes go on: the child runs the rest of the command too


def loss(predicted, real):
    return ((predicted - real) ** 2).sum()
""" + GRAD


def command(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    target = tmp_path / "target.py"
    target.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SRUN_"))}
    env.update(PYTHONPATH=str(ROOT / "src"), COLUMNS="120", NO_COLOR="1")
    # stdout is read to its end: a forked child that outlives its parent still writes there
    return subprocess.run([*CLI, *args, "--target", str(target)], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)


def documents(stdout: str) -> list[dict[str, object]]:
    """Every JSON document on stdout (they are printed one after another)."""
    decoder, docs, at = json.JSONDecoder(), [], 0
    while at < len(stdout.rstrip()):
        while stdout[at].isspace():
            at += 1
        doc, at = decoder.raw_decode(stdout, at)
        docs.append(doc)
    return docs


class TestOsExitInTheTarget:
    def test_run_fails_the_check_with_what_happened(self, tmp_path: Path) -> None:
        done = command(tmp_path, EXITS, "run", "--json")
        assert done.returncode == 1, (done.stdout, done.stderr)
        (doc,) = documents(done.stdout)
        verdict = doc["verdict"]
        assert isinstance(verdict, dict) and verdict["passed"] is False
        assert verdict["error"].startswith(
            "loss(predicted, real) raised TargetExited: os._exit(0) was called, which would "
            "have ended the process before the check had a verdict (at target.py:6)"), verdict

    def test_a_local_sweep_records_every_case_as_failed_and_ends(self, tmp_path: Path) -> None:
        out = tmp_path / "out"
        done = command(tmp_path, EXITS, "sweep", "--local", "--seeds", "0-1", "--out", str(out),
                       "--json")
        assert done.returncode == 1, (done.stdout, done.stderr)
        (report,) = documents(done.stdout)
        cases = report["cases"]
        assert isinstance(cases, list) and [c["outcome"] for c in cases] == ["failed"] * 2
        assert not (out / ".running").exists()
        assert len(list((out / "records").glob("*.json"))) == 2


class TestAForkAtImport:
    def test_run_prints_one_document(self, tmp_path: Path) -> None:
        done = command(tmp_path, FORKS, "run", "--json")
        assert done.returncode == 0, done.stderr
        (doc,) = documents(done.stdout)
        assert doc["kind"] == "check"

    @pytest.mark.parametrize("json_output", [True, False])
    def test_a_local_sweep_reports_once(self, tmp_path: Path, json_output: bool) -> None:
        out = tmp_path / "out"
        done = command(tmp_path, FORKS, "sweep", "--local", "--seeds", "0-1", "--out", str(out),
                       *(["--json"] if json_output else []))
        assert done.returncode == 0, done.stderr
        if json_output:
            (report,) = documents(done.stdout)
            assert report["kind"] == "report"
        else:
            assert done.stdout.count("2 cases: 2 passed") == 1, done.stdout
        assert not (out / ".running").exists()
        manifest = json.loads((out / "manifest.json").read_text())
        assert len(manifest["submissions"]) == 1, manifest
