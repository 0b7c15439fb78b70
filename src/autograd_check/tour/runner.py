"""The tour's runner: each step's code run as written, its output captured, its claim checked.

Each step runs in a fresh namespace holding `torch`, right after `torch.manual_seed(seed)`. What it
prints, the warnings torch raises and the exception it ends with (for the steps whose lesson is an
error) are captured as the step's output; then the step's claim is checked on the objects the code
left behind.

Pure torch and plain data: nothing here prints, exits or reads flags. A claim that does not hold on
this torch build is a finding (the step is marked failed, the tour exits 1), never a crash.
"""

from __future__ import annotations

import functools
import io
import traceback
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autograd_check.base.document import envelope
from autograd_check.base.lazy_torch import import_torch
from autograd_check.tour.steps import Check, Evidence, Step, select_steps


@dataclass
class StepResult:
    name: str
    title: str
    code: str
    output: str
    claim: str
    passed: bool
    checks: list[Check] = field(default_factory=list)


@dataclass
class TourResult:
    seed: int
    torch_version: str
    steps: list[StepResult]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.steps)

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    @property
    def preamble(self) -> str:
        return f"import torch\ntorch.manual_seed({self.seed})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document: versioned, plain data."""
        return envelope("tour", {
            "torch": self.torch_version,
            "seed": self.seed,
            "preamble": self.preamble,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "steps": [asdict(s) for s in self.steps],
        })


def run_step(step: Step, seed: int) -> StepResult:
    """Run one step's code after torch.manual_seed(seed), then check its claim.

    The global RNG is restored afterwards, and every warning raised by the code goes into the
    step's output (in the order it happened), never to stderr.
    """
    torch = import_torch()
    out = io.StringIO()
    warned: list[str] = []

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = f"{category.__name__}: {message}"
        warned.append(text)
        out.write(text + "\n")

    namespace: dict[str, Any] = {
        "__name__": "__tour__",
        "torch": torch,
        "print": functools.partial(print, file=out),
    }
    raised: Exception | None = None
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        torch.manual_seed(seed)
        try:
            # Grad mode on whatever the caller's mode, so the lessons are about the code shown.
            with torch.enable_grad():
                exec(compile(step.code, f"<tour step {step.name}>", "exec"), namespace)
        except Exception as exc:  # the lesson of some steps, a finding for the others
            raised = exc
            out.write("".join(traceback.format_exception_only(type(exc), exc)))

        evidence = Evidence(namespace, raised, warned)
        if step.raises is None:
            evidence.check("the code runs without raising", raised is None)
        else:
            evidence.check(f"the last line raises {step.raises.__name__}",
                           isinstance(raised, step.raises))
        # Looking at the tensors to check the claim (e.g. a non-leaf's .grad) may warn again;
        # those warnings are ours, not the lesson.
        warnings.simplefilter("ignore")
        try:
            step.verify(evidence)
        except Exception as exc:  # a claim that cannot even be checked is a failed claim
            evidence.check(f"the claim could be checked ({type(exc).__name__}: {exc})", False)

    return StepResult(
        name=step.name,
        title=step.title,
        code=step.code,
        output=out.getvalue().rstrip("\n"),
        claim=step.claim,
        passed=all(c.passed for c in evidence.checks),
        checks=evidence.checks,
    )


def run_tour(
    names: Sequence[str] | None = None,
    seed: int = 0,
    steps: Sequence[Step] | None = None,
) -> TourResult:
    """Run the chosen steps (all by default, or from `steps`) in order."""
    chosen = select_steps(names, steps)
    torch = import_torch()
    results: list[StepResult] = []
    for step in chosen:
        results.append(run_step(step, seed))
    return TourResult(seed=seed, torch_version=str(torch.__version__), steps=results)
