"""Can this job run here? Asked before a job is queued and while it waits, so that a job that
would pend forever is refused (or cancelled) with the reason instead of waited for:

- would Slurm ever start it? sbatch queues a request above every node of its partition (or above
  its time limit), and the job then pends forever (never_fits before queueing, never_starts
  while waiting);
- from inside an allocation (`submit --new-job`, `sweep`): would a new job start while the
  allocation lives? (allocation_blocks_new_job)"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.slurm.allocation import Allocation
from autograd_check.slurm.commands import (
    CALL_TIMEOUT_S,
    JobInfo,
    array_task_job_id,
    blank_to_none,
    call_budget,
    have,
    parse_scontrol_record,
    run_command,
    slurm_mb,
)
from autograd_check.slurm.options import SlurmOptions, format_minutes, mem_to_mb, parse_time
from autograd_check.slurm.submitit_adapter import parse_node_list

NEVER_STARTS = {
    "PartitionTimeLimit": "--time is above the partition's limit (sinfo lists the limits)",
    "PartitionNodeLimit": "the request is above the partition's node limits",
    "BadConstraints": "no node has the --constraint features asked for",
    "InvalidAccount": "the --account is not valid here",
    "InvalidQOS": "the --qos is not valid here",
    "AccountNotAllowed": "the --account may not use this partition",
    "QOSNotAllowed": "the --qos may not be used in this partition",
    "QOSMaxWallDurationPerJobLimit": "--time is above the QOS's limit",
    "AssocMaxWallDurationPerJobLimit": "--time is above your association's limit",
}
"""Reasons a pending job gives when Slurm will never start it: waiting on them would hang."""
FIT_REASONS = frozenset({"PartitionConfig", "Resources", "ReqNodeNotAvail"})
"""Reasons a pending job gives both while it waits for a free node and when no node of its
partition could ever hold it (PartitionConfig is also a brief first reason of ordinary jobs):
for these the job's request is compared with the partition's nodes (never_starts)."""


OTHER_CLUSTER_KEYS = frozenset({"clusters", "cluster"})
"""sbatch args that send the job to another cluster: the partitions seen here say nothing."""
MEM_SBATCH_KEYS = frozenset({"mem-per-cpu", "mem-per-gpu"})
_UNLIMITED = ("UNLIMITED", "INFINITE", "NONE", "N/A", "(null)", "")


@dataclass(frozen=True)
class Request:
    """What a job asks of one node and of its partition. Every number is a lower bound of what
    Slurm will look for (other sbatch args can only ask for more), so a request above what a
    partition offers is certain never to start there."""

    partitions: tuple[str, ...] = ()
    """Empty: the cluster's default partition."""
    cpus: int = 1
    mem_mb: int | None = None
    """None: what the cluster gives a job without --mem (checked only when `default_mem`)."""
    mem_from: str = "--mem"
    default_mem: bool = False
    gpus: int = 0
    time_min: int | None = None
    """None: not checked (a --qos may lift the partition's time limit)."""


def _gpu_count(text: str, *, gres: bool) -> int:
    """GPUs in a --gres value (gpu:2, gpu:a100:2, gres/gpu:2) or a --gpus value (2, a100:2)."""
    total = 0
    for item in re.sub(r"\([^)]*\)", "", text).split(","):
        parts = item.strip().split(":")
        if gres:
            name = parts[0].split("/")[-1]
            if name != "gpu":
                continue
            parts = parts[1:] or ["1"]
        if parts and parts[-1].isdigit():
            total += int(parts[-1])
        elif gres:
            total += 1  # gpu:a100 is one GPU
    return total


def request_of_params(params: Mapping[str, Any]) -> Request | None:
    """The Request of SlurmExecutor parameters (executor_parameters, array_parameters), or None
    when the job goes to another cluster."""
    extra = {str(k): str(v) for k, v in (params.get("additional_parameters") or {}).items()}
    if OTHER_CLUSTER_KEYS & set(extra):
        return None
    gpus = int(params.get("gpus_per_node") or 0)
    for key in ("gpus", "gpus-per-node"):
        if key in extra:
            gpus = max(gpus, _gpu_count(extra[key], gres=False))
    if "gres" in extra:
        gpus = max(gpus, _gpu_count(extra["gres"], gres=True))
    mem = params.get("mem")
    return Request(
        partitions=tuple(p for p in str(params.get("partition") or "").split(",") if p),
        cpus=int(params.get("cpus_per_task") or 1),
        mem_mb=mem_to_mb(mem) if mem is not None else None,
        default_mem=mem is None and not MEM_SBATCH_KEYS & set(extra),
        gpus=gpus,
        # A QOS may carry the PartitionTimeLimit flag, which lifts the partition's limit.
        time_min=None if params.get("qos") else params.get("time"),
    )


def request_of_job(rec: Mapping[str, str]) -> Request:
    """The Request of a queued job (`scontrol show job -o`): its per-node CPUs, memory and
    GPUs. The time limit is left to Slurm, whose PartitionTimeLimit reason already says it."""
    cpus = int(rec["MinCPUsNode"]) if rec.get("MinCPUsNode", "").isdigit() else 1
    mem, mem_from = slurm_mb(blank_to_none(rec.get("MinMemoryNode"))), "its --mem"
    per_cpu = slurm_mb(blank_to_none(rec.get("MinMemoryCPU")))
    if mem is None and per_cpu is not None:
        mem, mem_from = per_cpu * cpus, f"{per_cpu} MB per CPU x {cpus} CPUs"
    tres = " ".join(rec.get(k, "") for k in ("TresPerNode", "TresPerJob"))
    gpus = max((int(n) for n in re.findall(r"gres[:/]gpu(?::[^:,=\s]+)?[:=](\d+)", tres)),
               default=0)
    return Request(
        partitions=tuple(p for p in rec.get("Partition", "").split(",") if p),
        cpus=cpus,
        mem_mb=mem or None,
        mem_from=mem_from,
        gpus=gpus,
    )


def _limit(text: str | None) -> int | None:
    """A partition's MaxCPUsPerNode, MaxMemPerNode ...: None when unlimited."""
    if text is None or text.upper() in _UNLIMITED or not text.isdigit():
        return None
    return int(text)


def _time_limit(text: str | None) -> int | None:
    if text is None or text.upper() in _UNLIMITED:
        return None
    try:
        return parse_time(text)
    except BadInput:
        return None


def _node_mem_mb(node: Mapping[str, str]) -> int:
    real = int(node.get("RealMemory", "0") or 0) if node.get("RealMemory", "").isdigit() else 0
    spec = node.get("MemSpecLimit", "")
    return real - int(spec) if spec.isdigit() else real


def _node_cpus(node: Mapping[str, str]) -> int:
    for key in ("CPUEfctv", "CPUTot"):  # CPUEfctv: without the cores kept for the system
        if node.get(key, "").isdigit():
            return int(node[key])
    return 0


def _default_mem_mb(cpus: int, part: Mapping[str, str], config: Mapping[str, str]) -> (
    tuple[int, str] | None
):
    """(MB, how) a job without --mem gets by the cluster's defaults (the partition's first, then
    the cluster's); None when they set none, or memory is not consumable (no default blocks a
    job then)."""
    if "MEMORY" not in config.get("SelectTypeParameters", "").upper():
        return None
    for source in (part, config):
        per_node = _limit(source.get("DefMemPerNode"))
        if per_node:
            return per_node, "DefMemPerNode"
        per_cpu = _limit(source.get("DefMemPerCPU"))
        if per_cpu:
            return per_cpu * cpus, f"{per_cpu} MB per CPU x {cpus} CPUs"
    return None


def _partition_problems(
    request: Request,
    part: Mapping[str, str],
    nodes: Sequence[Mapping[str, str]],
    config: Mapping[str, str],
) -> list[str]:
    """What in `request` partition `part` (with its `nodes`) can never offer; [] when it may."""
    name = part.get("PartitionName", "?")
    ours = [n for n in nodes if name in n.get("Partitions", "").split(",")]
    problems: list[str] = []
    if request.time_min is not None:
        limit = _time_limit(part.get("MaxTime"))
        if limit is not None and request.time_min > limit:
            problems.append(
                f"--time {format_minutes(request.time_min)} is above partition {name}'s time "
                f"limit {format_minutes(limit)}"
            )
    if not ours:
        return problems  # nodes unknown (hidden, or not listed here): no more to say for sure
    biggest = max(ours, key=_node_cpus)
    most_cpus = min(_node_cpus(biggest), _limit(part.get("MaxCPUsPerNode")) or 1 << 30)
    if request.cpus > most_cpus:
        problems.append(
            f"it asks for {request.cpus} CPUs and the largest node of partition {name} has "
            f"{most_cpus} ({biggest.get('NodeName', '?')})"
        )
    mem, how = request.mem_mb, request.mem_from
    if mem is None and request.default_mem:
        default = _default_mem_mb(request.cpus, part, config)
        if default is not None:
            mem, how = default[0], f"the default for a job without --mem: {default[1]}"
    if mem is not None:
        roomiest = max(ours, key=_node_mem_mb)
        most_mem = min(_node_mem_mb(roomiest), _limit(part.get("MaxMemPerNode")) or 1 << 40)
        if mem > most_mem:
            problems.append(
                f"it asks for {mem} MB of memory ({how}) and the largest node of partition "
                f"{name} has {most_mem} MB ({roomiest.get('NodeName', '?')})"
            )
    if request.gpus:
        most_gpus = max(_gpu_count(blank_to_none(n.get("Gres")) or "", gres=True) for n in ours)
        if request.gpus > most_gpus:
            offer = f"at most {most_gpus}" if most_gpus else "none"
            problems.append(
                f"it asks for {request.gpus} GPU(s) per node and the nodes of partition {name} "
                f"have {offer}"
            )
    return problems


def _chosen_partitions(
    request: Request, parts: Sequence[Mapping[str, str]]
) -> list[Mapping[str, str]] | None:
    """The records of the partitions the request names, else of the default one; None when one
    of them is not known here."""
    by_name = {p.get("PartitionName", ""): p for p in parts}
    if request.partitions:
        chosen = [by_name.get(name) for name in dict.fromkeys(request.partitions)]
    else:
        chosen = [next((p for p in parts if p.get("Default") == "YES"), None)]
    found = [p for p in chosen if p is not None]
    return found if found and len(found) == len(chosen) else None


def fit_problem(
    request: Request,
    parts: Sequence[Mapping[str, str]],
    nodes: Sequence[Mapping[str, str]],
    config: Mapping[str, str],
) -> str | None:
    """Why no partition the request names (else the default one) could ever start it, or None
    when one may, or when that is not certain (an unknown partition: sbatch says so itself)."""
    found = _chosen_partitions(request, parts)
    if found is None:
        return None
    said = [_partition_problems(request, p, nodes, config) for p in found]
    if not all(said):
        return None
    return "; ".join("; ".join(problems) for problems in said)


def _records(cmd: Sequence[str], timeout: float) -> list[dict[str, str]] | None:
    done = run_command(cmd, timeout)
    if done is None:
        return None
    return [parse_scontrol_record(ln) for ln in done.stdout.splitlines() if ln.strip()]


def slurm_config(timeout: float = CALL_TIMEOUT_S) -> dict[str, str]:
    """`scontrol show config` as a dict ({} when it does not answer)."""
    done = run_command(["scontrol", "show", "config"], timeout)
    config: dict[str, str] = {}
    for line in done.stdout.splitlines() if done is not None else []:
        key, sep, value = line.partition("=")
        if sep:
            config[key.strip()] = value.strip()
    return config


def _request_problem(request: Request, deadline: float | None) -> str | None:
    parts = _records(["scontrol", "show", "partition", "-o"], call_budget(deadline))
    chosen = _chosen_partitions(request, parts or [])
    if chosen is None:
        return None  # no answer, or a partition unknown here: nothing certain to say
    # Only the chosen partitions' nodes: a large cluster lists thousands.
    names = ",".join(n for p in chosen for n in [blank_to_none(p.get("Nodes"))] if n and n != "ALL")
    nodes = _records(["scontrol", "show", "node", "-o", *([names] if names else [])],
                     call_budget(deadline))
    if nodes is None:
        return None
    config = slurm_config(call_budget(deadline)) if request.default_mem else {}
    return fit_problem(request, chosen, nodes, config)


def never_fits(params: Mapping[str, Any]) -> str | None:
    """Why the job SlurmExecutor `params` describe could never start on this cluster, or None.

    Asks the controller (scontrol) about partitions and nodes; None when it does not answer.
    """
    if not have("scontrol"):
        return None
    request = request_of_params(params)
    return None if request is None else _request_problem(request, None)


def reason_word(reason: str) -> str:
    """'ReqNodeNotAvail, UnavailableNodes:vm' → 'ReqNodeNotAvail'."""
    return re.split(r"[,\s(]", reason.strip(), maxsplit=1)[0]


def never_starts(info: JobInfo, deadline: float | None = None) -> str | None:
    """Why a PENDING job will never start, when that is certain; None otherwise.

    Certain: a reason Slurm gives only then (NEVER_STARTS), or a reason of FIT_REASONS with a
    request above every node of the job's partition.
    """
    if info.state != "PENDING" or not info.reason:
        return None
    reason = reason_word(info.reason)
    if reason in NEVER_STARTS:
        return NEVER_STARTS[reason]
    if reason not in FIT_REASONS:
        return None
    records = _records(["scontrol", "show", "job", "-o", info.job_id], call_budget(deadline))
    rec = next(
        (r for r in records or [] if info.job_id in (r.get("JobId"), array_task_job_id(r))), None
    )
    if rec is None:
        return None
    return _request_problem(request_of_job(rec), deadline)


# -- a new job from inside an allocation ---------------------------------------------------------
def _tres(text: str | None) -> dict[str, str]:
    return dict(item.split("=", 1) for item in (text or "").split(",") if "=" in item)


def default_job_mem_mb(node_real_mb: int, cpus: int, part: Mapping[str, str],
                       config: Mapping[str, str]) -> int:
    """What a job without --mem holds of a node: the default _default_mem_mb finds, else the
    whole node (its RealMemory); 0 where memory is not consumable."""
    if "MEMORY" not in config.get("SelectTypeParameters", "").upper():
        return 0
    found = _default_mem_mb(cpus, part, config)
    return found[0] if found is not None else node_real_mb


def allocation_blocks_new_job(opts: SlurmOptions, alloc: Allocation) -> str | None:
    """Why a new job could not start while this allocation lives, or None if it could.

    An salloc without --mem holds all the memory of its node, and a new job that needs that node
    would wait in the queue until the allocation ends: that is a hang, so say it up front.
    """
    nodes_out = run_command(["scontrol", "show", "node", "-o"])
    job_out = run_command(["scontrol", "show", "job", "-o", alloc.job_id])
    if nodes_out is None or job_out is None:
        return None
    job = parse_scontrol_record(job_out.stdout.splitlines()[0] if job_out.stdout else "")
    ours = _tres(job.get("TRES") or job.get("AllocTRES"))
    our_mem = slurm_mb(ours.get("mem")) or 0
    our_cpus = int(ours.get("cpu", "0") or 0)
    our_nodes = set(parse_node_list(job.get("NodeList", ""))) if job.get("NodeList") else set()
    per_node_mem = our_mem // max(len(our_nodes), 1)
    per_node_cpus = our_cpus // max(len(our_nodes), 1)
    cpus = opts.cpus or 1
    parts = _records(["scontrol", "show", "partition", "-o"], CALL_TIMEOUT_S) or []
    part = next((p for p in parts if p.get("PartitionName") == opts.partition
                 or (not opts.partition and p.get("Default") == "YES")), {})
    config = slurm_config() if opts.mem_mb is None else {}
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
        need_mem = (opts.mem_mb if opts.mem_mb is not None
                    else default_job_mem_mb(real, cpus, part, config))
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
