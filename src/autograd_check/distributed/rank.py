"""One rank's work: meet the others, train one step under DDP or FSDP2, gather the gradients, and
(rank 0) compute the full-batch reference and the verdict, which every rank then returns.

The same code runs for every launcher: the local one (launch.py starts N processes), a Slurm job
of N tasks (submitit) and a job step of N tasks inside an salloc allocation (srun).
"""

from __future__ import annotations

import contextlib
import copy
import faulthandler
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from autograd_check.base.device import resolve_device
from autograd_check.base.environment import collect_environment
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult, ContractCheck
from autograd_check.base.spec import DEFAULT_TOLERANCES, CheckSpec, nondet_tol
from autograd_check.base.torch_features import fully_shard
from autograd_check.distributed.causes import rank_mean_gradients
from autograd_check.distributed.exchange import all_gather_json, broadcast_json, prove
from autograd_check.distributed.problem import (
    Problem,
    build_problem,
    default_train_step,
    run_user,
    shards,
)
from autograd_check.distributed.rendezvous import (
    COLLECTIVE_TIMEOUT_S,
    Identity,
    LostContact,
    is_loopback,
    loopback_interface,
    lost_contact,
    open_store,
)
from autograd_check.distributed.verdict import Gathered, distributed_result
from autograd_check.kernel.views import grad_fn_chain
from autograd_check.losses.user import TargetRaised
from autograd_check.references.contract import backward_contract, custom_functions, merge

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def rank_device(spec: CheckSpec, identity: Identity) -> torch.device:
    """cpu, or this rank's own GPU (the local rank's index among those it can see)."""
    torch = import_torch()
    device = resolve_device(spec.device)
    if device.type != "cuda":
        return device
    if spec.device == "cuda" or spec.device == "auto":
        device = torch.device("cuda", identity.local_rank % max(1, torch.cuda.device_count()))
    torch.cuda.set_device(device)
    return device


def meet(identity: Identity, device: torch.device) -> tuple[Any, str]:
    """Join this check's process group: the store (seen through this check's prefix) and the key
    every rank then proves it knows, before anything of the check crosses (exchange.prove)."""
    # torch.distributed: loaded by the ranks only (locally, the fork server preloads it)
    import torch.distributed as dist

    if device.type != "cuda" and is_loopback(identity.host):
        # every rank is on this machine: gloo's own sockets listen on loopback too (by default
        # they take the address the host name resolves to, reachable from other machines)
        os.environ["GLOO_SOCKET_IFNAME"] = loopback_interface()
    store, key = open_store(identity)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", store=store, rank=identity.rank,
        world_size=identity.world, timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
    )
    try:
        if identity.rank == 0:  # every rank is in the group: the announcement has done its job
            identity.file.unlink(missing_ok=True)
        prove(key, identity.rank, identity.world, device)
    except BaseException:
        dist.destroy_process_group()
        raise
    return store, key


def rank_main(spec: CheckSpec, identity: Identity,
              answer: Callable[[CheckResult], None] | None = None,
              torn_down: Callable[[], None] | None = None) -> CheckResult:
    """This rank's part of the check; every rank returns rank 0's result. `answer`, when given,
    gets it as soon as it is known, before the process group is torn down (then `torn_down` is
    called): a launcher that holds every rank's answer need not wait for a teardown that hangs
    (launch.py)."""
    import torch.distributed as dist  # torch: ranks only

    started = time.monotonic()
    device = rank_device(spec, identity)
    store, _ = meet(identity, device)
    try:
        met = time.monotonic()
        try:
            doc = _check(spec, identity, device, started, met)
            # rank 0's result, as JSON data (never a pickle: see exchange.py), to every rank
            doc = broadcast_json(doc, 0, identity.rank, device)
        except TargetRaised as e:  # for the ranks it leaves waiting in a collective
            raised = on_this_rank(e, identity)
            _tell(store, identity, raised)
            raise raised from None
        except (LostContact, RuntimeError) as e:  # the check's collectives (the user's: run_user)
            lost = e if isinstance(e, LostContact) else lost_contact(
                e, "the check's exchange of gradients")
            if lost is None:
                raise
            raise _told(store, identity) or lost from None
        if not isinstance(doc, str):
            raise LostContact(f"rank {identity.rank}: rank 0 sent no result", state="FAILED")
        result = CheckResult.from_dict(json.loads(doc))
        if answer is not None:
            answer(result)
    finally:
        with bounded(TEARDOWN_LIMIT_S):
            dist.destroy_process_group()
    if torn_down is not None:
        torn_down()
    farewell(store, identity)
    return result


TEARDOWN_LIMIT_S = 30.0
"""How long torch.distributed's teardown may take before this rank's process is ended."""


@contextlib.contextmanager
def bounded(seconds: float) -> Iterator[None]:
    """End this process (exit 1, every thread's stack in its log) if the block outlasts
    `seconds`. torch.distributed's teardown once deadlocked holding the GIL (torch 2.4.1, 5 of
    13 runs: destroy_process_group waited for gloo's worker thread, which waited for the GIL), so
    no Python thread or signal handler could end it: faulthandler's watchdog is a C thread. On
    Slurm the task then fails with that stack (exit 4) instead of hanging until its time limit;
    locally the launcher, which has every rank's answer by then, stops it first (launch.py)."""
    try:
        faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__ or sys.stderr)
    except (AttributeError, ValueError, OSError):  # no stderr with a descriptor: unbounded
        yield
        return
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


FAREWELL_KEY = "autograd-check/done"
FAREWELL_S = 5.0


def farewell(store: Any, identity: Identity) -> None:
    """Each rank says it is done with the store; rank 0, whose process hosts it, waits for all
    of them (FAREWELL_S at most) before the store can go, so that no rank is still using it as
    it closes. Without this, a rank of a Slurm task running several cases in a row was once seen
    ending in std::terminate as its process exited, under load (tests/test_sweep_ranks.py)."""
    count = store.add(FAREWELL_KEY, 1)
    deadline = time.monotonic() + FAREWELL_S
    while identity.rank == 0 and count < identity.world and time.monotonic() < deadline:
        time.sleep(0.005)
        count = store.add(FAREWELL_KEY, 0)


RAISED_KEY = "autograd-check/raised/"
"""+ rank: in the ranks' store, the error of the user's code that stopped that rank (JSON: rank,
host, message)."""


class RankRaised(TargetRaised):
    """The user's code raised on one rank: its error in one line, named with that rank and its
    host ('rank 1 of 2, on host n1: train_step() raised ValueError: ... (at mine.py:12)')."""

    def __init__(self, message: str, rank: int, host: str) -> None:
        Exception.__init__(self, message)
        self.rank = rank
        self.host = host


class PeerRaised(RankRaised):
    """The user's code raised on another rank, which left this one waiting in a collective."""


def on_this_rank(error: TargetRaised, identity: Identity) -> TargetRaised:
    """The user's error as RankRaised, named with this rank and host; an error that every rank
    raises alike (ModulesDiffer) or one already named stays as it is."""
    if isinstance(error, (RankRaised, ModulesDiffer)):
        return error
    host = socket.gethostname()
    what = getattr(error, "what", None)
    if what is None:
        said = (str(error).strip().splitlines() or [type(error).__name__])[0]
    else:
        line = (error.error_message.strip().splitlines() or [""])[0]
        at = f" (at {error.location})" if error.location else ""
        said = f"{what} raised {error.error_type}{': ' * bool(line)}{line}{at}"
    return RankRaised(f"rank {identity.rank} of {identity.world}, on host {host}: {said}",
                      identity.rank, host)


def _tell(store: Any, identity: Identity, error: TargetRaised) -> None:
    """Leave the user's error where the other ranks look when their collective breaks."""
    told = {"message": str(error), "rank": getattr(error, "rank", identity.rank),
            "host": getattr(error, "host", socket.gethostname())}
    with contextlib.suppress(Exception):  # the store may be gone with rank 0: its log tells
        store.set(f"{RAISED_KEY}{identity.rank}", json.dumps(told))


def _told(store: Any, identity: Identity) -> PeerRaised | None:
    """Another rank's error, when the user's code raised there (see _tell)."""
    for rank in range(identity.world):
        key = f"{RAISED_KEY}{rank}"
        try:
            if rank != identity.rank and store.check([key]):
                text = bytes(store.get(key)).decode(errors="replace")
                break
        except Exception:  # noqa: BLE001  (rank 0, the store's host, is gone: nothing to read)
            return None
    else:
        return None
    try:  # a peer sends data, never code: JSON, checked field by field
        told = json.loads(text)
        return PeerRaised(str(told["message"]), int(told["rank"]), str(told["host"]))
    except (ValueError, TypeError, KeyError):
        return PeerRaised(text, rank, "?")


def _check(spec: CheckSpec, identity: Identity, device: torch.device, started: float,
           met: float) -> str | None:
    # torch.distributed: loaded by the ranks only

    torch = import_torch()
    assert spec.ranks is not None and spec.parallel is not None and spec.accumulate is not None
    problem = build_problem(spec, device)
    names = [name for name, _ in problem.module.named_parameters()]
    _same_parameters(problem, identity, device)  # before any collective that assumes it
    reference = copy.deepcopy(problem.module) if identity.rank == 0 else None
    start_agree = _all_equal(_flat([p.detach() for p in problem.module.parameters()]),
                             identity.world)[0]
    wrapper = ("fully_shard(module)" if spec.parallel == "fsdp"
               else "DistributedDataParallel(module)")
    # FSDP2's fully_shard is found outside run_user: a torch without it is not the target's error
    shard = fully_shard() if spec.parallel == "fsdp" else None
    model = run_user(problem, wrapper, _wrap, problem, device, shard)
    micro = shards(problem, identity.world, spec.accumulate, identity.rank)
    step = problem.train_step or default_train_step(problem, spec.parallel)
    what = ("train_step(model, micro_batches)" if problem.train_step is not None else
            "the default train step's loss, output.square().mean() (give loss(output, *inputs) "
            "when forward does not return one tensor)" if problem.default_loss else
            "the default train step")
    run_user(problem, what, step, model, micro)
    stepped = time.monotonic()
    grads = _gradients(problem.module)
    unreduced = spec.parallel == "fsdp" and _unreduced(problem.module)
    present = [g is not None for g in grads]
    flat = _flat([g if g is not None else torch.zeros_like(_full(p))
                  for g, p in zip(grads, problem.module.parameters(), strict=True)])
    agree, spread = _all_equal(flat, identity.world)
    hosts = all_gather_json(socket.gethostname(), identity.world, device)
    if identity.rank != 0:
        return None
    assert reference is not None
    reference.zero_grad(set_to_none=True)
    loss = problem.loss_of(reference, problem.batch)
    chain = grad_fn_chain(loss)
    own = custom_functions(loss)  # the module's own autograd.Functions: their rules too
    loss.backward()  # type: ignore[no-untyped-call]
    expected = [p.grad for p in reference.parameters()]
    contract = run_user(problem, "the module's own backward, called again for its rules",
                        _own_backward, spec, problem, reference, own) if own else []
    gathered = Gathered(
        names=names, grads=grads, present=present, expected=expected,
        start_agree=start_agree, ranks_agree=agree, rank_spread=spread,
        loss_value=float(loss.detach()), grad_fn_chain=chain,
        custom_step=problem.train_step is not None, hosts=[str(h) for h in hosts],
        unreduced=unreduced,
        frozen=[n for n, p in reference.named_parameters() if not p.requires_grad],
        hints=module_hints(reference),
        contract=contract,
        rank_mean=lambda: rank_mean_gradients(problem, reference, identity.world,
                                              spec.accumulate or 1),
    )
    result = distributed_result(spec, problem, gathered, identity.world)
    result.environment = collect_environment(device)
    result.environment["backend"] = "nccl" if device.type == "cuda" else "gloo"
    end = time.monotonic()
    result.timings = {"rendezvous_s": met - started, "train_step_s": stepped - met,
                      "reference_s": end - stepped, "total_s": end - started}
    return result.to_json(indent=None)


def _own_backward(spec: CheckSpec, problem: Problem, module: torch.nn.Module,
                  classes: list[type]) -> list[ContractCheck]:
    """The contract of the module's own backward (references/contract.py), as check() keeps it: on a
    copy of the reference module and the whole batch, at grad_output = 1 (the loss is a
    scalar) and its scaled and zero counterparts."""
    torch = import_torch()
    fresh = copy.deepcopy(module)
    fresh.zero_grad(set_to_none=True)
    named = [(n, p) for n, p in fresh.named_parameters() if p.requires_grad]

    def forward(other: bool = False) -> tuple[Tensor, list[Tensor]]:
        # other: the batch in reverse order (the same rows, another forward's values)
        batch = tuple(t.flip(0) if t.dim() else t for t in problem.batch) if other else (
            problem.batch)
        with torch.enable_grad():
            return problem.loss_of(fresh, batch), [p for _, p in named]

    def tolerances(dtype: Any) -> tuple[float, float]:
        rtol, atol = DEFAULT_TOLERANCES[str(dtype).removeprefix("torch.")]
        return (rtol if spec.rtol is None else spec.rtol, atol if spec.atol is None else spec.atol)

    out, _ = forward()
    u = torch.ones_like(out.detach())
    return merge(backward_contract(classes, forward, [n for n, _ in named], u, tolerances,
                                   nondet_tol(spec), False))


class ModulesDiffer(TargetRaised):
    """The ranks built modules whose parameters differ in name, shape or requires_grad."""

    def __init__(self, message: str) -> None:
        Exception.__init__(self, message)


def _same_parameters(problem: Problem, identity: Identity, device: torch.device) -> None:
    """Every rank's parameters (names, shapes, requires_grad) against rank 0's: DDP and FSDP
    assume they agree, and fail deep inside (or abort) when they do not. Every rank sees the same
    gathered lists, so every rank raises the same error: a failed check, as for the user's code."""
    mine = [[n, list(p.shape), p.requires_grad] for n, p in problem.module.named_parameters()]
    every = all_gather_json(mine, identity.world, device)
    for rank, theirs in enumerate(every[1:], start=1):
        if theirs != every[0]:
            raise ModulesDiffer(f"the ranks built different modules: rank {rank}'s parameters "
                                f"differ from rank 0's ({_first_difference(every[0], theirs)}); "
                                "DDP and FSDP need the same parameters, shapes and "
                                "requires_grad on every rank")


def _first_difference(first: list[Any], other: list[Any]) -> str:
    if len(first) != len(other):
        return f"{len(other)} parameters against {len(first)}"
    for (name, shape, grad), (name2, shape2, grad2) in zip(first, other, strict=True):
        if name != name2:
            return f"{name2} where rank 0 has {name}"
        if shape != shape2:
            return f"{name} is {list(shape2)}, not {list(shape)}"
        if grad != grad2:
            return f"{name} has requires_grad={grad2}, rank 0 {grad}"
    return "their order"


def module_hints(module: torch.nn.Module) -> list[str]:
    """What in the module makes a distributed gradient differ from the full batch's by design."""
    torch = import_torch()
    norms = [n for n, m in module.named_modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and not isinstance(m, torch.nn.SyncBatchNorm)]
    drops = [n for n, m in module.named_modules()
             if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.training and m.p > 0]
    hints = []
    if norms:
        hints.append(f"the module's BatchNorm layers ({', '.join(norms)}) normalise each rank's "
                     "shard with that shard's own statistics (torch.nn.SyncBatchNorm shares them)")
    if drops:
        hints.append(f"the module's Dropout layers ({', '.join(drops)}) draw other masks on each "
                     "rank and in the reference (check with them off: p=0 or eval())")
    return hints


def _full(t: Tensor) -> Tensor:
    """A parameter or gradient as one whole tensor (FSDP2's are sharded DTensors)."""
    full = getattr(t, "full_tensor", None)
    whole: Tensor = full() if callable(full) else t
    return whole


def _flat(tensors: list[Tensor]) -> Tensor:
    torch = import_torch()
    parts = [_full(t).detach().reshape(-1).to(torch.float64) for t in tensors]
    flat: Tensor = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)
    return flat


def _all_equal(flat: Tensor, world: int) -> tuple[bool, float]:
    """Whether every rank holds the same vector, and the greatest difference to rank 0's."""
    import torch.distributed as dist  # torch: loaded by the ranks only

    torch = import_torch()
    pieces = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(pieces, flat.contiguous())
    spread = max((float((p - pieces[0]).abs().max()) if p.numel() else 0.0) for p in pieces)
    same = all(torch.equal(p, pieces[0]) for p in pieces)
    return same, spread


def _wrap(problem: Problem, device: torch.device, shard: Callable[..., Any] | None) -> Any:
    """FSDP2 (`shard`, its fully_shard) or else DDP around the module, with PyTorch's defaults
    unless the target gives its own."""
    if shard is not None:
        import torch.distributed as dist  # torch: ranks only
        from torch.distributed.device_mesh import init_device_mesh  # torch: ranks only

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        return shard(problem.module, mesh=mesh, **problem.options)
    from torch.nn.parallel import DistributedDataParallel  # torch: ranks only

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(problem.module, device_ids=ids, **problem.options)


def _gradients(module: torch.nn.Module) -> list[Tensor | None]:
    """Each parameter's gradient, whole (FSDP2's gathered from its shards on every rank)."""
    return [None if p.grad is None else _full(p.grad).detach() for p in module.parameters()]


def _unreduced(module: torch.nn.Module) -> bool:
    """Whether FSDP2 still holds unsharded gradients of a backward run with gradient sync off:
    they were never reduce-scattered into the parameters' .grad (the step ended unsynced)."""
    for sub in module.modules():
        state_of = getattr(sub, "_get_fsdp_state", None)
        if not callable(state_of):
            continue
        state = state_of()
        groups = getattr(state, "_fsdp_param_groups", None)
        if groups is None:  # older torch: one group per module, or none
            group = getattr(state, "_fsdp_param_group", None)
            groups = [group] if group is not None else []
        for group in groups:
            for param in getattr(group, "fsdp_params", ()):
                if getattr(param, "unsharded_accumulated_grad", None) is not None:
                    return True
                unsharded = getattr(param, "_unsharded_param", None)
                if unsharded is not None and unsharded.grad is not None:
                    return True
    return False
