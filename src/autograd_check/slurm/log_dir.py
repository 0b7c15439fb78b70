"""The log folder: where job scripts, pickles, logs and results go (--log-dir,
$AUTOGRAD_CHECK_LOG_DIR), made and checked private, and the files of a job in it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.safety import check_folder_chain, make_private_dirs, script_value

LOG_DIR_ENV = "AUTOGRAD_CHECK_LOG_DIR"
DEFAULT_LOG_DIR = "~/.autograd-check/slurm"
"""Where job scripts, pickles and logs go unless --log-dir or $AUTOGRAD_CHECK_LOG_DIR say otherwise.

It must be on a filesystem the compute nodes share with this machine (home directories usually
are; /tmp is not): the node writes the result there and this machine reads it back.
"""


def resolve_log_dir(log_dir: Path | None) -> Path:
    """--log-dir, else $AUTOGRAD_CHECK_LOG_DIR, else DEFAULT_LOG_DIR, made absolute; a value that
    cannot go into a job script (a newline, a %) is refused (BadInput)."""
    if log_dir is None:
        from_env = os.environ.get(LOG_DIR_ENV)
        log_dir = Path(script_value(f"${LOG_DIR_ENV}", from_env, path=True) if from_env
                       else DEFAULT_LOG_DIR)
    folder = Path(os.path.abspath(log_dir.expanduser()))
    script_value("log dir", str(folder), path=True)
    return folder


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))[2:]


def ensure_private(path: Path, what: str) -> None:
    """Refuse a file or folder that another user owns or can write: results there are pickles,
    and loading a pickle runs whatever its writer put in it."""
    try:
        st = path.stat()
    except OSError as e:
        raise EnvironmentProblem(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    if st.st_uid != os.getuid():
        raise EnvironmentProblem(
            f"{what} {str(path)!r} belongs to another user (uid {st.st_uid}); results are pickles, "
            "so they are only loaded from a folder you own"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise EnvironmentProblem(
            f"{what} {str(path)!r} can be written by other users (mode {_mode(path)}); results "
            f"are pickles, so they are only loaded from a private folder: chmod 700 {path}"
        )


def prepare_log_dir(folder: Path) -> None:
    """Create the log folder readable by its owner only (0700, and so are the parents created for
    it), or check that an existing one is. A folder that another user could replace on the way
    from / is refused (BadInput, see safety.check_folder_chain), before and after creating it."""
    check_folder_chain(folder, "log dir")
    try:
        make_private_dirs(folder)
    except OSError as e:
        raise EnvironmentProblem(
            f"log dir {str(folder)!r} cannot be created: {e.strerror or e}"
        ) from None
    if not folder.is_dir():
        raise EnvironmentProblem(f"log dir {str(folder)!r} is not a folder")
    check_folder_chain(folder, "log dir")
    ensure_private(folder, "log dir")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise EnvironmentProblem(f"log dir {str(folder)!r} is not writable")


def job_paths(folder: Path, job_id: str) -> Any:
    """submitit's JobPaths for task 0 of a job in the (flat) log folder."""
    # submitit loads only when Slurm is used
    from submitit.core.utils import JobPaths

    return JobPaths(folder, job_id=job_id, task_id=0)
