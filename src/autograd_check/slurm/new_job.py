"""A new job from inside an allocation (`submit --new-job`, `sweep`): would it ever start while
the allocation lives?"""

from __future__ import annotations

from autograd_check.slurm.commands import _mb, _run, parse_scontrol_record
from autograd_check.slurm.fit import slurm_config
from autograd_check.slurm.options import SlurmOptions
from autograd_check.slurm.where import Allocation, expand_nodelist


def _tres(text: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (text or "").split(",") if "=" in item)


def default_job_mem_mb(node_real_mb: int, cpus: int) -> int:
    """What a job without --mem gets: DefMemPerNode, DefMemPerCPU x cpus, else the whole node."""
    config = slurm_config()
    if "MEMORY" not in config.get("SelectTypeParameters", "MEMORY").upper():
        return 0  # memory is not a consumable resource here: it never blocks a job
    per_node = config.get("DefMemPerNode", "UNLIMITED")
    per_cpu = config.get("DefMemPerCPU", "UNLIMITED")
    if per_node.isdigit() and int(per_node) > 0:
        return int(per_node)
    if per_cpu.isdigit() and int(per_cpu) > 0:
        return int(per_cpu) * cpus
    return node_real_mb


def allocation_blocks_new_job(opts: SlurmOptions, alloc: Allocation) -> str | None:
    """Why a new job could not start while this allocation lives, or None if it could.

    An salloc without --mem holds all the memory of its node, and a new job that needs that node
    would wait in the queue until the allocation ends: that is a hang, so say it up front.
    """
    nodes_out = _run(["scontrol", "show", "node", "-o"])
    job_out = _run(["scontrol", "show", "job", "-o", alloc.job_id])
    if nodes_out is None or job_out is None:
        return None
    job = parse_scontrol_record(job_out.stdout.splitlines()[0] if job_out.stdout else "")
    ours = _tres(job.get("TRES") or job.get("AllocTRES"))
    our_mem = _mb(ours.get("mem")) or 0
    our_cpus = int(ours.get("cpu", "0") or 0)
    our_nodes = set(expand_nodelist(job.get("NodeList", ""))) if job.get("NodeList") else set()
    per_node_mem = our_mem // max(len(our_nodes), 1)
    per_node_cpus = our_cpus // max(len(our_nodes), 1)
    cpus = opts.cpus or 1
    blocked: str | None = None
    for line in nodes_out.stdout.splitlines():
        node = parse_scontrol_record(line)
        name = node.get("NodeName", "")
        if opts.partition and opts.partition not in node.get("Partitions", "").split(","):
            continue
        if any(s in node.get("State", "") for s in ("DOWN", "DRAIN", "FAIL")):
            continue
        real = int(node.get("RealMemory", "0") or 0)
        total_cpus = int(node.get("CPUTot", "0") or 0)
        need_mem = opts.mem_mb if opts.mem_mb is not None else default_job_mem_mb(real, cpus)
        # What stays out of reach on this node for as long as the allocation lives; other
        # jobs end in time, so what they hold is an ordinary wait in the queue.
        held_mem, held_cpus = (per_node_mem, per_node_cpus) if name in our_nodes else (0, 0)
        short_mem = real - held_mem < need_mem
        short_cpus = total_cpus - held_cpus < cpus
        if not (short_mem or short_cpus):
            return None  # the job can start on this node, now or once other jobs end
        if name in our_nodes and real >= need_mem and total_cpus >= cpus:
            held = []
            if short_mem:
                held.append(
                    f"memory ({held_mem} of {real} MB; the new job needs {need_mem} MB)"
                )
            if short_cpus:
                held.append(f"CPUs ({held_cpus} of {total_cpus}; the new job needs {cpus})")
            blocked = (
                f"a new job would wait until allocation {alloc.job_id} ends: it holds node "
                f"{name}'s {' and '.join(held)}. Leave out --new-job to run the check as a step "
                "of this allocation, or give salloc a --mem (and --cpus-per-task) that leaves "
                "room for the job"
            )
    # None here: no node could ever take the job; never_fits says why when it is submitted.
    return blocked
