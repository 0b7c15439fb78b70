"""`autograd-check run` through CliRunner: every option, every bad input, the JSON contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.losses import builtin as losses

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


class TestRun:
    def test_default_run_passes_and_shows_everything(self) -> None:
        code, out, err = run()
        assert code == 0, err
        assert err == ""
        for title in ("real  3×8 float32", "predicted (requires_grad=True)", "manual gradient",
                      "autograd gradient (predicted.grad)"):
            assert title in out
        assert "SumBackward0 ← PowBackward0 ← SubBackward0 ← AccumulateGrad" in out
        assert "PASS" in out and "FAIL" not in out
        assert "bit-exact (eq().all())        yes" in out
        assert "mismatched elements           0 of 24" in out
        assert "rtol=1.3e-06 atol=1e-05" in out
        assert f"torch {torch.__version__}" in out and "host " in out
        assert "0.4963" in out  # torch.manual_seed(0); torch.rand(3, 8)[0, 0]
        assert "\x1b[" not in out  # no colour codes

    def test_seed_changes_the_tensors(self) -> None:
        torch.manual_seed(7)
        first = torch.rand(3, 8)[0, 0].item()
        code, out, _ = run("--seed", "7")
        assert code == 0 and f"{first:.4f}" in out

    @pytest.mark.parametrize("shape", ["5", "2,3,4", "2x2x2x2x2x2x2x2"])
    def test_shapes_of_every_rank(self, shape: str) -> None:
        code, out, _ = run("--shape", shape, "--json")
        assert code == 0
        dims = [int(d) for d in shape.replace(",", "x").split("x")]
        assert json.loads(out)["spec"]["shape"] == dims

    @pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
    def test_dtypes(self, dtype: str) -> None:
        code, out, _ = run("--dtype", dtype)
        assert code == 0 and f"3×8 {dtype}" in out

    def test_tolerances_are_shown_and_used(self) -> None:
        code, out, _ = run("--rtol", "0.5", "--atol", "0")
        assert code == 0 and "rtol=0.5 atol=0" in out

    def test_exact_is_the_verdict_criterion(self) -> None:
        code, out, _ = run("--exact")
        assert code == 0 and "exact: bit-exact equality" in out

    def test_large_tensors_are_summarised(self) -> None:
        code, out, _ = run("--shape", "64x64")
        assert code == 0
        assert "min " in out and "mean " in out and "first values [" in out
        code, whole, _ = run("--shape", "20x20", "--show-tensors")
        assert code == 0 and "first values" not in whole and whole.count("[[") == 4

    def test_no_show_tensors(self) -> None:
        code, out, _ = run("--no-show-tensors")
        assert code == 0 and "real  3×8" not in out and "PASS" in out

    def test_device_auto_is_cpu_without_cuda(self) -> None:
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is visible: auto picks it")
        code, out, _ = run("--device", "auto", "--json")
        assert code == 0 and json.loads(out)["environment"]["device"] == "cpu"


class TestMismatch:
    def test_a_wrong_manual_gradient_exits_1(self, monkeypatch: pytest.MonkeyPatch) -> None:
        mse = losses.LOSSES["mse-sum"]
        buggy = type(mse)(**{**vars(mse), "manual_grad": lambda p, r: 2.0 * (p - r) * 1.01})
        monkeypatch.setitem(losses.LOSSES, "mse-sum", buggy)
        code, out, err = run()
        assert code == 1
        assert "FAIL" in out and "bit-exact (eq().all())        no" in out
        assert "difference (manual − autograd)" in out
        assert "mismatched elements           24 of 24" in out
        assert err == ""


class TestBadInput:
    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--shape", "3x0"], "shape '3x0': dimension 2 is 0; dimensions must be >= 1"),
            (["--shape", "3x-1"], "dimension 2 is -1"),
            (["--shape", "3x2.5"], "dimension 2 is '2.5', not an integer"),
            (["--shape", "3x"], "dimension 2 is missing"),
            (["--shape", "1x1x1x1x1x1x1x1x1"], "has 9 dimensions; at most 8 allowed"),
            (["--dtype", "int8"], "dtype 'int8' is not supported; choose one of float32"),
            (["--device", "gpu"], "device 'gpu' is not known; choose cpu, cuda, cuda:N"),
            (["--rtol", "-1"], "rtol '-1' is not allowed; expected a finite number >= 0"),
            (["--atol", "lots"], "atol 'lots' is not allowed"),
            (["--seed", "x"], "seed 'x' is not a non-negative integer"),
            (["--shape", "100000x100000x10"], "needs about"),
            (["--bogus"], "No such option: --bogus"),
            (["--shape"], "Option '--shape' requires an argument"),
        ],
    )
    def test_one_line_exit_2_no_traceback(self, args: list[str], message: str) -> None:
        code, out, err = run(*args)
        assert code == 2
        assert message in err
        assert err.count("\n") == 1 and err.startswith("autograd-check: error: ")
        assert "Traceback" not in err and out == ""

    def test_memory_message_says_what_it_needs_and_what_there_is(self) -> None:
        _, _, err = run("--shape", "100000x100000x10")
        assert "float32 needs about" in err and "available" in err and "--shape" in err

    @pytest.mark.parametrize(
        "args", [["--dtype", "int8"], ["--bogus"], ["--rtol"], ["--device", "cuda:x"]]
    )
    def test_json_errors_are_a_json_envelope(self, args: list[str]) -> None:
        code, out, err = run("--json", *args)
        assert code == 2
        doc = json.loads(out)
        assert doc["error"] == {"exit_code": 2, "message": err.split("error: ", 1)[1].strip()}

    def test_what_a_target_prints_stays_off_the_json(self, tmp_path: Path) -> None:
        target = tmp_path / "chatty.py"
        target.write_text(
            "print('hello from the module')\n"
            "def loss(p, r):\n    print('in loss')\n    return (p - r).pow(2).sum()\n"
            "def manual_grad(p, r):\n    return 2.0 * (p - r)\n"
        )
        code, out, err = run("--json", "--target", str(target))
        assert code == 0 and json.loads(out)["verdict"]["passed"] is True
        assert "hello from the module" in err and "in loss" in err


class TestCuda:
    @pytest.mark.skipif(torch.version.cuda is not None, reason="this torch build has CUDA")
    def test_cpu_only_build_exits_3_and_suggests_cpu(self) -> None:
        code, out, err = run("--device", "cuda")
        assert code == 3 and out == ""
        assert "has no CUDA support" in err and "--device cpu" in err

    def test_no_visible_device_names_cuda_visible_devices(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(torch.version, "cuda", "12.4")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        code, _, err = run("--device", "cuda:0")
        assert code == 3
        assert "no CUDA device is visible (CUDA_VISIBLE_DEVICES='')" in err
        assert "--device cpu" in err

    def test_index_beyond_the_visible_devices(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(torch.version, "cuda", "12.4")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        code, _, err = run("--device", "cuda:5")
        assert code == 3 and "only 2 CUDA device(s) visible (cuda:0 to cuda:1" in err


class TestJsonContract:
    TOP = {"schema_version", "tool", "kind", "spec", "verdict", "loss", "statistics", "tensors",
           "environment", "timings", "notes"}

    def test_keys_are_pinned(self) -> None:
        code, out, err = run("--json")
        assert code == 0 and err == ""
        doc = json.loads(out)  # the whole of stdout is one document
        assert set(doc) == self.TOP
        assert doc["schema_version"] == 1
        assert {"passed", "bit_exact", "criterion", "exit_code"} <= set(doc["verdict"])
        assert doc["verdict"] == {"passed": True, "bit_exact": True, "criterion": "tolerance",
                                  "exit_code": 0}
        assert {"name", "value", "formula", "gradient_formula", "grad_fn_chain"} <= set(doc["loss"])
        stats = doc["statistics"][0]
        assert {"name", "shape", "numel", "bit_exact", "mismatched", "max_abs_diff",
                "max_abs_index", "max_rel_diff", "max_rel_index", "rtol", "atol",
                "passed"} <= set(stats)
        assert {"real", "predicted", "manual_grad", "autograd_grad"} <= set(doc["tensors"])
        for view in doc["tensors"].values():
            assert {"shape", "dtype", "numel", "min", "max", "mean", "head", "data"} <= set(view)
            assert len(view["data"]) == 3 and len(view["data"][0]) == 8
        assert {"host", "torch", "device", "device_name", "cuda", "slurm",
                "deterministic_algorithms", "tf32_matmul", "tf32_cudnn",
                "float32_matmul_precision"} <= set(doc["environment"])
        assert {"draw_s", "forward_s", "backward_s", "manual_s", "compare_s",
                "total_s"} <= set(doc["timings"])
        assert set(doc["spec"]) >= {"shape", "dtype", "device", "seed", "rtol", "atol", "exact",
                                    "loss"}

    @pytest.mark.parametrize("model", ["linear", "mlp"])
    def test_a_model_run_keeps_the_tensor_contract(self, model: str) -> None:
        code, out, _ = run("--json", "--model", model, "--shape", "2x3")
        doc = json.loads(out)
        assert code == 0 and set(doc) == self.TOP
        assert {"real", "predicted", "manual_grad", "autograd_grad"} <= set(doc["tensors"])
        assert doc["tensors"]["predicted"]["shape"] == [2, 3]

    def test_tensors_carry_values_only_up_to_4096_elements(self) -> None:
        _, out, _ = run("--json", "--shape", "4097")
        assert all(v["data"] is None for v in json.loads(out)["tensors"].values())
        _, out, _ = run("--json", "--shape", "4096")
        assert all(len(v["data"]) == 4096 for v in json.loads(out)["tensors"].values())

    def test_plain_json_even_with_infinities(self) -> None:
        # 2**19 squared differences of mean 1/6 sum past float16's largest value, 65504.
        code, out, _ = run("--json", "--dtype", "float16", "--shape", "1024x512")
        doc = json.loads(out)
        assert code == 0 and doc["loss"]["value"] == "Infinity"
        assert any("overflow" in note for note in doc["notes"])


class TestHelpAndVersion:
    def test_no_args_shows_help(self) -> None:
        result = runner.invoke(app, [])
        assert "Usage" in result.stdout and "run" in result.stdout

    def test_version(self) -> None:
        result = runner.invoke(app, ["--version"])
        assert result.exit_code == 0 and result.stdout.startswith("autograd-check 0.")

    def test_run_help_lists_the_options_and_exit_codes(self) -> None:
        result = runner.invoke(app, ["run", "--help"])
        assert result.exit_code == 0
        for option in ("--shape", "--dtype", "--device", "--seed", "--rtol", "--atol", "--exact",
                       "--show-tensors", "--json", "--config"):
            assert option in result.stdout
        assert "Exit codes" in result.stdout and "mismatch" in result.stdout

    def test_help_does_not_import_torch(self) -> None:
        code = (
            "import sys\n"
            "from autograd_check.cli import app\n"
            "try:\n    app(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert done.stderr.strip().endswith("NO-TORCH"), done.stderr

    def test_bad_input_does_not_import_torch(self) -> None:
        code = (
            "import sys\n"
            "from autograd_check.cli import app\n"
            "try:\n    app(['run', '--shape', '0'])\nexcept SystemExit as e:\n"
            "    print(e.code, 'TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert done.stdout.strip() == "2 NO-TORCH", done.stdout + done.stderr

    def test_python_dash_m(self) -> None:
        done = subprocess.run([sys.executable, "-m", "autograd_check", "run", "--json"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stderr == ""
        assert json.loads(done.stdout)["verdict"]["passed"] is True


class TestHelp:
    """The app's --help: the command table, drawn as typer draws it, and the exit codes."""

    def test_each_command_is_listed_with_its_own_first_paragraph(self) -> None:
        import importlib
        import inspect

        from autograd_check.cli.app import COMMANDS, load_command

        for name, (module, short) in COMMANDS.items():
            importlib.import_module(module)
            command = load_command(name)
            assert command is not None, f"{module} registers no command {name!r}"
            first = inspect.cleandoc(command.help or "").split("\n\n")[0]
            assert short == first, name
            assert command.hidden == name.startswith("_")

    @pytest.mark.parametrize(
        "env",
        [{"TERMINAL_WIDTH": "120"}, {"TERMINAL_WIDTH": "60"},
         {"TERMINAL_WIDTH": "100", "FORCE_COLOR": "1"}],
    )
    def test_the_app_help_is_typers_own(self, env: dict[str, str]) -> None:
        """render/help.py draws the app's help without typer.rich_utils (start-up); it must draw
        exactly what typer would, plain and in colour."""
        code = (
            "import contextlib, io\n"
            "import typer.main\n"
            "from typer.core import TyperGroup\n"
            "from autograd_check.cli.app import app\n"
            "group = typer.main.get_command(app)\n"
            "ctx = group.make_context('autograd-check', [], resilient_parsing=True)\n"
            "ours, typers = io.StringIO(), io.StringIO()\n"
            "with contextlib.redirect_stdout(ours):\n"
            "    group.format_help(ctx, ctx.make_formatter())\n"
            "group._listing = True  # the command names from the table, as in format_help\n"
            "with contextlib.redirect_stdout(typers):\n"
            "    TyperGroup.format_help(group, ctx, ctx.make_formatter())\n"
            "assert ours.getvalue() == typers.getvalue(), (ours.getvalue(), typers.getvalue())\n"
            "print(ours.getvalue())\n"
        )
        environ = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env={**environ, **env})
        assert done.returncode == 0, done.stderr
        assert "Commands" in done.stdout and "tour" in done.stdout
        assert ("\x1b[" in done.stdout) == ("FORCE_COLOR" in env)

    @pytest.mark.parametrize(
        "command", [[], ["run"], ["tour"], ["submit"], ["status"], ["result"], ["env"],
                    ["sweep"], ["report"]],
    )
    def test_help_ends_with_the_exit_codes(self, command: list[str]) -> None:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.stderr
        flat = " ".join(result.stdout.split())
        for code in ("Exit codes: 0 pass · 1 ",
                     " · 2 bad input or tolerances too wide · 3 environment",
                     " · 4 Slurm job or rank failed", " · 130 interrupted"):
            assert code in flat

    def test_no_arguments_print_the_help_once(self) -> None:
        result = runner.invoke(app, [])
        assert result.exit_code == 0
        assert result.stdout.count("Usage: autograd-check") == 1 and result.stderr == ""

    def test_an_unknown_command_is_one_line(self) -> None:
        result = runner.invoke(app, ["rnu"])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == ("autograd-check: error: No such command 'rnu'. Did you mean "
                                 "'run'? (see 'autograd-check --help')\n")
