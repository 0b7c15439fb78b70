"""The Slurm allocation this shell is in (salloc, a batch script or a job step), if any, as
Slurm's variables describe it (autograd_check.base.slurm_env)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass

from autograd_check.base.slurm_env import SlurmEnv
from autograd_check.slurm.submitit_adapter import parse_node_list


@dataclass(frozen=True)
class Allocation:
    """The Slurm job this process runs in (salloc shell, batch script or job step), if any."""

    job_id: str
    step_id: str | None
    nodes: tuple[str, ...]
    host: str

    @property
    def in_step(self) -> bool:
        return self.step_id is not None

    @property
    def on_node(self) -> bool:
        short = self.host.split(".")[0]
        return not self.nodes or any(n.split(".")[0] == short for n in self.nodes)


def current_allocation(environ: Mapping[str, str] | None = None) -> Allocation | None:
    slurm = SlurmEnv(environ)
    job_id = slurm.job_id
    if not job_id:
        return None
    nodelist = slurm.nodelist
    return Allocation(
        job_id=job_id,
        step_id=slurm.step_id,
        nodes=tuple(parse_node_list(nodelist)) if nodelist else (),
        host=slurm.node or socket.gethostname(),
    )


def runs_as_step(alloc: Allocation | None, new_job: bool = False) -> bool:
    """Whether `submit` runs the check as a job step of `alloc` (an allocation's shell, not
    already a step of it, and no --new-job), else as a batch job."""
    return alloc is not None and not alloc.in_step and not new_job


def run_outside_node_warning(environ: Mapping[str, str] | None = None) -> str | None:
    """For `run`: one line when this shell holds an allocation but is not on its node(s)."""
    alloc = current_allocation(environ)
    if alloc is None or alloc.in_step or alloc.on_node:
        return None
    return (
        f"this shell is inside Slurm allocation {alloc.job_id} but runs on {alloc.host}, not on "
        f"its node {','.join(alloc.nodes)}; the check runs here. To run it on the allocated node "
        "use `srun autograd-check run ...` or `autograd-check submit ...`"
    )
