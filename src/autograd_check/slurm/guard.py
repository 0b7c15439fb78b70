"""The first thing a batch job runs on the node: check who could have written the job's pickle,
then hand over to submitit, which loads and runs it.

submitit's sbatch script runs `<python> -u -m submitit.core._submit FOLDER`; the executor's
`python` is `node_python()` here, so the node runs

    <python> -u -c '<start without the working folder on sys.path; run this module>' \
        -u -m submitit.core._submit FOLDER

(safety.python_module_argv: the batch job runs in the folder it was submitted from, and a package
planted there must not be imported before the guard, or by it.)

Before anything is unpickled the guard checks, with the rule `submit` applied (safety.py), that
nobody but the job's user (and root) could have changed the way to the log folder, that the folder
is the user's and private, and that `<job>_submitted.pkl` (an array task's own pickle for array
tasks) is a plain file of the user's that nobody else can write. Otherwise the job fails with one
line in its error log and nothing is loaded: loading a pickle runs whatever its writer put in it.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
import time
from pathlib import Path

from autograd_check.base.safety import folder_chain_problem, python_module_argv
from autograd_check.slurm.submitit_adapter import SUBMITIT_ARGS

MODULE = "autograd_check.slurm.guard"
PICKLE_WAIT_S = 60
"""submitit writes an array's task pickles once sbatch has answered: wait for them as it does."""


def node_python(executable: str | None = None) -> str:
    """The `python` of submitit's SlurmExecutor: this interpreter, running the guard first, with
    no working folder on its sys.path."""
    return shlex.join(python_module_argv(MODULE, executable=executable, unbuffered=True))


def pickle_problem(path: Path) -> str | None:
    """Why the job's pickle must not be loaded (None: only its user could have written it)."""
    try:
        st = os.lstat(path)
    except OSError as e:
        return f"{str(path)!r} cannot be read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return f"{str(path)!r} is not a plain file"
    if st.st_uid != os.getuid():
        return f"{str(path)!r} belongs to another user (uid {st.st_uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{str(path)!r} can be written by other users (mode {oct(st.st_mode & 0o7777)[2:]})"
    return None


def job_problem(folder: Path, pickle: Path, *, wait_s: float = PICKLE_WAIT_S) -> str | None:
    """Why this job must not run (None: it may): the way to the folder, the folder, the pickle."""
    problem = folder_chain_problem(folder)
    if problem is not None:
        return f"log folder {str(folder)!r} is not safe: {problem}"
    deadline = time.monotonic() + wait_s
    while not os.path.lexists(pickle) and time.monotonic() < deadline:
        time.sleep(1)
    return pickle_problem(pickle)


def main(argv: list[str]) -> int:
    if len(argv) != len(SUBMITIT_ARGS) + 1 or tuple(argv[:-1]) != SUBMITIT_ARGS:
        print(f"autograd-check: {MODULE} expects {' '.join(SUBMITIT_ARGS)} FOLDER, "
              f"got {shlex.join(argv)}", file=sys.stderr, flush=True)
        return 2
    folder = Path(argv[-1])
    os.umask(0o077)  # what the job writes (its result, a checkpoint) is the user's only
    os.environ["SUBMITIT_FOLDER"] = str(folder)
    # submitit loads only when Slurm is used
    from submitit.slurm.slurm import SlurmJobEnvironment

    env = SlurmJobEnvironment()
    problem = job_problem(folder, env.paths.submitted_pickle)
    if problem is not None:
        print(f"autograd-check: refusing to run Slurm job {env.job_id}: {problem}. Only a file "
              "that nobody but you could have written is loaded; nothing was loaded or run",
              file=sys.stderr, flush=True)
        return 3
    # submitit loads only when Slurm is used
    from submitit.core.submission import submitit_main

    sys.argv = [sys.argv[0], str(folder)]
    submitit_main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
