"""--target with inputs(generator, dtype, device): an object with fn (and manual), an nn.Module or
an autograd.Function, checked from the command line through the Python API; --reference
projection|forward and --order 2 on run (built-in losses too), sweep and submit (the real
cluster). Bad forms are exit 2 in one line; the user's own code raising is a failed check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.base.errors import BadInput
from autograd_check.base.spec import build_spec
from autograd_check.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SWISH = f"{EXAMPLES / 'function_buggy.py'}:Swish"
LOGSUMEXP = f"{EXAMPLES / 'function_correct.py'}:LogSumExp"
LINEAR = f"{EXAMPLES / 'module_manual.py'}:MyLinear"
LOSS_BUGGY = f"{EXAMPLES / 'buggy_target.py'}:smooth_l1"
LOSS_CORRECT = f"{EXAMPLES / 'correct_target.py'}:log_cosh"

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("run", "--json", *args)
    assert code in (0, 1), err
    return code, json.loads(out)


def names(doc: dict[str, Any]) -> list[str]:
    return [c["name"] for c in doc["statistics"]]


def write(tmp_path: Path, body: str, name: str = "mine.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


OBJECT = """
    import torch

    class Cube:
        def inputs(self, generator, dtype, device):
            a = torch.randn(3, 4, generator=generator, dtype=dtype, device=device)
            b = torch.randn(3, 4, generator=generator, dtype=dtype, device=device)
            return a.requires_grad_(), b

        def fn(self, a, b):
            return (a ** 3 * b).sum(dim=1)

        def manual(self, a, b, grad_output):
            return (3 * a ** 2 * b * grad_output[:, None],)

    class WrongCube(Cube):
        def manual(self, a, b, grad_output):
            return (2 * a * b * grad_output[:, None],)
"""


class TestForms:
    def test_a_function_with_a_planted_bug_fails_against_projection(self) -> None:
        code, doc = run_json("--target", SWISH, "--reference", "projection")
        assert code == 1 and doc["verdict"]["passed"] is False
        assert names(doc) == ["x: autograd vs projection"]
        assert doc["reference"]["name"] == "projection" and doc["spec"]["reference"] == "projection"
        assert doc["spec"]["checked"][0]["shape"] == [4, 5]
        assert doc["spec"]["fn"] == "Swish.apply"

    def test_and_against_forward_mode(self) -> None:
        code, doc = run_json("--target", SWISH, "--reference", "forward")
        # the jvp and the backward are both Swish's own: projection runs beside forward mode
        assert code == 1 and names(doc) == ["x: autograd vs forward", "x: autograd vs projection"]

    @pytest.mark.parametrize(("reference", "rows"), [
        # LogSumExp's backward is the target's own: projection runs beside manual vs autograd
        ("manual", ["x", "x: autograd vs projection", "x: manual vs projection"]),
        ("autograd", ["x", "x: autograd vs projection", "x: manual vs projection"]),
        ("projection", ["x", "x: autograd vs projection", "x: manual vs projection"]),
        ("forward", ["x", "x: autograd vs forward", "x: manual vs forward",
                     "x: autograd vs projection", "x: manual vs projection"]),
        ("finite-diff", ["x", "x: autograd vs finite-diff", "x: manual vs finite-diff"]),
    ])
    def test_the_correct_function_passes_every_reference(self, reference: str,
                                                         rows: list[str]) -> None:
        code, doc = run_json("--target", LOGSUMEXP, "--reference", reference)
        assert code == 0 and names(doc) == rows
        assert doc["spec"]["reference"] == ("manual" if reference == "autograd" else reference)
        assert doc["spec"]["manual"] == "manual"

    def test_order_2_checks_the_double_backward(self) -> None:
        code, doc = run_json("--target", LOGSUMEXP, "--order", "2", "--dtype", "float64")
        assert code == 0
        assert names(doc)[-1] == "x: double backward vs finite-diff"
        assert doc["spec"]["order"] == 2 and doc["reference"]["order"] == 2

    def test_a_module_is_checked_with_its_parameters_in_the_dtype_asked(self) -> None:
        code, doc = run_json("--target", LINEAR, "--reference", "projection", "--dtype",
                             "float64")
        assert code == 0
        assert names(doc)[:3] == ["x", "weight", "bias"]
        assert [(t["name"], t["role"], t["dtype"]) for t in doc["spec"]["checked"]] == [
            ("x", "input", "float64"), ("weight", "parameter", "float64"),
            ("bias", "parameter", "float64")]

    def test_an_object_with_inputs_fn_and_manual(self, tmp_path: Path) -> None:
        path = write(tmp_path, OBJECT)
        code, doc = run_json("--target", f"{path}:Cube", "--reference", "projection")
        assert code == 0
        # only the input that requires grad is checked
        assert [t["name"] for t in doc["spec"]["checked"]] == ["a"]
        assert names(doc) == ["a", "a: autograd vs projection", "a: manual vs projection"]
        code, doc = run_json("--target", f"{path}:WrongCube")
        assert code == 1 and names(doc) == ["a"]

    def test_a_module_namespace_and_the_seed(self, tmp_path: Path) -> None:
        path = write(tmp_path, """
            import torch

            def inputs(generator, dtype, device):
                return torch.rand(2, 3, generator=generator, dtype=dtype, device=device)

            def fn(x):
                return torch.sin(x)
        """)
        code, first = run_json("--target", str(path), "--seed", "1")
        assert code == 0 and first["reference"]["name"] == "projection"  # no manual: projection
        assert any("no manual" in note for note in first["notes"])
        again = run_json("--target", str(path), "--seed", "1")[1]
        other = run_json("--target", str(path), "--seed", "2")[1]
        assert first["tensors"]["x"]["data"] == again["tensors"]["x"]["data"]
        assert first["tensors"]["x"]["data"] != other["tensors"]["x"]["data"]

    def test_the_loss_form_still_works(self) -> None:
        assert run_json("--target", LOSS_CORRECT)[0] == 0
        assert run_json("--target", LOSS_BUGGY)[0] == 1


class TestView:
    def test_projection_rows_have_their_own_table(self) -> None:
        code, out, err = cli("run", "--target", SWISH, "--reference", "projection")
        assert code == 1, err
        assert "against projection" in out and "FAIL" in out
        assert "fn(*inputs).backward(grad_output, inputs=checked tensors)" in out
        assert "the reference: projection" in out

    def test_forward_rows_and_a_module_table(self) -> None:
        code, out, err = cli("run", "--target", LOGSUMEXP, "--reference", "forward")
        assert code == 0, err
        assert "against forward mode" in out
        assert "│ forward " in out  # the verdict panel's row for the reference
        code, out, err = cli("run", "--target", LINEAR, "--reference", "projection")
        assert code == 0, err
        assert "per-parameter comparison" in out and "against projection" in out


class TestBuiltInLosses:
    @pytest.mark.parametrize("loss", ["mse-sum", "huber", "cross-entropy"])
    @pytest.mark.parametrize("reference", ["projection", "forward"])
    def test_a_built_in_loss_through_the_api(self, loss: str, reference: str) -> None:
        code, doc = run_json("--loss", loss, "--reference", reference)
        assert code == 0
        assert names(doc) == ["predicted", f"predicted: autograd vs {reference}",
                              f"predicted: manual vs {reference}"]
        assert doc["loss"]["name"] == loss and "real" in doc["tensors"]
        assert doc["reference"]["name"] == reference

    def test_the_same_tensors_as_the_plain_check(self) -> None:
        plain = run_json("--seed", "4")[1]
        projected = run_json("--seed", "4", "--reference", "projection")[1]
        for name in ("real", "predicted"):
            assert plain["tensors"][name]["data"] == projected["tensors"][name]["data"]
        assert plain["statistics"][0] == projected["statistics"][0]

    def test_order_2(self) -> None:
        code, doc = run_json("--order", "2", "--dtype", "float64")
        assert code == 0 and names(doc)[-1] == "predicted: double backward vs finite-diff"

    def test_a_loss_target_with_a_bug_fails_against_projection(self) -> None:
        code, doc = run_json("--target", LOSS_BUGGY, "--reference", "projection")
        assert code == 1
        assert "predicted: autograd vs projection" in names(doc)

    def test_the_rich_view(self) -> None:
        code, out, err = cli("run", "--reference", "projection", "--no-show-tensors")
        assert code == 0, err
        assert "against projection" in out and "PASS" in out


class TestBadForms:
    @pytest.mark.parametrize(("body", "name", "message"), [
        ("import torch\nclass F(torch.autograd.Function):\n    @staticmethod\n"
         "    def forward(ctx, x):\n        return x * 2\n", "F",
         "F is a torch.autograd.Function without inputs(generator, dtype, device)"),
        ("import torch\nclass M(torch.nn.Module):\n    def forward(self, x):\n"
         "        return x\n", "M", "M is an nn.Module without inputs(generator, dtype, device)"),
        ("class O:\n    def inputs(self, g, d, v):\n        return ()\n", "O",
         "O has inputs(generator, dtype, device) but lacks fn(*inputs)"),
        ("class O:\n    pass\n", "O",
         "O lacks loss(predicted, real) and manual_grad(predicted, real); a target is an "
         "object (or module) that has both (or inputs(generator, dtype, device) and "
         "fn(*inputs)"),
        ("class O:\n    manual = 3\n    def inputs(self, g, d, v):\n        return ()\n"
         "    def fn(self, x):\n        return x\n", "O", "O.manual is a int"),
    ])
    def test_a_target_that_cannot_be_used_is_exit_2_in_one_line(
        self, tmp_path: Path, body: str, name: str, message: str
    ) -> None:
        path = write(tmp_path, body)
        code, out, err = cli("run", "--target", f"{path}:{name}")
        assert code == 2 and out == ""
        assert message in err and len(err.strip().splitlines()) == 1, err

    @pytest.mark.parametrize(("returns", "message"), [
        ("()", "inputs(generator, dtype, device) returned an empty tuple"),
        ("3", "inputs(generator, dtype, device) returned a int"),
        ("(torch.ones(2), 'a')", "returned a str at position 1"),
        ("(torch.ones(2, dtype=torch.int64),)", "no input requires grad"),
    ])
    def test_inputs_of_the_wrong_kind(self, tmp_path: Path, returns: str, message: str) -> None:
        path = write(tmp_path, f"""
            import torch

            def inputs(generator, dtype, device):
                return {returns}

            def fn(*x):
                return x[0] * 2.0
        """)
        code, out, err = cli("run", "--target", str(path))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err

    def test_manual_returning_the_wrong_number_is_exit_2(self, tmp_path: Path) -> None:
        path = write(tmp_path, OBJECT + """
    class TwoGrads(Cube):
        def manual(self, a, b, grad_output):
            return a, b
""")
        code, _, err = cli("run", "--target", f"{path}:TwoGrads")
        assert code == 2 and "manual returned 2 gradient(s) for 1 checked tensor(s)" in err

    def test_forward_without_jvp_is_one_sentence(self, tmp_path: Path) -> None:
        path = write(tmp_path, """
            import torch

            class Double(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    return x * 2

                @staticmethod
                def backward(ctx, g):
                    return g * 2

                @staticmethod
                def inputs(generator, dtype, device):
                    return (torch.randn(3, generator=generator, dtype=dtype, device=device),)
        """)
        code, _, err = cli("run", "--target", f"{path}:Double", "--reference", "forward")
        assert code == 2 and "define jvp on the autograd.Function" in err
        assert len(err.strip().splitlines()) == 1

    @pytest.mark.parametrize("args", [
        ["--model", "linear", "--repeat", "3", "--reference", "projection"],
        ["--repeat", "3", "--reference", "projection"],
        ["--repeat", "3", "--order", "2"],
        ["--order", "3"],
        ["--reference", "sideways"],
    ])
    def test_options_that_do_not_go_together(self, args: list[str]) -> None:
        code, out, err = cli("run", *args)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err

    def test_the_spec(self) -> None:
        assert build_spec({"reference": "Autograd"}).reference == "manual"
        assert build_spec({"order": "2"}).order == 2
        with pytest.raises(BadInput, match="order"):
            build_spec({"order": 0})


class TestUserCodeRaising:
    @pytest.mark.parametrize(("where", "what"), [
        ("inputs", "inputs(generator, dtype, device) raised RuntimeError: boom in inputs"),
        ("fn", "forward() raised RuntimeError: boom in fn"),
        ("backward", "backward() raised RuntimeError: boom in backward"),
    ])
    def test_is_a_failed_check_with_the_message(self, tmp_path: Path, where: str,
                                                what: str) -> None:
        path = write(tmp_path, f"""
            import torch

            class Broken(torch.autograd.Function):
                @staticmethod
                def forward(ctx, x):
                    if {where == "fn"!r}:
                        raise RuntimeError("boom in fn")
                    return x * 2

                @staticmethod
                def backward(ctx, g):
                    if {where == "backward"!r}:
                        raise RuntimeError("boom in backward")
                    return g * 2

                @staticmethod
                def inputs(generator, dtype, device):
                    if {where == "inputs"!r}:
                        raise RuntimeError("boom in inputs")
                    return (torch.randn(3, generator=generator, dtype=dtype, device=device),)

            def fn(x):
                return Broken.apply(x)
        """)
        code, doc = run_json("--target", f"{path}:Broken", "--reference", "projection")
        assert code == 1 and doc["verdict"]["passed"] is False
        assert what in doc["verdict"]["error"] and "mine.py:" in doc["verdict"]["error"]
        code, out, err = cli("run", "--target", f"{path}:Broken")
        assert code == 1 and "FAIL" in out, err


class TestSweepAndConfig:
    def test_a_local_sweep_against_projection(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        code, stdout, stderr = cli("sweep", "--local", "--seeds", "0-1", "--losses",
                                   "mse-sum,huber", "--reference", "projection", "--out",
                                   str(out))
        assert code == 0, stderr
        records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
        assert len(records) == 4
        for doc in records:
            assert doc["spec"]["reference"] == "projection"
            assert doc["reference"]["name"] == "projection"
            assert doc["statistics"][-1]["name"] == "predicted: manual vs projection"

    def test_a_sweep_of_a_target_with_inputs(self, tmp_path: Path) -> None:
        out = tmp_path / "s"
        code, _, stderr = cli("sweep", "--local", "--seeds", "0-1", "--target", SWISH,
                              "--reference", "projection", "--out", str(out))
        assert code == 1, stderr
        records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
        assert len(records) == 2 and not any(doc["verdict"]["passed"] for doc in records)

    def test_config_keys(self, tmp_path: Path) -> None:
        config = tmp_path / "c.toml"
        config.write_text('[check]\nreference = "forward"\norder = 2\ndtype = "float64"\n')
        code, doc = run_json("--config", str(config), "--target", LOGSUMEXP)
        assert code == 0 and doc["spec"]["order"] == 2
        assert doc["reference"]["name"] == "forward"


# --- the real cluster --------------------------------------------------------------------------

SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]
CLI = [sys.executable, "-m", "autograd_check"]


def clean_env() -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))
    }
    env.update(COLUMNS="120", NO_COLOR="1", AUTOGRAD_CHECK=" ".join(CLI))
    return env


def process(*args: str, wrap: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*wrap, *CLI, *args], capture_output=True, text=True, timeout=300,
                          env=clean_env())


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestOnTheCluster:
    def test_submit_wait_a_buggy_function_against_projection(self, tmp_path: Path) -> None:
        done = process("submit", "--wait", "--json", "--target", SWISH, "--reference",
                       "projection", "--log-dir", str(tmp_path / "logs"), *SMALL)
        assert done.returncode == 1, done.stderr
        doc = json.loads(done.stdout)
        assert doc["environment"]["slurm"]["job_id"]
        assert names(doc) == ["x: autograd vs projection"]
        local = json.loads(process("run", "--json", "--target", SWISH, "--reference",
                                   "projection").stdout)
        assert doc["statistics"] == local["statistics"] and doc["spec"] == local["spec"]

    def test_submit_wait_a_module_and_a_built_in_loss(self, tmp_path: Path) -> None:
        done = process("submit", "--wait", "--json", "--target", LINEAR, "--reference",
                       "projection", "--order", "2", "--dtype", "float64",
                       "--log-dir", str(tmp_path / "logs"), *SMALL)
        assert done.returncode == 0, done.stderr
        assert names(json.loads(done.stdout))[:3] == ["x", "weight", "bias"]
        done = process("submit", "--wait", "--json", "--reference", "projection",
                       "--log-dir", str(tmp_path / "logs2"), *SMALL)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["reference"]["name"] == "projection"

    def test_submit_inside_an_allocation(self, tmp_path: Path) -> None:
        done = process("submit", "--json", "--target", LOGSUMEXP, "--reference", "projection",
                       "--log-dir", str(tmp_path / "logs"),
                       wrap=("salloc", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
                             "--mem=500M", "--time=5", "--job-name=agc-test-alloc"))
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["environment"]["slurm"]["step_id"] is not None
        assert doc["reference"]["name"] == "projection"


class TestWhatDoesNotApply:
    """A target that gives its own inputs has no use for --model or --shape: refused at the
    edge (exit 2), not silently ignored and recorded as if used."""

    @pytest.mark.parametrize(("flags", "named"), [
        (["--model", "linear"], "so model would be ignored: it applies only"),
        (["--shape", "7x9"], "so shape would be ignored: it applies only"),
        (["--shape", "7x9", "--model", "mlp"], "so model and shape would be ignored: they apply"),
    ])
    def test_model_and_shape_are_refused(self, flags: list[str], named: str) -> None:
        code, out, err = cli("run", "--target", LOGSUMEXP, *flags)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and named in err, err

    def test_across_ranks_too(self) -> None:
        code, _, err = cli("run", "--target", f"{EXAMPLES / 'ranks_correct.py'}:TwoLayer",
                           "--ranks", "2", "--shape", "8x4")
        assert code == 2 and "so shape would be ignored" in err, err
