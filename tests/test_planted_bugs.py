"""examples/planted_bugs.py: every planted bug gets the diagnosis it declares (kind, tensor,
factor, condition) with no confident claim of another kind, over a few seeds (new shapes and
values each); every correct implementation passes with no finding. The 100-seed figures are
benchmarks/bench_diagnose.py's."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SEEDS = range(3)


def _library() -> ModuleType:
    spec = importlib.util.spec_from_file_location("planted_bugs", ROOT / "examples" /
                                                  "planted_bugs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LIB = _library()
KINDS = ["scale", "sign", "transpose", "swapped", "zero", "subset", "axis", "slice-scale",
         "precision", "grad-output-mutated", "grad-output-ignored", "input-mutated", "unknown"]


def test_every_kind_has_a_planted_bug() -> None:
    assert len(LIB.BUGS) >= 12
    assert {b.kind for b in LIB.BUGS.values()} == set(KINDS)


@pytest.mark.parametrize("name", list(LIB.BUGS))
def test_each_bug_gets_its_diagnosis(name: str) -> None:
    bug = LIB.BUGS[name]
    for seed in SEEDS:
        verdict = LIB.judge(bug, seed)
        assert verdict.named and not verdict.wrong, (name, seed, verdict)


@pytest.mark.parametrize("name", list(LIB.CORRECT))
def test_correct_code_passes_with_no_finding(name: str) -> None:
    for seed in SEEDS:
        assert LIB.false_claims(LIB.CORRECT[name], seed) == [], (name, seed)


def test_a_missing_mean_is_named_as_the_batch_size() -> None:
    """The issue's example: 1/N named as 1/shape[0] of the tensor whose size it is."""
    planted = LIB.BUGS["mse_averaged_twice"].make(0)
    (finding,) = planted.result.diagnosis
    n = planted.result.spec["checked"][0]["shape"][0]
    assert finding["factor"] == pytest.approx(1 / n)
    assert f"is 1/{n} (1/shape[0] of predicted) times the reference" in finding["text"]
    assert f"likely cause (predicted): [scale] the gradient is 1/{n}" in str(planted.result)


def test_the_smooth_l1_condition_is_the_branch() -> None:
    """Wrong exactly where d = predicted − real < −β (β = 0.25): said with its count, and the
    elements located are those."""
    planted = LIB.BUGS["smooth_l1_branch"].make(1)
    (finding,) = planted.result.diagnosis
    predicted, real = LIB._pairs(1)
    wrong = (predicted - real).detach() < -LIB.BETA
    assert f"({int(wrong.sum())} of {wrong.numel()} elements)" in finding["text"]
    assert finding["elements"] == wrong.nonzero().tolist()[:5]
