"""execute(spec) -> CheckResult: the one entry point that run, submit (sbatch and salloc) and
sweeps all call."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd_check.check.budget import available_host_bytes, ensure_fits
from autograd_check.check.result import CheckResult
from autograd_check.check.spec import CheckSpec

if TYPE_CHECKING:
    from autograd_check.check.finite_diff import Progress


def check_memory(spec: CheckSpec) -> None:
    """Refuse a shape that cannot fit on this host, before torch is even imported."""
    ensure_fits(spec, available_host_bytes(), "this host")


def execute(spec: CheckSpec, progress: Progress | None = None) -> CheckResult:
    """Run one check where this process is (a laptop, a batch job, a job step).

    `progress(done, total)` is called as finite differences advance (--reference finite-diff);
    the CLI passes a progress bar's update there, the engine itself never prints.
    """
    from autograd_check._torch import import_torch
    from autograd_check.check.determinism import deterministic_mode
    from autograd_check.check.device import resolve_device
    from autograd_check.check.plain import run_check
    from autograd_check.check.host import collect_environment

    check_memory(spec)
    torch = import_torch()
    # --deterministic: set before CUDA is first used here (cuBLAS reads its workspace setting
    # then), and still in force when the environment records it.
    with deterministic_mode(spec.deterministic) as notes:
        device = resolve_device(spec.device)
        if device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(device)
            ensure_fits(spec, free, str(device))
        result = run_check(spec, device, progress)
        result.environment = collect_environment(device)
    result.notes.extend(notes)
    return result
