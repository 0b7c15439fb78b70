"""Facts for `autograd-check env`: Slurm's tools, partitions, accounting, the allocation, the log
folder, and what `submit` would do here."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autograd_check.slurm.allocation import Allocation, current_allocation, runs_as_step
from autograd_check.slurm.commands import blank_to_none, run_command
from autograd_check.slurm.log_dir import LOG_DIR_ENV, resolve_log_dir
from autograd_check.slurm.watch import accounting_status

SLURM_TOOLS = ("sbatch", "srun", "salloc", "squeue", "scontrol", "sacct", "sinfo", "scancel")


def partitions() -> list[dict[str, Any]]:
    done = run_command(["sinfo", "-h", "-o", "%P|%a|%l|%D|%t|%G|%N|%c|%m"])
    rows: list[dict[str, Any]] = []
    if done is None:
        return rows
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 9:
            continue
        name = parts[0]
        rows.append(
            {
                "name": name.rstrip("*"),
                "default": name.endswith("*"),
                "available": parts[1],
                "time_limit": parts[2],
                "nodes": int(parts[3]) if parts[3].isdigit() else parts[3],
                "state": parts[4],
                "gres": blank_to_none(parts[5]),
                "node_list": parts[6],
                "cpus_per_node": parts[7],
                "memory_mb_per_node": parts[8],
            }
        )
    return rows


def submit_plan(alloc: Allocation | None, tools: Mapping[str, str | None], folder: Path) -> str:
    """What `submit` would do here, in one sentence."""
    if not tools.get("sbatch") or not tools.get("srun"):
        return "nothing: Slurm is not available here (exit 3); use `autograd-check run`"
    if alloc is not None and runs_as_step(alloc):
        return (
            f"run the check as a job step (srun) of allocation {alloc.job_id} on "
            f"{','.join(alloc.nodes) or 'its node'}; --new-job queues a separate batch job"
        )
    if alloc is not None:
        return (
            f"queue a new batch job (sbatch through submitit, SLURM_* of job {alloc.job_id} "
            f"step {alloc.step_id} hidden), logs in {folder}"
        )
    return f"queue a batch job (sbatch through submitit), logs in {folder}"


def slurm_facts() -> dict[str, Any]:
    tools = {tool: shutil.which(tool) for tool in SLURM_TOOLS}
    alloc = current_allocation()
    folder = resolve_log_dir(None)
    accounting_ok, accounting_detail = (
        accounting_status() if tools["sacct"] else (False, "sacct not found")
    )
    return {
        "tools": tools,
        "partitions": partitions() if tools["sinfo"] else [],
        "accounting": {"works": accounting_ok, "detail": accounting_detail},
        "allocation": None
        if alloc is None
        else {
            "job_id": alloc.job_id,
            "step_id": alloc.step_id,
            "nodes": list(alloc.nodes),
            "host": alloc.host,
            "on_allocated_node": alloc.on_node,
        },
        "log_dir": {
            "path": str(folder),
            "exists": folder.is_dir(),
            "from": "$" + LOG_DIR_ENV if os.environ.get(LOG_DIR_ENV) else "default",
        },
        "submit_would": submit_plan(alloc, tools, folder),
    }
