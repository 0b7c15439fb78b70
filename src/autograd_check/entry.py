"""execute(spec) -> CheckResult: the one entry point that run, submit (sbatch and salloc) and
sweeps all call."""

from __future__ import annotations

from autograd_check.memory import available_host_bytes, ensure_fits
from autograd_check.result import CheckResult
from autograd_check.spec import CheckSpec


def check_memory(spec: CheckSpec) -> None:
    """Refuse a shape that cannot fit on this host, before torch is even imported."""
    ensure_fits(spec, available_host_bytes(), "this host")


def execute(spec: CheckSpec) -> CheckResult:
    """Run one check where this process is (a laptop, a batch job, a job step)."""
    from autograd_check._torch import import_torch
    from autograd_check.device import resolve_device
    from autograd_check.engine import run_check
    from autograd_check.environment import collect_environment

    check_memory(spec)
    torch = import_torch()
    device = resolve_device(spec.device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        ensure_fits(spec, free, str(device))
    result = run_check(spec, device)
    result.environment = collect_environment(device)
    return result
