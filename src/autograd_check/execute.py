"""execute(spec) -> CheckResult: the one entry point that run, submit (sbatch and salloc) and
sweeps all call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd_check.base.budget import available_host_bytes, ensure_fits
from autograd_check.base.device import resolve_device
from autograd_check.base.environment import collect_environment
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.process import TargetExited, exits_become_errors
from autograd_check.base.result import CheckResult, TensorView
from autograd_check.base.spec import CheckSpec
from autograd_check.checks.determinism import deterministic_mode
from autograd_check.checks.draw import draw
from autograd_check.checks.model import run_model_check
from autograd_check.checks.plain import run_plain
from autograd_check.checks.target import (
    run_inputs_target,
    run_loss_through_api,
    through_api,
)
from autograd_check.distributed.launch import execute_ranks
from autograd_check.kernel.views import tensor_view
from autograd_check.losses.base import Loss
from autograd_check.losses.inputs import InputsTarget, load_any_target
from autograd_check.losses.resolve import resolve_loss
from autograd_check.losses.user import TargetRaised

if TYPE_CHECKING:
    import torch

    from autograd_check.references.finite_diff import Progress


def check_memory(spec: CheckSpec) -> None:
    """Refuse a shape that cannot fit on this host, before torch is even imported."""
    ensure_fits(spec, available_host_bytes(), "this host")


def execute(
    spec: CheckSpec, progress: Progress | None = None, *, ranks_timeout: float | None = None
) -> CheckResult:
    """Run one check where this process is (a laptop, a batch job, a job step).

    `progress(done, total)` is called as finite differences advance (--reference finite-diff);
    the CLI passes a progress bar's update there, the engine itself never prints. With --ranks
    N, the N ranks are started here (each bounded by ranks_timeout) or, in a Slurm job or step of
    N tasks, this process is one of them (distributed/launch.py).
    """
    if spec.ranks is not None:
        return execute_ranks(spec, ranks_timeout)

    check_memory(spec)
    torch = import_torch()
    # --deterministic: set before CUDA is first used here (cuBLAS reads its workspace setting
    # then), and still in force when the environment records it.
    # Grad mode on (and inference mode off) for the check, whatever the caller's: a test that
    # calls check() under torch.no_grad() still gets autograd's gradient; both restored after.
    with (
        deterministic_mode(spec.deterministic) as notes,
        torch.inference_mode(False),
        torch.enable_grad(),
    ):
        device = resolve_device(spec.device)
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            ensure_fits(spec, free, str(device))
        result = run_check(spec, device, progress)
        result.environment = collect_environment(device)
    result.notes.extend(notes)
    return result


def run_check(
    spec: CheckSpec, device: torch.device, progress: Progress | None = None
) -> CheckResult:
    """The check for this spec: plain (predicted drawn) or through --model; a --target is
    imported first, and its own errors make a failed result rather than a crash."""
    # os._exit() in the user's code would end the process with no verdict (exit 0 for a check
    # that never ran): while the check runs, it raises a SystemExit, which fails the check as
    # sys.exit() does (process.exits_become_errors)
    with exits_become_errors():
        target = load_any_target(spec.target) if spec.target is not None else None
        if isinstance(target, InputsTarget):  # a target with its own inputs: the API's check
            return run_inputs_target(spec, device, target)
        loss_def = target if target is not None else resolve_loss(spec)
        try:
            if through_api(spec):  # --reference projection|forward, --order 2
                return run_loss_through_api(spec, device, loss_def)
            if spec.model is not None:
                return run_model_check(spec, device, loss_def, progress)
            return run_plain(spec, device, loss_def, progress)
        except TargetRaised as e:
            return user_code_failed(spec, device, loss_def, e)
        except TargetExited as e:  # called where no wrapper of the user's code caught it
            return user_code_failed(spec, device, loss_def,
                                    TargetRaised(loss_def.name, e, None))


def user_code_failed(
    spec: CheckSpec, device: torch.device, loss_def: Loss, error: TargetRaised
) -> CheckResult:
    """A failed check whose result carries the user's own error (type, message, line)."""
    tensors: dict[str, TensorView] = {}
    if spec.model is None:  # with a model, predicted is the model's output: never finished
        real, predicted = draw(spec, device, loss_def)
        tensors["real"] = tensor_view("real", real)
        tensors["predicted"] = tensor_view("predicted", predicted)
    return CheckResult.failed(
        spec.to_dict(), str(error), loss_name=loss_def.name, loss_formula=loss_def.formula,
        gradient_formula=loss_def.gradient_formula, exact=spec.exact, tensors=tensors)
