"""The tour: each step's claim on this torch build, the runner's honesty, and the CLI contract."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from autograd_check.base.errors import BadInput
from autograd_check.cli import app
from autograd_check.render.tour import steps_table, tour_renderable
from autograd_check.tour import steps as tour
from autograd_check.tour.runner import run_step, run_tour
from autograd_check.tour.steps import Evidence, Step, select_steps

runner = CliRunner()
NAMES = [s.name for s in tour.STEPS]


def _step(name: str) -> Step:
    return next(s for s in tour.STEPS if s.name == name)


def _false_claim(e: Evidence) -> None:
    e.check("x is 3", e["x"] == 3)


FAILING = Step("broken", "A claim that does not hold", "x = 1 + 1\nprint(x)", "x is 3.",
               _false_claim)


def _text(renderable: Any) -> str:
    console = Console(record=True, width=100, no_color=True)
    console.print(renderable)
    return console.export_text()


# --- every step's claim holds here, with the evidence the lesson is about --------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_step_claim_holds(name: str) -> None:
    result = run_step(_step(name), seed=0)
    assert result.passed, [c for c in result.checks if not c.passed]
    assert len(result.checks) >= 3 and all(c.passed for c in result.checks)
    assert result.code == _step(name).code and result.output


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("leaf", "requires_grad=True)\nTrue True None None"),
        ("grad-fn", "grad_fn=<AddBackward0>)\n<AddBackward0 object at"),
        ("grad-fun", "AttributeError: 'Tensor' object has no attribute 'grad_fun'"),
        ("chain", "SumBackward0 <- ['PowBackward0']\nPowBackward0 <- ['SubBackward0']\n"
                  "SubBackward0 <- ['AccumulateGrad', None]\nAccumulateGrad <- []\nTrue"),
        ("detach", "False None\nTrue <MulBackward0 object at"),
        ("requires-grad", "RuntimeError: you can only change requires_grad flags of leaf"),
        ("no-grad", "False None\nFalse None True\nTrue <MulBackward0"),
        ("backward", "None None\ntensor("),
        ("non-leaf-grad", "UserWarning: The .grad attribute of a Tensor that is not a leaf"),
        ("retain-grad", "tensor([[4., 4., 4., 4.],\n        [4., 4., 4., 4.]])"),
        ("second-backward", "RuntimeError: Trying to backward through the graph a second time"),
        ("accumulate", "tensor(["),
    ],
)
def test_each_step_shows_what_its_code_produced(name: str, expected: str) -> None:
    assert expected in run_step(_step(name), seed=0).output


def test_non_leaf_warning_is_shown_before_the_none_it_explains() -> None:
    output = run_step(_step("non-leaf-grad"), seed=0).output
    lines = output.splitlines()
    assert lines[0].startswith("UserWarning:") and "retain_grad" in lines[0]
    assert lines[1] == "None"
    assert "tensor([[4., 4., 4., 4.]," in output  # x.grad = 2(x + 1)


def test_the_backward_step_ends_with_the_tutorials_bit_exact_comparison() -> None:
    assert run_step(_step("backward"), seed=3).output.endswith("tensor(True)")


def test_output_is_the_tutorial_code_run_after_manual_seed() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        x = torch.rand(3, 7, requires_grad=True)
    assert run_step(_step("leaf"), seed=7).output.startswith(str(x))
    assert run_step(_step("leaf"), seed=8).output != run_step(_step("leaf"), seed=7).output


def test_a_step_leaves_the_global_rng_and_grad_mode_alone() -> None:
    state = torch.get_rng_state()
    with torch.no_grad():
        result = run_step(_step("backward"), seed=5)  # the step turns grad mode on for itself
        assert not torch.is_grad_enabled()
    assert result.passed
    assert torch.equal(torch.get_rng_state(), state)


def test_warnings_stay_in_the_step_output() -> None:
    with warnings.catch_warnings(record=True) as leaked:
        warnings.simplefilter("always")
        result = run_tour(seed=0)
    assert leaked == []
    assert result.passed
    assert "UserWarning" in next(s for s in result.steps if s.name == "non-leaf-grad").output


# --- the runner reports what does not hold, never crashes on it ------------------------------


class TestFindings:
    def test_a_false_claim_fails_the_step_and_the_tour(self) -> None:
        result = run_tour(seed=0, steps=[_step("leaf"), FAILING])
        assert [s.passed for s in result.steps] == [True, False]
        assert not result.passed and result.exit_code == 1
        assert result.steps[1].output == "2"
        assert [(c.what, c.passed) for c in result.steps[1].checks] == [
            ("the code runs without raising", True), ("x is 3", False)]

    def test_an_unexpected_exception_is_a_failed_step_with_its_message(self) -> None:
        step = Step("boom", "t", "print('before')\nraise ValueError('boom')", "c", lambda e: None)
        result = run_step(step, seed=0)
        assert not result.passed
        assert result.output == "before\nValueError: boom"

    def test_a_lesson_error_that_does_not_happen_fails(self) -> None:
        step = Step("calm", "t", "x = 1", "c", lambda e: None, raises=RuntimeError)
        result = run_step(step, seed=0)
        assert not result.passed
        assert result.checks[0].what == "the last line raises RuntimeError"

    def test_a_claim_that_cannot_be_checked_fails(self) -> None:
        step = Step("gone", "t", "x = 1", "c", lambda e: e.check("y", e["y"]))
        result = run_step(step, seed=0)
        assert not result.passed
        assert "the claim could be checked (KeyError" in result.checks[-1].what

    def test_all_claims_hold_gives_exit_0(self) -> None:
        result = run_tour(["leaf", "chain"], seed=0)
        assert result.passed and result.exit_code == 0
        assert [s.name for s in result.steps] == ["leaf", "chain"]


def test_select_steps_keeps_the_order_asked_and_refuses_unknown_names() -> None:
    assert [s.name for s in select_steps(["chain", "Leaf"])] == ["chain", "leaf"]
    assert [s.name for s in select_steps(["grad_fun"])] == ["grad-fun"]  # the tutorial's spelling
    assert [s.name for s in select_steps(None)] == NAMES
    with pytest.raises(BadInput, match=r"unknown step 'nope'; valid steps: leaf, grad-fn, .*"):
        select_steps(["nope"])


def test_rendering_shows_code_output_and_verdicts() -> None:
    text = _text(tour_renderable(run_tour(seed=0, steps=[_step("chain"), FAILING])))
    assert "1/2 chain" in text and "2/2 broken" in text
    assert "fn = loss.grad_fn" in text and "SumBackward0 <- ['PowBackward0']" in text
    assert "PASS  loss.grad_fn is SumBackward0" in text
    assert "FAIL  x is 3." in text and "✗ x is 3" in text
    assert "1 of 2 claims hold" in text and "failed: broken" in text
    assert "grad-fun" in _text(steps_table(tour.STEPS))


# --- the command ---------------------------------------------------------------------------


class TestCli:
    def test_list(self) -> None:
        result = runner.invoke(app, ["tour", "--list"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        for name in NAMES:
            assert name in result.stdout
        assert "tensor(" not in result.stdout  # listing runs nothing

    def test_list_json(self) -> None:
        result = runner.invoke(app, ["tour", "--list", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["schema_version"] == 1 and doc["kind"] == "tour-steps"
        assert [s["name"] for s in doc["steps"]] == NAMES
        assert set(doc["steps"][0]) == {"name", "title", "claim"}

    def test_whole_tour_passes(self) -> None:
        result = runner.invoke(app, ["tour"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""  # the non-leaf warning is in the step's output, not here
        assert f"{len(NAMES)} of {len(NAMES)} claims hold" in result.stdout
        assert "UserWarning: The .grad attribute of a Tensor that is not a leaf" in result.stdout
        assert "FAIL" not in result.stdout

    def test_one_step(self) -> None:
        result = runner.invoke(app, ["tour", "--step", "second-backward"])
        assert result.exit_code == 0, result.output
        assert "1/1 second-backward" in result.stdout
        assert "RuntimeError: Trying to backward through the graph a second time" in result.stdout
        assert "1 of 1 claims hold" in result.stdout and "2/" not in result.stdout
        assert result.stderr == ""

    def test_json_contract(self) -> None:
        result = runner.invoke(app, ["tour", "--json", "--seed", "3"])
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        doc = json.loads(result.stdout)
        assert doc["schema_version"] == 1 and doc["kind"] == "tour"
        assert doc["seed"] == 3 and doc["passed"] is True and doc["exit_code"] == 0
        assert doc["torch"] == str(torch.__version__)
        assert [s["name"] for s in doc["steps"]] == NAMES
        for step in doc["steps"]:
            assert {"name", "title", "code", "output", "claim", "passed", "checks"} <= set(step)
            for key in ("name", "title", "code", "output", "claim"):
                assert isinstance(step[key], str)
            assert step["passed"] is True
            assert all(set(c) == {"what", "passed"} for c in step["checks"])

    def test_seed_decides_the_tensors(self) -> None:
        def leaf_output(seed: str) -> str:
            result = runner.invoke(app, ["tour", "--step", "leaf", "--json", "--seed", seed])
            assert result.exit_code == 0, result.output
            return str(json.loads(result.stdout)["steps"][0]["output"])

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(11)
            x = torch.rand(3, 7, requires_grad=True)
        assert leaf_output("11").startswith(str(x))
        assert leaf_output("12") != leaf_output("11")

    def test_unknown_step_is_bad_input_listing_the_names(self) -> None:
        result = runner.invoke(app, ["tour", "--step", "leaf", "--step", "grad_fn_"])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("autograd-check: error: unknown step 'grad_fn_'")
        assert ", ".join(NAMES) in result.stderr

    def test_unknown_step_with_json_gives_an_error_envelope(self) -> None:
        result = runner.invoke(app, ["tour", "--step", "nope", "--json"])
        assert result.exit_code == 2
        doc = json.loads(result.stdout)
        assert doc["error"]["exit_code"] == 2 and "valid steps" in doc["error"]["message"]

    @pytest.mark.parametrize("seed", ["-1", "x", "1.5"])
    def test_bad_seed_is_bad_input(self, seed: str) -> None:
        result = runner.invoke(app, ["tour", "--seed", seed])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "seed" in result.stderr and "Traceback" not in result.stderr

    def test_a_failing_claim_exits_1(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tour, "STEPS", [_step("leaf"), FAILING])
        result = runner.invoke(app, ["tour"])
        assert result.exit_code == 1, result.output
        assert "FAIL  x is 3." in result.stdout and "1 of 2 claims hold" in result.stdout
        assert result.stderr == ""

    def test_a_failing_claim_exits_1_in_json(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(tour, "STEPS", [FAILING])
        result = runner.invoke(app, ["tour", "--json"])
        assert result.exit_code == 1, result.output
        doc = json.loads(result.stdout)
        assert doc["passed"] is False and doc["exit_code"] == 1
        assert doc["steps"][0]["passed"] is False
