"""--target: a user's loss and hand-derived gradient, checked like a built-in one; what goes wrong
is reported in the user's terms (exit 2 for a target that cannot be used, exit 1 when its own
code raises), never as a traceback from this package."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autograd_check.base.errors import BadInput
from autograd_check.base.spec import build_spec
from autograd_check.cli import app
from autograd_check.execute import execute
from autograd_check.losses.user import load_target

ROOT = Path(__file__).resolve().parents[1]
CORRECT = str(ROOT / "examples" / "correct_target.py") + ":log_cosh"
BUGGY = str(ROOT / "examples" / "buggy_target.py") + ":smooth_l1"

runner = CliRunner()


def write(tmp_path: Path, body: str, name: str = "user_loss.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stdout, result.stderr


GOOD = """
    import torch

    def loss(predicted, real):
        return ((predicted - real) ** 3).abs().sum()

    def manual_grad(predicted, real):
        d = predicted - real
        return 3 * d * d.abs()
"""


class TestTheExamples:
    def test_the_correct_example_passes(self) -> None:
        code, out, err = run("--target", CORRECT)
        assert code == 0, err
        assert "log-cosh" in out and "tanh(predicted − real)" in out and "PASS" in out
        assert err == ""

    def test_the_buggy_example_is_caught_exactly_where_it_is_wrong(self) -> None:
        code, out, err = run("--target", BUGGY, "--json")
        assert code == 1 and err == ""
        doc = json.loads(out)
        real = torch.tensor(doc["tensors"]["real"]["data"])
        predicted = torch.tensor(doc["tensors"]["predicted"]["data"])
        wrong = int(((predicted - real) < -0.25).sum())  # the planted bug's elements
        stats = doc["statistics"][0]
        assert wrong > 0 and stats["mismatched"] == wrong
        assert stats["max_abs_diff"] == 2.0
        assert doc["verdict"]["passed"] is False and "error" not in doc["verdict"]

    def test_as_package_module_from_the_working_directory(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(ROOT)
        code, out, err = run("--target", "examples.correct_target:log_cosh", "--json")
        assert code == 0, err
        assert json.loads(out)["spec"]["target"] == "examples.correct_target:log_cosh"

    def test_every_option_applies(self) -> None:
        args = ["--target", CORRECT, "--dtype", "float64", "--shape", "2x3x4", "--seed", "5"]
        code, out, err = run(*args, "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["spec"]["shape"] == [2, 3, 4] and doc["spec"]["dtype"] == "float64"
        assert doc["tensors"]["predicted"]["dtype"] == "float64"
        torch.manual_seed(5)
        assert torch.equal(
            torch.tensor(doc["tensors"]["real"]["data"], dtype=torch.float64),
            torch.rand(2, 3, 4, dtype=torch.float64),
        )

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
    def test_half_precision(self, dtype: str) -> None:
        code, _, err = run("--target", CORRECT, "--dtype", dtype)
        assert code == 0, err

    def test_through_a_model(self) -> None:
        code, out, err = run("--target", CORRECT, "--model", "mlp", "--hidden", "5")
        assert code == 0, err
        assert "per-parameter comparison" in out and "fc1.weight" in out

    def test_the_buggy_one_through_a_model_fails(self) -> None:
        code, _, _ = run("--target", BUGGY, "--model", "linear")
        assert code == 1


class TestTheSpec:
    def test_a_relative_file_is_stored_absolute_and_the_spec_pickles(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write(tmp_path, GOOD)
        monkeypatch.chdir(tmp_path)
        spec = build_spec({"target": "user_loss.py"})
        assert spec.target == str(tmp_path / "user_loss.py")
        again = pickle.loads(pickle.dumps(spec))
        assert again == spec == build_spec(spec.to_dict())
        assert execute(again).passed

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("missing.py:thing", "file 'missing.py' does not exist"),
            ("a b:thing", "'a b' is neither a .py file nor a module"),
            ("x.py:1thing", "is not FILE.py:NAME or package.module:NAME"),
            ("dir/file.txt:thing", "'dir/file.txt' is not a .py file"),
            ("", "is not FILE.py:NAME"),
        ],
    )
    def test_bad_target_strings(self, value: str, message: str) -> None:
        with pytest.raises(BadInput, match=message):
            build_spec({"target": value})

    def test_target_replaces_the_loss(self) -> None:
        with pytest.raises(BadInput, match="give target or loss 'l1', not both"):
            build_spec({"target": CORRECT, "loss": "l1"})


class TestCannotBeUsed:
    """Exit 2, one line on stderr naming the target and the problem, nothing on stdout."""

    @pytest.mark.parametrize(
        ("body", "name", "message"),
        [
            ("x = (\n", "x", "user_loss.py:1: SyntaxError: '(' was never closed"),
            ("raise RuntimeError('no GPU here')\n", "x",
             "importing user_loss.py raised RuntimeError: no GPU here (at user_loss.py:1)"),
            ("import not_a_module_anywhere\n", "x",
             "raised ModuleNotFoundError: No module named 'not_a_module_anywhere'"),
            (GOOD, "nothing", "no attribute 'nothing' (there is: loss, manual_grad, torch)"),
            ("def loss(p, r):\n    return p.sum()\n", "", "lacks manual_grad(predicted, real)"),
            ("class T:\n    def __init__(self, scale):\n        pass\n", "T",
             "T() (a class, called with no arguments) raised TypeError"),
            ("import torch\nclass T:\n    loss = 1\n    manual_grad = 2\n", "T",
             "T lacks loss(predicted, real) and manual_grad(predicted, real)"),
        ],
    )
    def test_import_and_lookup(self, tmp_path: Path, body: str, name: str, message: str) -> None:
        path = write(tmp_path, body)
        target = f"{path}:{name}" if name else str(path)
        with pytest.raises(BadInput, match=None) as caught:
            load_target(build_spec({"target": target}).target or "")
        assert message in str(caught.value)
        code, out, err = run("--target", target)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and message in err and "Traceback" not in err

    def test_no_such_module(self) -> None:
        code, out, err = run("--target", "no_such_pkg.losses:thing")
        assert code == 2 and out == ""
        assert "target 'no_such_pkg.losses:thing': no module named 'no_such_pkg'" in err

    def test_a_file_that_is_not_python(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        (tmp_path / "grads.txt").write_text("def loss(p, r): ...\n")
        code, _, err = run("--target", "grads.txt:thing")
        assert code == 2 and "a file target must be a .py file" in err

    @pytest.mark.parametrize(
        ("loss", "grad", "message"),
        [
            ("return 1.0", "return predicted",
             "loss(predicted, real) returned float, not a tensor"),
            ("return (predicted - real) ** 2", "return predicted",
             "loss(predicted, real) returned shape (3, 8); a loss is a scalar"),
            ("return (predicted - real).detach().sum()", "return predicted",
             "is not connected to predicted by autograd (no grad_fn)"),
            ("return predicted.sum()", "return [1.0]",
             "manual_grad(predicted, real) returned list, not a tensor"),
            ("return predicted.sum()", "return predicted.sum(0)",
             "manual_grad(predicted, real) returned shape (8,), predicted has (3, 8)"),
            ("return predicted.sum()", "return torch.ones_like(predicted, dtype=torch.float64)",
             "returned dtype torch.float64, predicted has torch.float32"),
        ],
    )
    def test_what_the_functions_return(
        self, tmp_path: Path, loss: str, grad: str, message: str
    ) -> None:
        path = write(
            tmp_path,
            f"import torch\ndef loss(predicted, real):\n    {loss}\n"
            f"def manual_grad(predicted, real):\n    {grad}\n",
        )
        code, out, err = run("--target", str(path))
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and message in err and "Traceback" not in err


class TestTheUsersCodeRaises:
    """Exit 1: a failed check whose result carries the user's error, type, text and line."""

    RAISES_IN_GRAD = """
        import torch

        def loss(predicted, real):
            return (predicted - real).pow(2).sum()

        def manual_grad(predicted, real):
            raise ValueError("not derived yet")
    """
    RAISES_IN_LOSS = """
        def loss(predicted, real):
            return predicted.matmul(real)

        def manual_grad(predicted, real):
            return predicted
    """
    RAISES_IN_BACKWARD = """
        import torch

        class Broken(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.sum()

            @staticmethod
            def backward(ctx, grad):
                raise ArithmeticError("backward is not written")

        def loss(predicted, real):
            return Broken.apply(predicted - real)

        def manual_grad(predicted, real):
            return torch.ones_like(predicted)
    """

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (RAISES_IN_GRAD,
             "manual_grad(predicted, real) raised ValueError: not derived yet (at user_loss.py:8)"),
            (RAISES_IN_LOSS, "loss(predicted, real) raised RuntimeError: "),
            (RAISES_IN_BACKWARD, "loss.backward() raised ArithmeticError: backward is not written"),
        ],
    )
    def test_a_failed_check_with_the_users_message(
        self, tmp_path: Path, body: str, expected: str
    ) -> None:
        path = write(tmp_path, body)
        code, out, err = run("--target", str(path), "--json")
        assert code == 1 and err == ""
        doc = json.loads(out)
        assert doc["verdict"]["passed"] is False and doc["verdict"]["exit_code"] == 1
        assert doc["verdict"]["error"].startswith(expected)
        assert doc["statistics"] == []
        code, out, err = run("--target", str(path))
        assert code == 1 and err == ""
        assert "FAIL" in out and expected.split(" raised ")[1][:20] in out
        assert "Traceback" not in out

    def test_through_a_model_too(self, tmp_path: Path) -> None:
        path = write(tmp_path, self.RAISES_IN_GRAD)
        code, out, _ = run("--target", str(path), "--model", "linear", "--json")
        assert code == 1
        assert "ValueError: not derived yet" in json.loads(out)["verdict"]["error"]


def test_a_class_is_instantiated_and_optional_texts_are_shown(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        import torch

        class Cubic:
            name = "abs-cubed"

            def loss(self, predicted, real):
                '''loss = Σ |predicted − real|³'''
                return ((predicted - real) ** 3).abs().sum()

            def manual_grad(self, predicted, real):
                '''∂loss/∂predicted = 3 (p − r) |p − r|'''
                d = predicted - real
                return 3 * d * d.abs()
        """,
    )
    code, out, err = run("--target", f"{path}:Cubic", "--no-show-tensors")
    assert code == 0, err
    assert "loss = Σ |predicted − real|³" in out and "(abs-cubed)" in out
    assert "3 (p − r) |p − r|" in out


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestOnSlurm:
    SMALL = ("--cpus", "1", "--mem", "500M")

    def submit(self, tmp_path: Path, *args: str) -> tuple[int, str, str]:
        log_dir = tmp_path / "slurm"
        result = runner.invoke(
            app, ["submit", "--wait", "--log-dir", str(log_dir), *self.SMALL, *args, "--json"]
        )
        return result.exit_code, result.stdout, result.stderr

    def test_the_buggy_example_fails_on_the_node(self, tmp_path: Path) -> None:
        code, out, err = self.submit(tmp_path, "--target", BUGGY, "--dtype", "float64")
        assert code == 1, err
        doc = json.loads(out)
        assert doc["spec"]["target"] == BUGGY and doc["spec"]["dtype"] == "float64"
        assert doc["statistics"][0]["mismatched"] > 0
        assert doc["environment"]["slurm"]["job_id"]

    def test_a_bad_target_is_refused_before_a_job_is_queued(self, tmp_path: Path) -> None:
        path = write(tmp_path, GOOD)
        code, out, err = self.submit(tmp_path, "--target", f"{path}:nothing")
        assert code == 2
        assert "no attribute 'nothing'" in err and "Slurm job" not in err
        assert json.loads(out)["error"]["exit_code"] == 2
