"""Where the ranks of one check meet: who each rank is, and the port rank 0 listens on.

Rank 0 opens torch's TCPStore on port 0, so the kernel picks a free port for this check alone (no
shared default such as 29500, no two checks on one port: gloo would hang 75 s in its connect).
It writes its host name and that port to a file in a private folder that every rank sees (the
job's log folder on a cluster, a fresh temporary folder locally); the other ranks read it and
connect. The process group is built on that store, so inherited MASTER_ADDR, MASTER_PORT, RANK,
WORLD_SIZE and LOCAL_RANK are never read; they are also removed from what a submitted job
inherits (INHERITED), with the allocation's memory variables that make a job's own srun fail.

torch.distributed authenticates nobody: any process that reaches the store's port can read and
write its keys and join the group. So (docs/security.md) the local ranks' store listens on the
loopback interface only, every key of a check lies under a random prefix, the rendezvous file
also holds a random key that never enters the store (every rank proves it knows it:
exchange.prove), and nothing that crosses ranks is a pickle (exchange.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import socket
import stat
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import EnvironmentProblem, JobFailed
from autograd_check.base.slurm_env import MEMORY as SLURM_MEMORY
from autograd_check.base.slurm_env import SlurmEnv

if TYPE_CHECKING:
    from torch._C._distributed_c10d import Store

RENDEZVOUS_ENV = "AUTOGRAD_CHECK_RENDEZVOUS"
"""The folder of the rendezvous file, set for the ranks of a Slurm job or job step."""
INHERITED = (
    "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", RENDEZVOUS_ENV,
)
"""What torchrun and submitit's export() read: a submitting shell's values must not reach a job."""
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
    slurm = SlurmEnv()
    procid, ntasks = slurm.procid, slurm.ntasks
    if not folder or procid is None or ntasks is None or int(ntasks) != world:
        return None
    job = slurm.job_id or "job"
    step = slurm.step_id or "0"
    return Identity(
        rank=int(procid), world=world, local_rank=int(slurm.localid or "0"),
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


@dataclass(frozen=True)
class Announcement:
    """What rank 0 writes to the private rendezvous file: where its store listens, the prefix of
    every key of this check, and the key every rank proves it knows (never in the store)."""

    host: str
    port: int
    prefix: str
    key: str


def announce(identity: Identity, announcement: Announcement) -> None:
    """Rank 0: write the announcement, atomically, readable by the owner only."""
    tmp = identity.folder / f"{identity.key}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"host": announcement.host, "port": announcement.port,
                   "prefix": announcement.prefix, "key": announcement.key}, f)
    os.replace(tmp, identity.file)


def read_announcement(identity: Identity, deadline: float) -> Announcement:
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
    return Announcement(str(data["host"]), int(data["port"]), str(data["prefix"]),
                        str(data["key"]))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def loopback_interface() -> str:
    """The name of this machine's loopback interface (lo on Linux, lo0 on macOS)."""
    names = [name for _, name in socket.if_nameindex() if name.startswith("lo")]
    return min(names, key=len) if names else "lo"


def _listen(identity: Identity, timeout: timedelta) -> Any:
    """Rank 0's TCPStore on a port the kernel picks: on the loopback interface only when every
    rank is on this machine (torch's own listens on every interface), else on every interface."""
    # torch: loaded by the ranks only
    from torch.distributed import TCPStore  # type: ignore[attr-defined]

    if not is_loopback(identity.host):
        return TCPStore(identity.host, 0, identity.world, True, timeout=timeout,
                        wait_for_workers=False)
    family = socket.AF_INET6 if ":" in identity.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((identity.host, 0))
        sock.listen(max(128, identity.world))
        port = sock.getsockname()[1]
    except BaseException:
        sock.close()
        raise
    # the store owns the socket from here (detach: Python must not close it under the store)
    return TCPStore(identity.host, port, identity.world, True, timeout=timeout,
                    wait_for_workers=False, master_listen_fd=sock.detach(), use_libuv=False)


def open_store(identity: Identity) -> tuple[Store, str]:
    """The store every rank of this check shares (rank 0 hosts it on a port the kernel picks),
    seen through this check's prefix, and the key every rank proves it knows."""
    # torch: loaded by the ranks only
    from torch.distributed import PrefixStore, TCPStore  # type: ignore[attr-defined]

    timeout = timedelta(seconds=RENDEZVOUS_TIMEOUT_S)
    if identity.rank == 0:
        store = _listen(identity, timeout)
        announcement = Announcement(identity.host, int(store.port),
                                    f"autograd-check/{secrets.token_hex(16)}/",
                                    secrets.token_hex(32))
        announce(identity, announcement)
    else:
        announcement = read_announcement(identity, time.monotonic() + RENDEZVOUS_TIMEOUT_S)
        store = TCPStore(announcement.host, announcement.port, identity.world, False,
                         timeout=timeout, use_libuv=not is_loopback(announcement.host))
    return PrefixStore(announcement.prefix, store), announcement.key


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
