"""Batch jobs through submitit: the executor's parameters, the sbatch script (--dry-run), and
submitting `run_job(spec)` (refused first when Slurm would never start it)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from autograd_check.base.errors import BadInput, EnvironmentProblem
from autograd_check.base.safety import private_umask
from autograd_check.base.slurm_env import CONF, MEMORY, SlurmEnv
from autograd_check.base.spec import CheckSpec
from autograd_check.distributed.rendezvous import INHERITED
from autograd_check.slurm.admission import never_fits
from autograd_check.slurm.commands import require_slurm
from autograd_check.slurm.guard import node_python
from autograd_check.slurm.log_dir import prepare_log_dir
from autograd_check.slurm.node import run_job
from autograd_check.slurm.options import DEFAULT_TIME_MIN, GPU_SBATCH_KEYS, SlurmOptions
from autograd_check.slurm.submitit_adapter import sbatch_script as submitit_sbatch_script


def rank_layout(spec: CheckSpec, opts: SlurmOptions) -> tuple[int, int]:
    """(nodes, tasks per node): one task per rank (--ranks N), N / M on each of --nodes M."""
    ranks, nodes = spec.ranks or 1, opts.nodes or 1
    if opts.nodes is not None and spec.ranks is None:
        raise BadInput("nodes applies only with ranks (e.g. --ranks 4 --nodes 2)")
    if ranks % nodes:
        raise BadInput(f"ranks {ranks} do not split evenly over {nodes} nodes; choose ranks "
                       f"divisible by nodes (e.g. --ranks {nodes * max(1, ranks // nodes)})")
    return nodes, ranks // nodes


def executor_parameters(spec: CheckSpec, opts: SlurmOptions) -> dict[str, Any]:
    """SlurmExecutor.update_parameters(...) for this check: sbatch's own option names."""
    nodes, per_node = rank_layout(spec, opts)
    params: dict[str, Any] = {
        "job_name": opts.job_name,
        "time": opts.time_min or DEFAULT_TIME_MIN,
        "nodes": nodes,
        "ntasks_per_node": per_node,
    }
    if spec.ranks is not None:  # a rank that dies ends the step, not a wait in a collective
        params["srun_args"] = ["--kill-on-bad-exit=1"]
    extra = dict(opts.sbatch_args)
    gpus = opts.gpus
    if gpus is None and spec.device.startswith("cuda") and not GPU_SBATCH_KEYS & set(extra):
        gpus = per_node  # --device cuda asks for one GPU per rank unless told otherwise
    if gpus:
        params["gpus_per_node"] = gpus
    for key, value in (
        ("cpus_per_task", opts.cpus),
        ("mem", opts.mem),
        ("partition", opts.partition),
        ("account", opts.account),
        ("qos", opts.qos),
        ("constraint", opts.constraint),
    ):
        if value is not None:
            params[key] = value
    if opts.setup:
        params["setup"] = list(opts.setup)
    if extra:
        params["additional_parameters"] = {k: (v if v != "" else True) for k, v in extra.items()}
    return params


def submitit_script(folder: Path, params: Mapping[str, Any], map_count: int | None = None) -> str:
    """The sbatch script submitit writes for these executor parameters (for --dry-run).

    submitit shows its script only by submitting it: this is the text it writes
    (submitit_adapter.sbatch_script). No executor is built here, because SlurmExecutor insists
    on srun being on PATH and --dry-run must work where there is no Slurm.
    """
    given: dict[str, Any] = dict(params)
    if map_count is not None:
        given["map_count"] = map_count
    return submitit_sbatch_script(node_python(), folder, given)


def sbatch_script(spec: CheckSpec, opts: SlurmOptions) -> str:
    """The sbatch script `submit` would send, written by submitit itself (for --dry-run)."""
    return submitit_script(opts.folder(), executor_parameters(spec, opts))


@dataclass
class Submitted:
    job_id: str
    folder: Path
    stdout: Path
    stderr: Path
    submission_file: Path


@contextlib.contextmanager
def _without_rank_env() -> Iterator[None]:
    """Hide what a submitting shell must not pass to a job's ranks (MASTER_PORT, RANK, ...; an
    allocation's memory variables): sbatch hands the environment on, and torch.distributed (or
    submitit's export()) would read them in the job."""
    saved = {k: os.environ.pop(k) for k in (*INHERITED, *MEMORY) if k in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


@contextlib.contextmanager
def _clean_slurm_env() -> Iterator[None]:
    """Hide the allocation's SLURM_* variables from a new job, but keep SLURM_CONF (which tells
    sbatch which cluster to talk to)."""
    # submitit loads only when Slurm is used
    from submitit.helpers import clean_env

    conf = SlurmEnv().conf
    with clean_env():
        if conf is not None:
            os.environ[CONF] = conf
        yield


def _sbatch_words(error: BaseException) -> str:
    text = str(error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines) or type(error).__name__


_T = TypeVar("_T")


def submit_through_submitit(
    executor: Any, folder: Path, what: str, send: Callable[[], _T], *, clean: bool = False
) -> _T:
    """One submission through submitit (`send()` calls executor.submit or map_array).

    A request that no node of its partition can ever hold is refused first (EnvironmentProblem,
    nothing queued): sbatch would accept it and it would pend forever. Slurm refusing the job is
    EnvironmentProblem with sbatch's own words, said once: submitit prints them on stderr too,
    so its stderr is captured and dropped. `clean` hides an allocation's SLURM_* variables.
    """
    # submitit loads only when Slurm is used
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    problem = never_fits(executor.parameters)
    if problem is not None:
        raise EnvironmentProblem(f"Slurm would never start {what}: {problem}; nothing was queued")
    before = set(folder.glob(".submission_file_*.sh"))
    try:
        # umask 077: submitit's pickles and scripts, and (sbatch hands the umask on) the job's
        # logs and results are the user's only
        with tempfile.TemporaryFile(mode="w+") as captured, contextlib.redirect_stderr(
            captured
        ), (_clean_slurm_env() if clean else contextlib.nullcontext()), _without_rank_env(), \
                private_umask():
            return send()
    except (FailedJobError, FailedSubmissionError) as e:
        raise EnvironmentProblem(f"Slurm refused {what}: {_sbatch_words(e)}") from None
    finally:
        # submitit leaves a .submission_file_<uuid>.sh link per submission next to the logs;
        # the script itself is kept as <job id>_submission.sh.
        for link in set(folder.glob(".submission_file_*.sh")) - before:
            with contextlib.suppress(OSError):
                link.unlink()


def submit_job(spec: CheckSpec, opts: SlurmOptions, *, clean: bool = False) -> Submitted:
    """Submit `run_job(spec)` as a batch job (see submit_through_submitit for refusals)."""
    require_slurm("sbatch")
    folder = opts.folder()
    prepare_log_dir(folder)
    # submitit loads only when Slurm is used
    from submitit.slurm.slurm import SlurmExecutor

    executor = SlurmExecutor(folder=folder, python=node_python())  # guard.py checks, then runs
    executor.update_parameters(**executor_parameters(spec, opts))
    job = submit_through_submitit(
        executor, folder, "the job", lambda: executor.submit(run_job, spec.to_dict()), clean=clean
    )
    paths = job.paths
    return Submitted(
        job_id=str(job.job_id),
        folder=folder,
        stdout=paths.stdout,
        stderr=paths.stderr,
        submission_file=paths.submission_file,
    )
