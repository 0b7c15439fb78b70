"""--reference finite-diff: central differences in float64, batched with reused buffers, their
comparisons in the verdict, the refusal past --max-fd-elements, the progress bar."""

from __future__ import annotations

import io
import json
import math
import os
import platform
import re
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from autograd_check.base.budget import ensure_affordable, estimate
from autograd_check.base.errors import BadInput
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import DEFAULT_MAX_FD_ELEMENTS, build_spec
from autograd_check.checks.draw import draw
from autograd_check.cli import app
from autograd_check.execute import execute
from autograd_check.losses.builtin import LOSSES, get_loss
from autograd_check.references import finite_diff as reference
from autograd_check.references.finite_diff import (
    FD_ATOL,
    FD_RTOL,
    FD_STEP,
    Tracker,
    central_differences,
    fd_tolerances,
)
from autograd_check.render.progress import fd_progress

runner = CliRunner()
FD_NAMES = ["autograd vs finite-diff", "manual vs finite-diff"]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


def fd_check(**values: Any) -> CheckResult:
    return execute(build_spec({"reference": "finite-diff", **values}))


def write_target(tmp_path: Path, body: str) -> str:
    path = tmp_path / "my_target.py"
    path.write_text("import torch\n\n" + textwrap.dedent(body))
    return f"{path}"


class TestCentralDifferences:
    @pytest.mark.parametrize("name", sorted(LOSSES))
    def test_every_registered_loss_matches_its_autograd_gradient(self, name: str) -> None:
        loss = get_loss(name)
        spec = build_spec({"shape": "6x7", "dtype": "float64", "loss": name})
        real, predicted = draw(spec, torch.device("cpu"), loss)
        loss.forward(predicted, real).backward()  # type: ignore[no-untyped-call]
        diff = central_differences(lambda p: loss.forward(p, real), predicted)
        assert diff.vectorised and diff.fallback is None
        assert diff.grad.dtype == torch.float64 and diff.grad.shape == predicted.shape
        torch.testing.assert_close(diff.grad, predicted.grad, rtol=1e-6, atol=1e-8)

    def test_the_formula_is_the_central_difference(self) -> None:
        x = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
        diff = central_differences(lambda t: t.pow(3).sum(), x)
        h = FD_STEP
        expected = ((x + h) ** 3 - (x - h) ** 3) / (2 * h)  # 3x² + h², not 3x² exactly
        torch.testing.assert_close(diff.grad, expected, rtol=1e-9, atol=0)

    @pytest.mark.parametrize("pairs", [1, 3, 4, 10, 64])
    def test_batches_of_any_size_and_a_short_last_one(self, pairs: int) -> None:
        x = torch.linspace(-1, 1, 10, dtype=torch.float64).reshape(2, 5)
        diff = central_differences(lambda t: (t.sin() * t).sum(), x, pairs=pairs)
        assert diff.batches == math.ceil(10 / min(pairs, 10))
        assert diff.pairs_per_batch == pairs
        torch.testing.assert_close(diff.grad, x.sin() + x * x.cos(), rtol=1e-8, atol=1e-9)

    def test_one_buffer_is_reused_and_only_the_diagonal_is_perturbed(self) -> None:
        x = torch.rand(4, 3, dtype=torch.float64)
        seen: list[tuple[int, torch.Tensor]] = []
        real_vmap = reference._vmap

        def spy(torch_module: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
            batched = real_vmap(torch_module, fn)

            def call(rows: torch.Tensor) -> Any:
                seen.append((rows.data_ptr(), rows.clone()))
                return batched(rows)

            return call

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(reference, "_vmap", spy)
            diff = central_differences(lambda t: t.pow(2).sum(), x, pairs=5)
        assert diff.batches == 3 and len(seen) == 3
        assert len({ptr for ptr, _ in seen}) == 1, "each batch must reuse the same buffer"
        flat = x.reshape(-1)
        for batch, (_, rows) in enumerate(seen):
            rows = rows.reshape(rows.shape[0], -1)
            for k in range(rows.shape[0] // 2):
                i = batch * 5 + k
                for sign, row in ((1, rows[2 * k]), (-1, rows[2 * k + 1])):
                    changed = (row != flat).nonzero().flatten().tolist()
                    assert changed == [i]
                    assert row[i] == flat[i] + sign * FD_STEP
        assert diff.buffer_bytes == 2 * 5 * 12 * 8

    def test_a_loss_vmap_cannot_trace_is_evaluated_element_by_element(self) -> None:
        x = torch.rand(5, dtype=torch.float64)

        def with_item(t: torch.Tensor) -> torch.Tensor:
            scale = 2.0 if t.sum().item() > -1 else 3.0  # Python control flow on a value
            return (t * t).sum() * scale

        diff = central_differences(with_item, x)
        assert not diff.vectorised and diff.fallback is not None and ".item()" in diff.fallback
        torch.testing.assert_close(diff.grad, 4 * x, rtol=1e-8, atol=1e-9)

    def test_a_loss_that_means_something_else_under_vmap_is_caught_by_the_probe(self) -> None:
        calls: list[int] = []

        def stateful(t: torch.Tensor) -> torch.Tensor:
            calls.append(1)  # vmap calls it once per batch, a direct evaluation once per row
            return t.sum() * len(calls)

        diff = central_differences(stateful, torch.zeros(3, dtype=torch.float64))
        assert not diff.vectorised
        assert diff.fallback is not None and "vmap gave" in diff.fallback

    def test_progress_is_reported_from_zero_to_the_total(self) -> None:
        calls: list[tuple[int, int]] = []
        tracker = Tracker(lambda done, total: calls.append((done, total)), 20)
        central_differences(lambda t: t.sum(), torch.rand(20, dtype=torch.float64), pairs=6,
                            tracker=tracker)
        assert calls[0] == (0, 20) and calls[-1] == (20, 20)
        assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 5

    def test_one_cpu_thread_while_it_runs_then_restored(self) -> None:
        before = torch.get_num_threads()
        inside: list[int] = []

        def fn(t: torch.Tensor) -> torch.Tensor:
            inside.append(torch.get_num_threads())
            return t.sum()

        torch.set_num_threads(2)
        try:
            central_differences(fn, torch.rand(3, dtype=torch.float64))
            assert set(inside) == {reference.CPU_THREADS}
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(before)

    def test_threads_are_restored_when_the_loss_raises(self) -> None:
        before = torch.get_num_threads()

        def fn(t: torch.Tensor) -> torch.Tensor:
            raise ValueError("the user's loss is broken")

        torch.set_num_threads(2)
        try:
            with pytest.raises(ValueError, match="broken"):  # vmap fails, then the loop raises
                central_differences(fn, torch.rand(3, dtype=torch.float64))
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(before)

    @pytest.mark.skipif(
        platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
    )
    def test_the_batches_reuse_their_memory_instead_of_faulting_it_in_again(self) -> None:
        """Each batch's temporaries (4 MiB each at 128x128) come back from the heap: without
        that, every batch faults about 2,000 fresh zero-filled pages in (2 million in all)."""
        x = torch.rand(128, 128, dtype=torch.float64)
        real = torch.rand(128, 128, dtype=torch.float64)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        diff = central_differences(lambda t: (t - real).pow(2).sum(), x)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        batch_pages = diff.buffer_bytes // 4096
        assert diff.batches >= 512 and faults < diff.batches * batch_pages // 8, faults


class TestTolerancesAndCost:
    def test_gradchecks_tolerances_at_least(self) -> None:
        assert fd_tolerances(build_spec({}), 1.0) == (FD_RTOL, FD_ATOL)
        assert fd_tolerances(build_spec({"dtype": "bfloat16"}), 1.0) == (1.6e-2, FD_ATOL)
        assert fd_tolerances(build_spec({"rtol": "0.1", "atol": "0.01"}), 1.0) == (0.1, 0.01)

    def test_a_huge_loss_widens_atol_by_its_rounding(self) -> None:
        _, atol = fd_tolerances(build_spec({}), 1e9)
        assert atol == pytest.approx(reference.FD_NOISE * 2.0**-52 * 1e9 / FD_STEP)

    def test_default_limit_is_documented_and_allows_256x256(self) -> None:
        assert DEFAULT_MAX_FD_ELEMENTS == 65536
        ensure_affordable(build_spec({"shape": "256x256"}))  # exactly at the limit

    def test_past_the_limit_the_refusal_says_the_cost(self) -> None:
        with pytest.raises(BadInput) as e:
            build_spec({"shape": "300x300", "reference": "finite-diff"})
        message = str(e.value)
        assert "90000 elements needs 180000 loss evaluations" in message
        assert "1.6e+10 element operations, roughly 16 s on this CPU" in message
        assert "max_fd_elements is 65536" in message and "--max-fd-elements to 90000" in message

    def test_the_limit_can_be_raised_or_lowered(self) -> None:
        assert build_spec({"shape": "300x300", "reference": "finite-diff",
                           "max_fd_elements": "90000"}).max_fd_elements == 90000
        with pytest.raises(BadInput, match="24 elements"):
            build_spec({"reference": "finite-diff", "max_fd_elements": 23})

    def test_a_model_counts_every_perturbed_tensor(self) -> None:
        spec = build_spec({"shape": "3x8", "model": "mlp", "hidden": "4"})
        # output 24, fc2 8x4 + 8, fc1 4x8 + 4, input 24
        assert estimate(spec).elements == 24 + 40 + 36 + 24
        assert estimate(spec).evaluations == 2 * 124


class TestTheCheck:
    def test_fd_comparisons_count_in_the_verdict(self) -> None:
        result = fd_check()
        assert result.passed and result.bit_exact
        assert [c.name for c in result.comparisons] == ["predicted", *FD_NAMES]
        for c in result.comparisons[1:]:
            assert (c.rtol, c.atol, c.mismatched, c.passed) == (FD_RTOL, FD_ATOL, 0, True)
            assert not c.bit_exact  # a numerical derivative is never bit-exact
        assert result.finite_diff is not None
        assert result.finite_diff["evaluations"] == 48 and result.finite_diff["vectorised"]
        assert "finite_diff_s" in result.timings

    def test_without_it_nothing_changes(self) -> None:
        result = execute(build_spec({}))
        assert [c.name for c in result.comparisons] == ["predicted"]
        assert result.finite_diff is None and "finite_diff" not in result.to_dict()

    @pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
    @pytest.mark.parametrize("loss", sorted(LOSSES))
    def test_every_loss_and_dtype_agrees_with_central_differences(
        self, loss: str, dtype: str
    ) -> None:
        result = fd_check(shape="4x6", dtype=dtype, loss=loss)
        assert result.passed, [(c.name, c.mismatched, c.max_abs_diff) for c in result.comparisons]
        assert len(result.comparisons) == 3

    def test_exact_does_not_apply_to_finite_differences(self) -> None:
        result = fd_check(exact=True)
        assert result.passed and all(c.passed for c in result.comparisons)

    def test_a_wrong_manual_gradient_fails_against_finite_differences(
        self, tmp_path: Path
    ) -> None:
        path = write_target(tmp_path, """
            def loss(predicted, real):
                return (predicted - real).pow(2).sum()

            def manual_grad(predicted, real):
                g = 2.0 * (predicted - real)
                g[0, 0] = g[0, 0] * 1.5  # the planted bug
                return g
        """)
        result = fd_check(target=path)
        by_name = {c.name: c for c in result.comparisons}
        assert not result.passed and result.exit_code == 1
        assert by_name["autograd vs finite-diff"].passed
        manual = by_name["manual vs finite-diff"]
        assert not manual.passed and manual.mismatched == 1 and manual.max_abs_index == [0, 0]

    def test_a_wrong_autograd_gradient_is_caught_when_manual_agrees_with_it(
        self, tmp_path: Path
    ) -> None:
        """The case the manual check alone cannot see: a custom backward that is wrong the same
        way as the hand derivation."""
        path = write_target(tmp_path, """
            class Square(torch.autograd.Function):
                @staticmethod
                def forward(ctx, d):
                    ctx.save_for_backward(d)
                    return d * d

                @staticmethod
                def backward(ctx, g):
                    (d,) = ctx.saved_tensors
                    return g * 3.0 * d  # should be 2 d

            def loss(predicted, real):
                return Square.apply(predicted - real).sum()

            def manual_grad(predicted, real):
                return 3.0 * (predicted - real)  # derived with the same mistake
        """)
        result = fd_check(target=path)
        by_name = {c.name: c for c in result.comparisons}
        assert by_name["predicted"].passed  # manual and autograd agree...
        assert not by_name["autograd vs finite-diff"].passed  # ...and are both wrong
        assert by_name["autograd vs finite-diff"].mismatched == 24
        assert not result.passed

    def test_a_target_vmap_cannot_trace_falls_back_with_a_note(self, tmp_path: Path) -> None:
        path = write_target(tmp_path, """
            def loss(predicted, real):
                if (predicted - real).abs().max().item() > 10:  # data-dependent Python
                    raise ValueError("too far apart")
                return (predicted - real).pow(2).sum()

            def manual_grad(predicted, real):
                return 2.0 * (predicted - real)
        """)
        result = fd_check(target=path)
        assert result.passed
        assert result.finite_diff is not None and not result.finite_diff["vectorised"]
        assert any("element by element" in n and "vmap" in n for n in result.notes)

    def test_a_target_that_raises_in_float64_fails_with_its_own_error(
        self, tmp_path: Path
    ) -> None:
        path = write_target(tmp_path, """
            def loss(predicted, real):
                if predicted.dtype == torch.float64:
                    raise TypeError("float64 is not supported here")
                return (predicted - real).pow(2).sum()

            def manual_grad(predicted, real):
                return 2.0 * (predicted - real)
        """)
        result = fd_check(target=path)
        assert not result.passed and result.exit_code == 1
        assert result.error is not None and "float64 is not supported here" in result.error

    def test_through_a_model(self) -> None:
        result = fd_check(model="mlp", hidden="4")
        assert result.passed
        fd = [c.name for c in result.comparisons if c.name.endswith("vs finite-diff")]
        assert "fc1.weight: autograd vs finite-diff" in fd and "input: manual vs finite-diff" in fd
        assert len(fd) == 2 * 6

    def test_the_json_round_trips(self) -> None:
        result = fd_check()
        again = CheckResult.from_dict(json.loads(result.to_json()))
        assert again.finite_diff == result.finite_diff
        assert [c.name for c in again.comparisons] == [c.name for c in result.comparisons]


class TestCli:
    def test_run_shows_the_fd_table_and_keeps_stderr_clean(self) -> None:
        code, out, err = run("--reference", "finite-diff")
        assert code == 0, err
        assert err == ""  # no progress bar when stderr is not a terminal
        assert "against finite differences" in out
        assert "(L(p + h·eᵢ) − L(p − h·eᵢ)) / 2h in float64, h=1e-6: 48 loss evaluations" in out
        assert re.search(r"finite-diff +0 of 48 mismatched", out)
        assert "rtol=0.001 atol=1e-05" in out
        assert re.search(r"predicted +autograd +3×8 +0 of 24 +[0-9.e-]+ at \[\d, \d\]", out)

    def test_json_has_the_block_and_the_statistics(self) -> None:
        code, out, err = run("--reference", "finite-diff", "--json")
        assert code == 0 and err == ""
        doc = json.loads(out)
        assert [s["name"] for s in doc["statistics"]] == ["predicted", *FD_NAMES]
        assert doc["spec"]["reference"] == "finite-diff"
        assert doc["spec"]["max_fd_elements"] == 65536
        assert {"method", "step", "rtol", "atol", "elements", "evaluations", "vectorised",
                "pairs_per_batch", "batches", "buffer_bytes"} <= set(doc["finite_diff"])

    def test_a_mismatch_exits_1(self, tmp_path: Path) -> None:
        path = write_target(tmp_path, """
            def loss(predicted, real):
                return (predicted - real).pow(2).sum()

            def manual_grad(predicted, real):
                return 2.2 * (predicted - real)
        """)
        code, out, _ = run("--reference", "finite-diff", "--target", path)
        assert code == 1 and "FAIL" in out

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--reference", "fd"], "reference 'fd' is not known; choose one of manual, "
                                    "finite-diff"),
            (["--max-fd-elements", "0"], "max_fd_elements '0' is not allowed; expected an "
                                         "integer from 1"),
            (["--max-fd-elements", "lots"], "max_fd_elements 'lots' is not allowed"),
            (["--reference", "finite-diff", "--shape", "300x300"],
             "reference finite-diff on 90000 elements needs 180000 loss evaluations"),
        ],
    )
    def test_bad_input_exits_2_in_one_line(self, args: list[str], words: str) -> None:
        code, out, err = run(*args)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and err.startswith("autograd-check: error: ")
        assert words in err

    def test_refusal_in_json_is_an_envelope(self) -> None:
        code, out, _ = run("--reference", "finite-diff", "--shape", "300x300", "--json")
        assert code == 2 and json.loads(out)["error"]["exit_code"] == 2

    def test_from_a_config_file(self, tmp_path: Path) -> None:
        config = tmp_path / "fd.toml"
        config.write_text(
            '[check]\nreference = "finite-diff"\nmax_fd_elements = 10\nshape = "2x5"\n'
        )
        code, out, _ = run("--config", str(config), "--json")
        assert code == 0 and json.loads(out)["finite_diff"]["elements"] == 10
        code, _, err = run("--config", str(config), "--shape", "3x8")
        assert code == 2 and "24 elements" in err and "max_fd_elements is 10" in err
        code, out, _ = run("--config", str(config), "--shape", "3x8", "--max-fd-elements", "24",
                           "--json")
        assert code == 0 and json.loads(out)["finite_diff"]["elements"] == 24


class TestProgressBar:
    def test_shown_on_a_terminal(self) -> None:
        file = io.StringIO()
        console = Console(file=file, force_terminal=True, width=100)
        with fd_progress(build_spec({"reference": "finite-diff"}), console) as progress:
            assert progress is not None
            progress(0, 24)
            progress(24, 24)
        assert "finite differences" in file.getvalue() and "24/24" in file.getvalue()

    def test_not_when_stderr_is_not_a_terminal(self) -> None:
        console = Console(file=io.StringIO(), force_terminal=False)
        with fd_progress(build_spec({"reference": "finite-diff"}), console) as progress:
            assert progress is None

    def test_not_without_finite_differences(self) -> None:
        console = Console(file=io.StringIO(), force_terminal=True)
        with fd_progress(build_spec({}), console) as progress:
            assert progress is None


SLURM_SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]
CLI = [sys.executable, "-m", "autograd_check"]
OPTIONS = ["--reference", "finite-diff", "--repeat", "2", "--deterministic", "--json",
           "--shape", "8x8", "--model", "linear"]


def slurm_env() -> dict[str, str]:
    """This environment without any allocation it may itself run in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))}
    env.update(COLUMNS="120", NO_COLOR="1", AUTOGRAD_CHECK=" ".join(CLI))
    return env


def same_check_as_here(remote: dict[str, Any]) -> None:
    local = json.loads(run(*OPTIONS)[1])
    assert remote["verdict"]["passed"] and remote["spec"] == local["spec"]
    assert [s["name"] for s in remote["statistics"]] == [s["name"] for s in local["statistics"]]
    assert remote["finite_diff"]["evaluations"] == local["finite_diff"]["evaluations"]
    assert remote["repeat"]["runs"] == 2 and remote["repeat"]["bitwise_identical"]
    assert remote["environment"]["deterministic_algorithms"] is True


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestOnSlurm:
    def test_submitted_as_a_batch_job(self, tmp_path: Path) -> None:
        done = subprocess.run(
            [*CLI, "submit", "--wait", *OPTIONS, "--log-dir", str(tmp_path / "logs"),
             *SLURM_SMALL],
            capture_output=True, text=True, timeout=300, env=slurm_env(),
        )
        assert done.returncode == 0, done.stderr
        remote = json.loads(done.stdout)
        assert remote["environment"]["slurm"]["job_id"]
        same_check_as_here(remote)

    def test_as_a_step_inside_salloc(self, tmp_path: Path) -> None:
        done = subprocess.run(
            ["salloc", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=500M", "--time=5",
             "--job-name=agc-test-fd", *CLI, "submit", *OPTIONS,
             "--log-dir", str(tmp_path / "logs")],
            capture_output=True, text=True, timeout=300, env=slurm_env(),
        )
        assert done.returncode == 0, done.stderr
        remote = json.loads(done.stdout)
        assert remote["environment"]["slurm"]["step_id"] is not None
        same_check_as_here(remote)
