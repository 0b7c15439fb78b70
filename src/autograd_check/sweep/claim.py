"""DIR/.running: the lock file of the one process that runs (or submits) a sweep into DIR.

A sweep claims DIR by creating the file exclusively (O_CREAT | O_EXCL, atomic on local and NFS
file systems alike) with its host, pid, the pid's start time and the host's boot id; it removes
the file when it ends. Another sweep into DIR, from any host sharing the folder, finds the file
and is refused, unless the owner is provably gone:

- on the same host, when its pid is dead (process.pid_alive: gone, a zombie, or now another
  user's), or is now another process (its start time differs: the pid was reused) or the host
  has rebooted since (another boot id): the stale file is taken over;
- on another host nothing can be proved from here: the sweep is refused with the owner's host and
  pid, and how to clear the file once that host is known to run it no more.

Claims are made under the manifest's flock (Store.locked), so two sweeps on one host never take
over the same stale file at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.process import leave_if_copy, pid_alive, process_start
from autograd_check.sweep.store import now

RUNNING = ".running"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def boot_id() -> str | None:
    text = _read("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


@dataclass(frozen=True)
class Owner:
    """Who holds DIR/.running."""

    host: str
    pid: int
    started: str
    proc_start: str | None
    boot_id: str | None
    mode: str

    @classmethod
    def me(cls, mode: str) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), pid, now(), process_start(pid), boot_id(), mode)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Owner | None:
        pid = doc.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or not isinstance(doc.get("host"),
                                                                              str):
            return None
        text = {k: (str(doc[k]) if doc.get(k) is not None else None)
                for k in ("started", "proc_start", "boot_id", "mode")}
        return cls(doc["host"], pid, text["started"] or "?", text["proc_start"], text["boot_id"],
                   text["mode"] or "?")

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started,
                "proc_start": self.proc_start, "boot_id": self.boot_id, "mode": self.mode}

    def gone(self) -> str | None:
        """Why this owner (on this host) runs no more; None when it may still run."""
        if self.boot_id and boot_id() and self.boot_id != boot_id():
            return "the host has rebooted since"
        if not pid_alive(self.pid):
            return f"pid {self.pid} is not running"
        start = process_start(self.pid)
        if self.proc_start and start and start != self.proc_start:
            return f"pid {self.pid} is now another process"
        return None


@dataclass
class Claim:
    """DIR/.running, held by this process until `release()`."""

    path: Path
    owner: Owner

    def release(self) -> None:
        """Remove the file if it is still this process's (a --force elsewhere may have taken
        it over: then it is left alone)."""
        if _owner_of(self.path) == self.owner:
            with contextlib.suppress(OSError):
                self.path.unlink()


def _owner_of(path: Path) -> Owner | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Owner.from_dict(doc) if isinstance(doc, dict) else None


FRESH_S = 10.0
"""An unreadable DIR/.running younger than this may be one being written: it is not stale."""


def _settled_owner(path: Path) -> Owner | None:
    """The owner in the file; an unreadable one is read again for a moment (another sweep may be
    writing it this instant), then refused while it is fresh; None when it stays unreadable."""
    for _ in range(10):
        owner = _owner_of(path)
        if owner is not None or not path.exists():
            return owner
        time.sleep(0.1)
    try:
        age = time.time() - path.stat().st_mtime
    except OSError:
        return None
    if age < FRESH_S:
        raise BadInput(f"{path} is being written by another sweep starting into the same "
                       "--out; try again in a moment")
    return None


def _create(path: Path, owner: Owner) -> bool:
    """Create the file with `owner` in it; False when it exists already. A fork of the command
    made by the user's code (a target that forks when imported, at the edge) claims nothing: it
    ends here (process.leave_if_copy), or it would hold DIR against the command itself."""
    leave_if_copy()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise BadInput(f"{path} cannot be created: {e.strerror or e}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps(owner.to_dict(), sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return True


def claim(root: Path, mode: str, on_note: Any = None) -> Claim:
    """Claim DIR for this process (see the module's docstring); BadInput when another process,
    on this host or another, holds it. `on_note(text)` hears of a stale claim taken over."""
    path = Path(root) / RUNNING
    me = Owner.me(mode)
    for _ in range(3):
        if _create(path, me):
            return Claim(path, me)
        other = _settled_owner(path)
        why: str | None
        if other is None:
            why = "unreadable (left half written by a crash?)"
        elif other.pid == me.pid and other.host == me.host and other.proc_start == me.proc_start:
            why = "this very process's"
        elif other.host != me.host:
            raise BadInput(
                f"a {other.mode} sweep into --out {str(root)!r} is running on host "
                f"{other.host} (pid {other.pid}, since {other.started}), according to {path}. "
                f"Wait for it to end. If {other.host} runs it no more (check with `ssh "
                f"{other.host} ps -p {other.pid}`; a crashed or rebooted host leaves the file "
                f"behind), delete the file: rm {shlex.quote(str(path))}"
            )
        else:
            why = other.gone()
            if why is None:
                raise BadInput(
                    f"a {other.mode} sweep into --out {str(root)!r} is still running (pid "
                    f"{other.pid} on {other.host}, since {other.started}); wait for it to end "
                    "or stop it first (Ctrl-C there, or kill its pid)"
                )
        if on_note is not None and other is not None and why != "this very process's":
            on_note(f"taking over {path} from an earlier sweep (pid {other.pid} on {other.host}, "
                    f"since {other.started}): {why}")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise BadInput(f"{path} keeps coming back: another sweep into --out {str(root)!r} is "
                   "starting at the same moment; try again")
