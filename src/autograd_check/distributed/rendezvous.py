"""Where the ranks of one check meet: who each rank is, and the port rank 0 listens on.

Rank 0 opens torch's TCPStore on port 0, so the kernel picks a free port for this check alone (no
shared default such as 29500, no two checks on one port: gloo would hang 75 s in its connect).
It writes its host name and that port to a file in a private folder that every rank sees (the
job's log folder on a cluster, a fresh temporary folder locally); the other ranks read it and
connect. The process group is built on that store, so inherited MASTER_ADDR, MASTER_PORT, RANK,
WORLD_SIZE and LOCAL_RANK are never read; they are also removed from what a submitted job
inherits (INHERITED), with the allocation's memory variables that make a job's own srun fail.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from autograd_check.errors import EnvironmentProblem, JobFailed

if TYPE_CHECKING:
    from torch._C._distributed_c10d import TCPStore

RENDEZVOUS_ENV = "AUTOGRAD_CHECK_RENDEZVOUS"
"""The folder of the rendezvous file, set for the ranks of a Slurm job or job step."""
INHERITED = (
    "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", RENDEZVOUS_ENV,
)
"""What torchrun and submitit's export() read: a submitting shell's values must not reach a job."""
SLURM_MEMORY = ("SLURM_MEM_PER_CPU", "SLURM_MEM_PER_NODE", "SLURM_MEM_PER_GPU")
"""An allocation's memory settings: inherited by a job submitted from inside it, they make the
job's own srun ask for memory the new job does not have."""
RENDEZVOUS_TIMEOUT_S = 60.0
"""How long a rank waits for the others to meet (rank 0's file, the store, the group)."""
COLLECTIVE_TIMEOUT_S = 120.0
"""How long one collective waits for a rank that stopped answering (then it fails, not hangs)."""


@dataclass(frozen=True)
class Identity:
    """One rank of one check."""

    rank: int
    world: int
    local_rank: int
    folder: Path
    """Where rank 0 writes the rendezvous file (private, seen by every rank)."""
    key: str
    """The rendezvous file's name: unique to this check (job and step ids on Slurm)."""
    host: str
    """The address rank 0 announces: 127.0.0.1 locally, the node's own name on a cluster."""

    @property
    def file(self) -> Path:
        return self.folder / self.key


def slurm_identity(world: int) -> Identity | None:
    """This process as a rank of a Slurm job or step of `world` tasks started for this check
    (RENDEZVOUS_ENV set by submit), else None."""
    folder = os.environ.get(RENDEZVOUS_ENV)
    procid, ntasks = os.environ.get("SLURM_PROCID"), os.environ.get("SLURM_NTASKS")
    if not folder or procid is None or ntasks is None or int(ntasks) != world:
        return None
    job = os.environ.get("SLURM_JOB_ID", "job")
    step = os.environ.get("SLURM_STEP_ID", "0")
    return Identity(
        rank=int(procid), world=world, local_rank=int(os.environ.get("SLURM_LOCALID", "0")),
        folder=Path(folder), key=f".rendezvous-{job}.{step}.json",
        # the node's own name, not $HOSTNAME: the submitting shell's value is carried into jobs
        host=socket.gethostname(),
    )


def private_problem(path: Path) -> str | None:
    """Why a rendezvous file or folder must not be trusted: another user's, or writable by one."""
    st = path.stat()
    if st.st_uid != os.getuid():
        return f"{path} belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} can be written by other users (mode {stat.filemode(st.st_mode)})"
    return None


def announce(identity: Identity, port: int) -> None:
    """Rank 0: write host and port, atomically, readable by the owner only."""
    tmp = identity.folder / f"{identity.key}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": identity.host, "port": port}, f)
    os.replace(tmp, identity.file)


def read_announcement(identity: Identity, deadline: float) -> tuple[str, int]:
    """The other ranks: wait for rank 0's file (trusted only when private), then read it."""
    while not identity.file.exists():
        if time.monotonic() > deadline:
            raise EnvironmentProblem(
                f"rank {identity.rank}: rank 0 did not announce its address within "
                f"{RENDEZVOUS_TIMEOUT_S:g} s (no {identity.file}); did rank 0 start?"
            )
        time.sleep(0.02)
    for path in (identity.folder, identity.file):
        problem = private_problem(path)
        if problem:
            raise EnvironmentProblem(f"rank {identity.rank}: rendezvous refused: {problem}")
    data = json.loads(identity.file.read_text())
    return str(data["host"]), int(data["port"])


def open_store(identity: Identity) -> TCPStore:
    """The store every rank of this check shares; rank 0 hosts it on a port the kernel picks."""
    # torch: loaded by the ranks only
    from torch.distributed import TCPStore  # type: ignore[attr-defined]

    timeout = timedelta(seconds=RENDEZVOUS_TIMEOUT_S)
    if identity.rank == 0:
        store = TCPStore(identity.host, 0, identity.world, True, timeout=timeout,
                         wait_for_workers=False)
        announce(identity, store.port)
        return store
    host, port = read_announcement(identity, time.monotonic() + RENDEZVOUS_TIMEOUT_S)
    return TCPStore(host, port, identity.world, False, timeout=timeout)


def job_environment(environ: dict[str, str], *, memory: bool = True) -> dict[str, str]:
    """environ without what a submitting shell must not pass to a job's ranks (and, with
    memory, an allocation's memory variables: a step of that allocation keeps them)."""
    drop = set(INHERITED) | (set(SLURM_MEMORY) if memory else set())
    return {k: v for k, v in environ.items() if k not in drop}


class LostContact(JobFailed):
    """A rank's collective failed because another rank died or stopped answering."""


_LOST_WORDS = ("Connection reset by peer", "Connection closed by peer", "gloo/transport",
               "Broken pipe", "NCCL communicator was aborted")
"""How gloo and NCCL say, in a plain RuntimeError, that the other end of a collective went away."""


def lost_contact(error: BaseException, during: str) -> LostContact | None:
    """LostContact (JobFailed, exit 4) when `error` is this rank's collective failing because
    another rank died or stopped answering: not the check's finding, nor the user's code's."""
    import torch.distributed as dist  # torch: ranks only

    if not isinstance(error, getattr(dist, "DistError", ())) and not (
        isinstance(error, RuntimeError) and any(w in str(error) for w in _LOST_WORDS)
    ):
        return None
    who = (f"rank {dist.get_rank()} of {dist.get_world_size()}" if dist.is_initialized()
           else "a rank")
    said = (str(error).strip().splitlines() or [type(error).__name__])[0]
    said = said.split(" This is typically")[0][:200]
    return LostContact(f"{who} lost contact with another rank during {during} "
                     f"({type(error).__name__}: {said}): another rank died or stopped answering; "
                     "its log tells why", state="FAILED")
