"""--deterministic, --repeat N, and the precision settings every result records."""

from __future__ import annotations

import json
import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import build_spec
from autograd_check.checks.determinism import (
    CUBLAS_VARIABLE,
    bitwise_equal,
    deterministic_mode,
    repeat_gradients,
    repeat_passed,
)
from autograd_check.cli import app
from autograd_check.execute import execute

runner = CliRunner()
HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no usable CUDA device here")


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(autouse=True)
def _global_settings_back() -> Iterator[None]:
    """Each test leaves torch's global switches and CUBLAS_WORKSPACE_CONFIG as it found them."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision(),
              os.environ.get(CUBLAS_VARIABLE))
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]
    torch.set_float32_matmul_precision(before[3])
    if before[4] is None:
        os.environ.pop(CUBLAS_VARIABLE, None)
    else:
        os.environ[CUBLAS_VARIABLE] = before[4]


@pytest.fixture
def noisy_target(tmp_path: Path) -> str:
    """A loss whose backward adds float noise, as GPU atomics do: runs differ in their last bits."""
    path = tmp_path / "noisy.py"
    path.write_text(textwrap.dedent("""
        import torch

        class Noisy(torch.autograd.Function):
            @staticmethod
            def forward(ctx, d):
                ctx.save_for_backward(d)
                return d * d

            @staticmethod
            def backward(ctx, g):
                (d,) = ctx.saved_tensors
                return g * 2 * d + torch.rand(d.shape, dtype=d.dtype) * 1e-7

        def loss(predicted, real):
            return Noisy.apply(predicted - real).sum()

        def manual_grad(predicted, real):
            return 2.0 * (predicted - real)
    """))
    return str(path)


class TestDeterministicMode:
    def test_on_inside_restored_after(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv(CUBLAS_VARIABLE, raising=False)
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True
        with deterministic_mode(True) as notes:
            assert torch.are_deterministic_algorithms_enabled()
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
            assert os.environ[CUBLAS_VARIABLE] == ":4096:8"
        assert notes == []
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        assert os.environ[CUBLAS_VARIABLE] == ":4096:8"  # cuBLAS has read it: it stays

    def test_off_changes_nothing(self) -> None:
        torch.use_deterministic_algorithms(False)
        with deterministic_mode(False):
            assert not torch.are_deterministic_algorithms_enabled()

    def test_a_users_deterministic_cublas_setting_is_kept(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(CUBLAS_VARIABLE, ":16:8")
        with deterministic_mode(True) as notes:
            assert os.environ[CUBLAS_VARIABLE] == ":16:8"
        assert notes == []

    def test_a_nondeterministic_cublas_setting_is_replaced_and_said(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(CUBLAS_VARIABLE, ":0:0")
        with deterministic_mode(True) as notes:
            assert os.environ[CUBLAS_VARIABLE] == ":4096:8"
        assert len(notes) == 1 and "was ':0:0'" in notes[0]

    def test_an_op_without_a_deterministic_kernel_is_an_environment_problem(self) -> None:
        with pytest.raises(EnvironmentProblem, match="no deterministic implementation"):
            with deterministic_mode(True):
                raise RuntimeError("scatter_add_cuda_kernel does not have a deterministic "
                                   "implementation, but you set 'torch.use_deterministic_"
                                   "algorithms(True)'")
        assert not torch.are_deterministic_algorithms_enabled()

    def test_other_errors_pass_through(self) -> None:
        with pytest.raises(RuntimeError, match="something else"):
            with deterministic_mode(True):
                raise RuntimeError("something else")


class TestRepeatGradients:
    def test_identical_runs(self) -> None:
        g = torch.rand(3, 4)
        block = repeat_gradients({"p": g}, lambda: {"p": g.clone()}, 4, in_verdict=True)
        assert block["bitwise_identical"] and block["identical_runs"] == 4
        assert block["max_spread"] == 0.0 and block["varying_elements"] == 0
        assert repeat_passed(block)

    def test_spread_index_and_counts(self) -> None:
        g = torch.zeros(3, 4, dtype=torch.float64)
        runs = iter([0.0, 0.25, -0.5])

        def rerun() -> dict[str, torch.Tensor]:
            h = g.clone()
            h[2, 1] = next(runs)
            return {"p": h}

        block = repeat_gradients({"p": g}, rerun, 4, in_verdict=False)
        assert not block["bitwise_identical"] and block["identical_runs"] == 2
        assert block["max_spread"] == 0.75 and block["max_spread_index"] == [2, 1]
        assert block["max_spread_tensor"] == "p" and block["varying_elements"] == 1
        assert repeat_passed(block)  # information only without --deterministic
        assert not repeat_passed({**block, "in_verdict": True})

    def test_bitwise_means_bits(self) -> None:
        nan = torch.tensor([float("nan"), 1.0])
        assert bitwise_equal(nan, nan.clone())  # equal NaNs are the same bits (== says no)
        assert not bitwise_equal(torch.tensor([0.0]), torch.tensor([-0.0]))  # == says yes
        assert not bitwise_equal(torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64))
        for dtype in (torch.float16, torch.bfloat16):
            assert bitwise_equal(torch.ones(2, dtype=dtype), torch.ones(2, dtype=dtype))

    def test_the_greatest_spread_across_tensors(self) -> None:
        first = {"a": torch.zeros(2), "b": torch.zeros(5)}
        block = repeat_gradients(
            first, lambda: {"a": torch.tensor([0.0, 0.1]), "b": torch.tensor([0, 0, 0, 2.0, 0])},
            2, in_verdict=False,
        )
        assert block["max_spread_tensor"] == "b" and block["max_spread_index"] == [3]
        assert block["varying_elements"] == 2


class TestTheCheck:
    def test_deterministic_is_in_force_while_the_check_runs_and_recorded(self) -> None:
        torch.use_deterministic_algorithms(False)
        result = execute(build_spec({"deterministic": True}))
        assert result.environment["deterministic_algorithms"] is True
        assert result.spec["deterministic"] is True
        assert not torch.are_deterministic_algorithms_enabled()
        plain = execute(build_spec({}))
        assert plain.environment["deterministic_algorithms"] is False

    def test_precision_settings_are_recorded(self) -> None:
        torch.set_float32_matmul_precision("high")
        env = execute(build_spec({})).environment
        assert env["float32_matmul_precision"] == "high"
        assert env["tf32_matmul"] is torch.backends.cuda.matmul.allow_tf32
        assert env["tf32_cudnn"] is torch.backends.cudnn.allow_tf32

    def test_repeat_on_cpu_is_identical(self) -> None:
        result = execute(build_spec({"repeat": 5, "shape": "16x16"}))
        assert result.passed and result.repeat is not None
        assert result.repeat["runs"] == 5 and result.repeat["bitwise_identical"]
        assert "repeat_s" in result.timings
        assert CheckResult.from_dict(json.loads(result.to_json())).repeat == result.repeat

    def test_repeat_once_adds_nothing(self) -> None:
        result = execute(build_spec({}))
        assert result.repeat is None and "repeat" not in result.to_dict()

    def test_each_run_is_a_fresh_graph(self, noisy_target: str) -> None:
        result = execute(build_spec({"target": noisy_target, "repeat": 3}))
        assert result.repeat is not None and not result.repeat["bitwise_identical"]
        assert 0 < result.repeat["max_spread"] < 2e-7
        assert result.passed  # without --deterministic the spread is information

    def test_through_a_model(self) -> None:
        result = execute(build_spec({"model": "mlp", "hidden": "4", "repeat": 3}))
        assert result.repeat is not None and result.repeat["bitwise_identical"]


class TestCli:
    def test_repeat_line_and_determinism_line(self) -> None:
        code, out, err = run("--repeat", "3", "--deterministic", "--no-show-tensors")
        assert code == 0 and err == ""
        assert re.search(r"repeat +3 runs on fresh graphs: autograd gradient bitwise identical "
                         r"every time", out)
        assert re.search(r"determinism +deterministic algorithms on · TF32 matmul off", out)

    def test_json_repeat_block(self) -> None:
        code, out, _ = run("--repeat", "2", "--json")
        doc = json.loads(out)
        assert code == 0 and doc["spec"]["repeat"] == 2
        assert doc["repeat"] == {
            "runs": 2, "bitwise_identical": True, "identical_runs": 2, "varying_elements": 0,
            "max_spread": 0.0, "max_spread_tensor": None, "max_spread_index": None,
            "in_verdict": False,
        }

    def test_a_spread_fails_only_what_deterministic_promised(self, noisy_target: str) -> None:
        code, out, _ = run("--target", noisy_target, "--repeat", "3", "--no-show-tensors")
        assert code == 0 and "NOT bitwise identical" in out
        code, out, _ = run("--target", noisy_target, "--repeat", "3", "--deterministic",
                           "--no-show-tensors")
        assert code == 1 and "FAIL" in out
        flat = " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split())  # unwrap the panel
        assert "--deterministic promised identical runs: counts as a failure" in flat

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--repeat", "0"], "repeat '0' is not allowed; expected an integer from 1 to 10000"),
            (["--repeat", "two"], "repeat 'two' is not allowed"),
            (["--repeat", "10001"], "repeat '10001' is not allowed"),
        ],
    )
    def test_bad_repeat_exits_2(self, args: list[str], words: str) -> None:
        code, out, err = run(*args)
        assert code == 2 and out == "" and words in err and err.count("\n") == 1

    def test_from_a_config_file(self, tmp_path: Path) -> None:
        config = tmp_path / "det.toml"
        config.write_text("[check]\ndeterministic = true\nrepeat = 2\n")
        code, out, _ = run("--config", str(config), "--json")
        doc = json.loads(out)
        assert code == 0 and doc["repeat"]["runs"] == 2
        assert doc["environment"]["deterministic_algorithms"] is True
        config.write_text('[check]\ndeterministic = "yes"\n')
        code, _, err = run("--config", str(config))
        assert code == 2 and "deterministic 'yes' is not allowed; expected true or false" in err


@pytest.mark.cuda
@needs_cuda
class TestCuda:
    def test_deterministic_on_cuda_sets_what_cuda_needs(self) -> None:
        result = execute(build_spec({"device": "cuda", "deterministic": True, "repeat": 3,
                                     "shape": "64x64"}))
        assert result.passed and result.environment["deterministic_algorithms"] is True
        assert os.environ[CUBLAS_VARIABLE] in (":4096:8", ":16:8")
        assert result.repeat is not None and result.repeat["bitwise_identical"]

    def test_finite_diff_on_cuda(self) -> None:
        result = execute(build_spec({"device": "cuda", "reference": "finite-diff",
                                     "shape": "32x32", "model": "mlp"}))
        assert result.passed and result.finite_diff is not None
