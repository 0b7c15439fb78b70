"""Shared fixtures: a pinned terminal for CLI tests, and the real local Slurm cluster.

Every test that needs Slurm carries the `slurm` marker (checked at collection below), so
`python -m pytest -m "not slurm"` is the quick loop and needs no Slurm at all.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-local.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich output without colour and at a fixed width, so assertions see plain text."""
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERMINAL_WIDTH", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """One torch thread in each process that runs tests. The suite runs in two processes on two
    cores (pyproject's `-n 2`), and the checks it runs in-process are many short ops: with a
    thread per core each op ends in an OpenMP barrier that waits for a thread the other process
    holds off its core (as finite_diff.CPU_THREADS says), which made a 256x256 projection check
    take seconds instead of 50 ms. Checks run by the CLI, by ranks and by Slurm jobs keep
    torch's default; a test that needs another count sets it and puts it back."""
    import torch

    torch.set_num_threads(1)


def _cluster_reason() -> str | None:
    """None when a usable Slurm is up, else why not. Only looks: pytest installs and starts
    nothing; bringing the cluster up is the test set-up's job (the README's test command)."""
    bring_up = "bring it up first: bash scripts/slurm-local.sh up (as root)"
    if not shutil.which("sbatch"):
        return f"no Slurm here (sbatch is not on PATH); {bring_up}"
    status = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60
    )
    if status.returncode != 0:
        said = "; ".join(  # what is wrong: the status lines other than a running daemon's
            " ".join(line.split()) for line in (status.stdout + status.stderr).splitlines()
            if line.strip() and "running (pid" not in line
        )
        return f"the local Slurm cluster is not usable ({said}); {bring_up}"
    return None


# tryfirst: the xdist_group mark must be on the items before pytest-xdist reads it (its own
# collection hook in each worker).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the cluster must say so with `@pytest.mark.slurm`, or `-m "not slurm"`
    would run it. A test marked `fsdp` skips, saying why, on a torch whose FSDP2 cannot run on
    the CPU (the check refuses it there: torch_features.py).

    Every `slurm` test is in one xdist group, so that they all run in one worker, one after
    another (pyproject's `-n 2 --dist loadgroup`): the node has 2 CPUs, and a job of one test
    would hold them while another test's job waits. They mostly wait on the scheduler; the
    other worker runs the rest of the suite beside them."""
    from autograd_check.base.torch_features import parallel_problem, torch_version

    no_fsdp = parallel_problem("fsdp", "cpu", torch_version())
    for item in items:
        if no_fsdp is not None and item.get_closest_marker("fsdp") is not None:
            item.add_marker(pytest.mark.skip(reason=no_fsdp))
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
    unmarked = [item.nodeid for item in items
                if "slurm_cluster" in getattr(item, "fixturenames", ())
                and item.get_closest_marker("slurm") is None]
    if unmarked:
        raise pytest.UsageError(
            "these tests use the slurm_cluster fixture without @pytest.mark.slurm: "
            + ", ".join(unmarked)
        )


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The real single-node Slurm (scripts/slurm-local.sh, brought up before pytest); skips
    without it, saying how to bring it up; fails instead if CI=true."""
    reason = _cluster_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true and Slurm is not usable: {reason}")
        pytest.skip(reason)
    before = _queued()
    yield
    _nothing_left_queued(before)


def _queued() -> dict[str, str]:
    """Job id -> 'name state work-folder' for every job in the queue."""
    listed = subprocess.run(["squeue", "-h", "-o", "%i|%j %T %Z"], capture_output=True,
                            text=True, timeout=60)
    return dict(line.partition("|")[::2] for line in listed.stdout.splitlines() if line)


def _nothing_left_queued(before: dict[str, str], grace_s: float = 30.0) -> None:
    """At the end of the session: the suite's tests (and the docs runs) cancel or wait for what
    they queued, so no job that was not queued before the first Slurm test is left; one that is
    (after a grace for jobs that are just ending) is cancelled, and the session fails naming it.
    """
    deadline = time.monotonic() + grace_s
    while True:
        left = {job: what for job, what in _queued().items() if job not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    if left:
        subprocess.run(["scancel", *left], capture_output=True, timeout=60)
        pytest.fail("the test session left jobs in the Slurm queue (now cancelled): "
                    + "; ".join(f"{job} {what}" for job, what in sorted(left.items())))


@pytest.fixture
def two_node_cluster(slurm_cluster: None) -> Iterator[None]:
    """The local cluster with two compute nodes, n1 and n2, each slurmd in its own network and
    UTS namespace (`scripts/slurm-local.sh up --nodes 2`), for one test; then the single node
    again (`up`), whatever the test did. Tests using it need `@pytest.mark.slurm` too."""
    def cluster(*args: str) -> None:
        done = subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            pytest.fail(f"scripts/slurm-local.sh {' '.join(args)} failed:\n{done.stderr}")

    try:
        cluster("up", "--nodes", "2")
        yield
    finally:
        cluster("up")


@pytest.fixture(scope="module")
def finished_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A log folder holding the answer of a finished job, as the node leaves it."""
    from autograd_check.base.spec import CheckSpec
    from autograd_check.slurm.log_dir import job_paths
    from autograd_check.slurm.node import run_job

    folder = tmp_path_factory.mktemp("logs")
    folder.chmod(0o700)
    job_id = "4242"
    with open(job_paths(folder, job_id).result_pickle, "wb") as f:
        pickle.dump(("success", run_job(CheckSpec(shape=(2, 2)).to_dict())), f)
    return folder, job_id


# A shell starts a background job (`cmd &`) with SIGINT ignored, `nohup` ignores SIGHUP, and the
# children the tests start would inherit that: the signal tests would send what nobody hears. A
# Python handler here is reset to the default in every child (exec), so the suite behaves the
# same however it is started; pytest itself still outlives a hang-up under nohup.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, lambda signum, frame: None)
