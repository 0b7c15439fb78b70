"""Would Slurm ever start it? A request above every node of its partition, judged without a
cluster from the records scontrol prints; and waits bounded even when Slurm's commands hang."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from autograd_check.base.errors import EnvironmentProblem, JobFailed
from autograd_check.base.spec import CheckSpec
from autograd_check.slurm import admission, commands, watch
from autograd_check.slurm.admission import (
    NEVER_STARTS,
    Request,
    default_job_mem_mb,
    fit_problem,
    never_starts,
    reason_word,
    request_of_job,
    request_of_params,
)
from autograd_check.slurm.batch import executor_parameters
from autograd_check.slurm.commands import CALL_FLOOR_S, JobInfo, parse_scontrol_record
from autograd_check.slurm.log_dir import job_paths
from autograd_check.slurm.options import SlurmOptions
from autograd_check.slurm.watch import wait_for_job

# What `scontrol show ... -o` prints on the local test cluster (one 2-CPU, 8000 MB node), plus
# a GPU partition.
PARTS = [
    parse_scontrol_record(line)
    for line in (
        "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=01:00:00 "
        "MaxCPUsPerNode=UNLIMITED Nodes=vm State=UP DefMemPerNode=UNLIMITED "
        "MaxMemPerNode=UNLIMITED",
        "PartitionName=gpu AllowGroups=ALL Default=NO MaxTime=2-00:00:00 Nodes=g[1-2] State=UP "
        "MaxCPUsPerNode=32 MaxMemPerNode=UNLIMITED",
    )
]
NODES = [
    parse_scontrol_record(line)
    for line in (
        "NodeName=vm Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUEfctv=2 CPUTot=2 Gres=(null) "
        "RealMemory=8000 AllocMem=0 State=IDLE Partitions=debug",
        "NodeName=g1 CPUTot=64 CPUEfctv=64 Gres=gpu:a100:4(S:0-1) RealMemory=512000 "
        "MemSpecLimit=2000 State=IDLE Partitions=gpu",
        "NodeName=g2 CPUTot=64 CPUEfctv=64 Gres=gpu:a100:8(S:0-1),mps:100 RealMemory=256000 "
        "State=DRAIN Partitions=gpu",
    )
]
CONFIG = {"SelectTypeParameters": "CR_CORE_MEMORY", "DefMemPerCPU": "1000"}


def problem(**request: Any) -> str | None:
    return fit_problem(Request(**request), PARTS, NODES, CONFIG)


class TestFit:
    def test_a_request_that_fits_has_no_problem(self) -> None:
        assert problem(cpus=2, mem_mb=8000, time_min=60) is None
        assert problem(partitions=("gpu",), cpus=32, gpus=8, mem_mb=510000) is None

    def test_more_cpus_than_any_node(self) -> None:
        said = problem(cpus=64, mem_mb=500)
        assert said == "it asks for 64 CPUs and the largest node of partition debug has 2 (vm)"

    def test_the_partitions_cpu_limit_counts(self) -> None:
        said = problem(partitions=("gpu",), cpus=33)
        assert said is not None and "33 CPUs" in said and "has 32" in said

    def test_more_memory_than_any_node(self) -> None:
        said = problem(mem_mb=8001)
        assert said is not None and "8001 MB of memory (--mem)" in said and "8000 MB" in said
        # MemSpecLimit is memory the job never gets.
        assert problem(partitions=("gpu",), mem_mb=510001) is not None

    def test_default_memory_per_cpu(self) -> None:
        said = problem(cpus=2, default_mem=True)
        assert said is None  # 2 x 1000 MB fit
        config = {**CONFIG, "DefMemPerCPU": "5000"}
        said = fit_problem(Request(cpus=2, default_mem=True), PARTS, NODES, config)
        assert said is not None and "5000 MB per CPU x 2 CPUs" in said
        # Without memory as a consumable resource, a default blocks nothing.
        plain = {"SelectTypeParameters": "CR_CORE", "DefMemPerCPU": "5000"}
        assert fit_problem(Request(cpus=2, default_mem=True), PARTS, NODES, plain) is None

    def test_what_a_new_job_without_mem_holds_follows_the_same_defaults(self) -> None:
        """The job a --new-job inside an allocation would start: the partition's default
        first, then the cluster's, else the whole node; nothing where memory is not consumed."""
        debug, gpu = PARTS
        assert default_job_mem_mb(8000, 2, debug, CONFIG) == 2000
        assert default_job_mem_mb(8000, 2, {**debug, "DefMemPerCPU": "300"}, CONFIG) == 600
        assert default_job_mem_mb(8000, 2, {**debug, "DefMemPerNode": "700"}, CONFIG) == 700
        consumed = {"SelectTypeParameters": "CR_CORE_MEMORY"}
        assert default_job_mem_mb(8000, 2, gpu, consumed) == 8000
        assert default_job_mem_mb(8000, 2, debug, {"SelectTypeParameters": "CR_CORE"}) == 0
        assert default_job_mem_mb(8000, 2, debug, {}) == 0  # no answer: no claim

    def test_gpus(self) -> None:
        said = problem(gpus=1)
        assert said == "it asks for 1 GPU(s) per node and the nodes of partition debug have none"
        # g2 is drained, not gone: its 8 GPUs still count (it may come back).
        assert problem(partitions=("gpu",), gpus=8) is None
        assert "at most 8" in str(problem(partitions=("gpu",), gpus=9))

    def test_time_above_the_limit(self) -> None:
        said = problem(time_min=90)
        assert said == "--time 01:30:00 is above partition debug's time limit 01:00:00"
        assert problem(partitions=("gpu",), time_min=2 * 24 * 60) is None

    def test_several_problems_are_all_said(self) -> None:
        said = str(problem(cpus=64, mem_mb=9000, time_min=90))
        assert said.count(";") == 2 and "CPUs" in said and "memory" in said and "time" in said

    def test_several_partitions_one_that_fits_is_enough(self) -> None:
        assert problem(partitions=("debug", "gpu"), cpus=16) is None
        said = problem(partitions=("debug", "gpu"), cpus=100)
        assert said is not None and "partition debug" in said and "partition gpu" in said

    def test_an_unknown_partition_is_left_to_sbatch(self) -> None:
        assert problem(partitions=("nosuch",), cpus=1000) is None
        assert problem(partitions=("debug", "nosuch"), cpus=1000) is None

    def test_no_default_partition_no_verdict(self) -> None:
        """Without a partition named or a default one, sbatch decides: no verdict, where the
        same request against the default partition is refused."""
        assert "1000 CPUs" in str(fit_problem(Request(cpus=1000), PARTS, NODES, CONFIG))
        parts = [{**p, "Default": "NO"} for p in PARTS]
        assert fit_problem(Request(cpus=1000), parts, NODES, CONFIG) is None


class TestRequests:
    def test_from_executor_parameters(self) -> None:
        opts = SlurmOptions(cpus=4, mem="2G", time_min=30, partition="debug,gpu")
        request = request_of_params(executor_parameters(CheckSpec(device="cuda"), opts))
        assert request == Request(partitions=("debug", "gpu"), cpus=4, mem_mb=2048, gpus=1,
                                  time_min=30)

    def test_defaults_and_sbatch_args(self) -> None:
        request = request_of_params(executor_parameters(CheckSpec(), SlurmOptions()))
        assert request == Request(cpus=1, default_mem=True, time_min=10)
        gres = SlurmOptions(sbatch_args=(("gres", "gpu:a100:2,mps:10"), ("mem-per-cpu", "1G")))
        request = request_of_params(executor_parameters(CheckSpec(device="cuda"), gres))
        assert request is not None and request.gpus == 2 and not request.default_mem
        gpus = SlurmOptions(sbatch_args=(("gpus", "a100:3"),))
        assert request_of_params(executor_parameters(CheckSpec(), gpus)).gpus == 3  # type: ignore[union-attr]

    def test_qos_or_another_cluster(self) -> None:
        # A QOS may lift the partition's time limit; another cluster has other partitions.
        qos = request_of_params(executor_parameters(CheckSpec(), SlurmOptions(qos="long")))
        assert qos is not None and qos.time_min is None
        other = SlurmOptions(sbatch_args=(("clusters", "far"),))
        assert request_of_params(executor_parameters(CheckSpec(), other)) is None

    def test_from_a_queued_job(self) -> None:
        rec = parse_scontrol_record(
            "JobId=429 JobName=wrap JobState=PENDING Reason=PartitionConfig Partition=debug "
            "NumCPUs=64 MinCPUsNode=64 MinMemoryCPU=1000M TresPerNode=gres:gpu:2"
        )
        request = request_of_job(rec)
        assert (request.cpus, request.mem_mb, request.gpus) == (64, 64000, 2)
        assert request.mem_from == "1000 MB per CPU x 64 CPUs" and request.time_min is None
        newer = parse_scontrol_record("JobId=5 Partition=gpu MinCPUsNode=1 MinMemoryNode=1G "
                                      "TresPerJob=gres/gpu:a100:3")
        assert (request_of_job(newer).mem_mb, request_of_job(newer).gpus) == (1024, 3)


class FakeSlurm:
    """Canned answers of scontrol/scancel by command, every call recorded with its timeout."""

    def __init__(self, job_line: str, *, clock: FakeClock | None = None) -> None:
        self.job_line = job_line
        self.clock = clock
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, cmd: Sequence[str], timeout: float = 15) -> Any:
        cmd = list(cmd)
        self.calls.append((cmd, timeout))
        if self.clock is not None:  # every command hangs until its timeout
            self.clock.t += timeout
            return None
        out = {
            ("scontrol", "show", "job"): self.job_line,
            ("scontrol", "show", "partition"): "PartitionName=debug Default=YES Nodes=vm",
            ("scontrol", "show", "node"): "NodeName=vm CPUTot=2 RealMemory=8000 Partitions=debug",
            ("scontrol", "show", "config"): "SelectTypeParameters = CR_CORE_MEMORY",
            ("scancel",): "",
        }
        for prefix, text in out.items():
            if tuple(cmd[: len(prefix)]) == prefix:
                return subprocess.CompletedProcess(cmd, 0, text + "\n", "")
        return None

    def ran(self, word: str) -> bool:
        return any(word in " ".join(cmd) for cmd, _ in self.calls)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def patch_run(monkeypatch: pytest.MonkeyPatch, fake: FakeSlurm) -> None:
    """The fake answers every Slurm command a wait runs: job_info and scancel (watch.py) and
    never_starts (admission.py) each look `run_command` up in their own module."""
    for module in (watch, admission):
        monkeypatch.setattr(module, "run_command", fake)


def patch_clock(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> None:
    """The wait (watch.py) and every command's budget (commands.call_budget) read the fake clock."""
    for module in (watch, commands):
        monkeypatch.setattr(module, "time", clock)


PENDING = "JobId=7 JobState=PENDING Reason={reason} Partition=debug MinCPUsNode={cpus} " \
          "MinMemoryNode=500M"


class TestNeverStarts:
    def test_reasons_that_always_mean_never(self) -> None:
        info = JobInfo("7", "PENDING", "squeue", reason="PartitionTimeLimit")
        assert never_starts(info) == NEVER_STARTS["PartitionTimeLimit"]

    def test_ordinary_waits(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fake = FakeSlurm(PENDING.format(reason="Priority", cpus=64))
        monkeypatch.setattr(admission, "run_command", fake)
        assert never_starts(JobInfo("7", "PENDING", "scontrol", reason="Priority")) is None
        assert never_starts(JobInfo("7", "RUNNING", "scontrol", reason="PartitionConfig")) is None
        assert not fake.calls, "an ordinary reason asks nothing more"

    def test_partition_config_only_when_the_request_is_too_big(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(admission, "run_command",
                            FakeSlurm(PENDING.format(reason="PartitionConfig", cpus=64)))
        info = JobInfo("7", "PENDING", "scontrol", reason="PartitionConfig")
        assert "64 CPUs" in str(never_starts(info))
        # An ordinary job may show PartitionConfig for a moment: it fits, so it is waited for.
        monkeypatch.setattr(admission, "run_command",
                            FakeSlurm(PENDING.format(reason="PartitionConfig", cpus=1)))
        assert never_starts(info) is None

    def test_reason_word(self) -> None:
        assert reason_word("ReqNodeNotAvail, UnavailableNodes:vm") == "ReqNodeNotAvail"
        assert reason_word("PartitionConfig") == "PartitionConfig"


class TestWaitForJob:
    def test_cancels_a_job_too_big_for_its_partition(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        fake = FakeSlurm(PENDING.format(reason="PartitionConfig", cpus=64))
        patch_run(monkeypatch, fake)
        with pytest.raises(EnvironmentProblem, match=r"will never start job 7: it is PENDING "
                           r"\(PartitionConfig\): it asks for 64 CPUs.*the job was cancelled"):
            wait_for_job("7", tmp_path, 30, sleep=lambda s: None)
        assert fake.ran("scancel 7")
        assert fake.ran("scontrol show node -o vm"), "only the partition's nodes are asked for"

    def test_every_command_gets_what_is_left_of_the_timeout(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """scontrol, squeue and sacct all hang: the wait still ends by --timeout (plus the floor
        of the one command asked at the deadline), not three 15 s timeouts later."""
        clock = FakeClock()
        fake = FakeSlurm("", clock=clock)
        patch_run(monkeypatch, fake)
        patch_clock(monkeypatch, clock)
        start = clock.t
        with pytest.raises(JobFailed, match="gave up waiting after 20 s"):
            wait_for_job("7", tmp_path, 20, sleep=clock.sleep)
        assert clock.t - start <= 20 + 3 * CALL_FLOOR_S
        assert [timeout for _, timeout in fake.calls] == [15, 5, CALL_FLOOR_S]

    def test_the_result_grace_ends_at_the_deadline(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        clock = FakeClock()
        patch_clock(monkeypatch, clock)
        paths = job_paths(tmp_path, "7")
        done = JobInfo("7", "COMPLETED", "scontrol")
        start = clock.t
        watch._settle(done, paths, clock.sleep, deadline=start + 2)
        assert 2 <= clock.t - start <= 2.01
        start = clock.t  # the deadline has passed: only the floor
        watch._settle(done, paths, clock.sleep, deadline=start - 5)
        assert clock.t - start <= CALL_FLOOR_S + 0.01
        start = clock.t  # no deadline: the whole grace
        watch._settle(done, paths, clock.sleep)
        assert clock.t - start >= watch.RESULT_GRACE_S
