"""What each feature needs of torch: --parallel fsdp on a torch without FSDP2 is refused in one
line, exit 3, before any rank starts (run, submit, sweep, execute), whatever torch runs the tests:
the version the check reads is monkeypatched."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autograd_check.base import torch_features
from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.spec import build_spec
from autograd_check.base.torch_features import parallel_problem, release
from autograd_check.cli import app
from autograd_check.distributed import launch
from autograd_check.execute import execute

runner = CliRunner()
FSDP = ["--ranks", "2", "--model", "mlp", "--shape", "4x8", "--parallel", "fsdp"]
REFUSAL = ("--parallel fsdp on the CPU needs torch 2.10 or newer (FSDP2's fully_shard; with CUDA "
           "from 2.4); this is torch 2.3.1: install a newer torch, or use --parallel ddp")


@pytest.fixture
def torch_2_3(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """torch 2.3.1 as far as the check can tell; the list collects any rank start."""
    started: list[object] = []
    monkeypatch.setattr(torch_features, "torch_version", lambda: "2.3.1")
    monkeypatch.setattr(launch, "run_ranks_here", lambda *a, **k: started.append(a))
    monkeypatch.setattr(launch, "rank_main", lambda *a, **k: started.append(a))
    return started


class TestParallelProblem:
    @pytest.mark.parametrize(("device", "version"), [
        ("cuda", "2.4.0"), ("cuda:1", "2.4.1+cu121"), ("cuda", "2.5.1"), ("cpu", "2.10.0"),
        ("auto", "2.10.0"), ("cpu", "2.15.0"), ("cpu", "3.0.0a0")])
    def test_fsdp_runs(self, device: str, version: str) -> None:
        assert parallel_problem("fsdp", device, version) is None

    @pytest.mark.parametrize("version", ["2.1.2", "2.3.1+cpu", "1.13.1"])
    def test_fsdp_with_cuda_refused_before_2_4(self, version: str) -> None:
        assert parallel_problem("fsdp", "cuda", version) == (
            f"--parallel fsdp with CUDA needs torch 2.4 or newer (FSDP2's fully_shard); this is "
            f"torch {version}: install a newer torch, or use --parallel ddp")

    @pytest.mark.parametrize("version", ["2.1.2", "2.4.1+cu121", "2.5.1", "2.6.0", "2.7.1"])
    def test_fsdp_on_the_cpu_refused_before_2_10(self, version: str) -> None:
        assert parallel_problem("fsdp", "cpu", version) == (
            f"--parallel fsdp on the CPU needs torch 2.10 or newer (FSDP2's fully_shard; with "
            f"CUDA from 2.4); this is torch {version}: install a newer torch, or use "
            "--parallel ddp")

    def test_auto_may_be_the_cpu(self) -> None:
        problem = parallel_problem("fsdp", "auto", "2.5.1")
        assert problem is not None
        assert problem.startswith("--parallel fsdp with --device auto (which may be the CPU) "
                                  "needs torch 2.10 or newer")

    @pytest.mark.parametrize("device", ["cpu", "cuda"])
    def test_ddp_runs_from_2_1(self, device: str) -> None:
        assert parallel_problem("ddp", device, "2.1.0") is None

    @pytest.mark.parametrize(("parallel", "version"),
                             [(None, "2.1.0"), ("fsdp", None), ("fsdp", "unknown")])
    def test_nothing_known_is_left_to_the_ranks(self, parallel: str | None,
                                                version: str | None) -> None:
        assert parallel_problem(parallel, "cpu", version) is None

    def test_release(self) -> None:
        assert release("2.4.1+cu121") == (2, 4)
        assert release("2.10.0") == (2, 10)  # compared as numbers, not text
        assert release("main") is None


class TestTorchVersion:
    def test_a_loaded_torch_answers_for_itself(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.4.1"))
        assert torch_features.torch_version() == "2.4.1"

    def test_without_torch_loaded_the_installed_metadata(
            self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
        monkeypatch.setattr(torch_features.metadata, "version",
                            lambda name: {"torch": "2.6.0"}[name])
        assert torch_features.torch_version() == "2.6.0"


class TestFullyShard:
    def test_the_one_this_torch_has(self) -> None:
        import torch.distributed.fsdp as public

        expected = getattr(public, "fully_shard", None)  # public from torch 2.6
        if expected is None:
            from torch.distributed._composable.fsdp import fully_shard as expected
        assert torch_features.fully_shard() is expected

    def test_under_composable_on_torch_2_4(self, monkeypatch: pytest.MonkeyPatch) -> None:
        older = types.ModuleType("torch.distributed.fsdp")  # 2.4's: FSDP1 only
        composable = types.ModuleType("torch.distributed._composable.fsdp")
        composable.fully_shard = lambda module: module  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "torch.distributed.fsdp", older)
        monkeypatch.setitem(sys.modules, "torch.distributed._composable.fsdp", composable)
        assert torch_features.fully_shard() is composable.fully_shard  # type: ignore[attr-defined]

    def test_none_is_an_environment_problem(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in torch_features.FULLY_SHARD_MODULES:
            monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        with pytest.raises(EnvironmentProblem, match="this torch has no FSDP2"):
            torch_features.fully_shard()


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.usefixtures("torch_2_3")
class TestRefusedBeforeAnyRank:
    def test_run(self, torch_2_3: list[object]) -> None:
        result = runner.invoke(app, ["run", *FSDP])
        assert result.exit_code == 3, result.stderr
        assert one_line(result.stderr) == f"autograd-check: error: {REFUSAL}"
        assert result.stdout == "" and torch_2_3 == []

    def test_run_json(self, torch_2_3: list[object]) -> None:
        result = runner.invoke(app, ["run", "--json", *FSDP])
        assert result.exit_code == 3, result.stderr
        assert json.loads(result.stdout)["error"] == {"exit_code": 3, "message": REFUSAL}

    def test_execute_the_python_entry_point(self, torch_2_3: list[object]) -> None:
        spec = build_spec({"ranks": 2, "model": "mlp", "shape": "4x8", "parallel": "fsdp"})
        with pytest.raises(EnvironmentProblem, match="needs torch 2.10 or newer"):
            execute(spec)
        assert torch_2_3 == []

    def test_submit_refuses_before_submitting(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["submit", "--dry-run", "--log-dir", str(tmp_path / "l"),
                                     *FSDP])
        assert result.exit_code == 3 and result.stdout == ""
        assert one_line(result.stderr) == f"autograd-check: error: {REFUSAL}"

    @pytest.mark.parametrize("mode", ["--local", "--slurm"])
    def test_sweep_refuses_once_and_writes_nothing(self, tmp_path: Path, mode: str) -> None:
        out = tmp_path / "s"
        result = runner.invoke(app, ["sweep", mode, "--ranks", "2", "--parallel", "ddp,fsdp",
                                     "--model", "mlp", "--shape", "4x8", "--out", str(out)])
        assert result.exit_code == 3 and result.stdout == ""
        assert one_line(result.stderr) == f"autograd-check: error: {REFUSAL}"
        assert not out.exists()

    def test_ddp_is_not_refused(self, torch_2_3: list[object]) -> None:
        spec = build_spec({"ranks": 2, "model": "mlp", "shape": "4x8", "parallel": "ddp"})
        execute(spec)  # the stand-in for the ranks returns None: it was reached
        assert len(torch_2_3) == 1
