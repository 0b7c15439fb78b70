"""The Slurm layer against the real local single-node cluster (scripts/slurm-local.sh).

Every job asks for 1 CPU and at most 1 GB, so that these tests and other suites' jobs share the
2-CPU node; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-local.sh"
BUGGY_TARGET = ROOT / "examples" / "buggy_target.py"
SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]
CLI = [sys.executable, "-m", "autograd_check"]

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def job_exit_code(job_id: str, timeout: float) -> int:
    """Once the job has ended (the controller's record): its exit code, 128 + the signal when
    a signal ended it, as `sbatch --wait` exits."""
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                               text=True, timeout=60).stdout
        state = re.search(r"\bJobState=(\S+)", shown)
        if state and state[1] in ENDED:
            found = re.search(r"\bExitCode=(\d+):(\d+)", shown)
            assert found, shown
            return 128 + int(found[2]) if int(found[2]) else int(found[1])
        assert time.monotonic() < deadline, f"job {job_id} did not end in {timeout} s: {shown}"
        time.sleep(0.2)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any Slurm allocation it may run in, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))
    }
    env.update(COLUMNS="120", NO_COLOR="1", AUTOGRAD_CHECK=" ".join(CLI), **extra)
    return env


def cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> (
    subprocess.CompletedProcess[str]
):
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env or clean_env()
    )


def salloc(*command: str, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run `command` inside a fresh allocation; (the process, the allocation's job id)."""
    done = subprocess.run(
        ["salloc", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=500M", "--time=5",
         "--job-name=agc-test-alloc", *command],
        capture_output=True, text=True, timeout=timeout, env=clean_env(),
    )
    granted = re.search(r"Granted job allocation (\d+)", done.stderr)
    assert granted, done.stderr
    return done, granted.group(1)


class Background:
    """The CLI running in the background, its stderr read as it comes: every wait is bounded and
    fails at once, with what the process said, when the process has ended."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=clean_env())
        assert self.proc.stderr is not None
        self._fd = self.proc.stderr.fileno()
        os.set_blocking(self._fd, False)
        self.said = b""  # stderr so far
        self._looked_at = 0  # whole lines of it already matched against

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)

    def _read(self) -> bool:
        """Take what stderr has now; False at its end (the process has ended)."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            self.said += chunk

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The next whole line of stderr with `pattern` in it, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            ended = not self._read() or self.proc.poll() is not None
            if ended:
                self._read()  # the last it wrote
            said = self.said.decode(errors="replace")
            lines = said.split("\n")[:-1]
            for index in range(self._looked_at, len(lines)):
                if found := re.search(pattern, lines[index]):
                    self._looked_at = index + 1
                    return found
            self._looked_at = len(lines)
            if ended:
                pytest.fail(f"the process ended (exit {self.proc.wait(timeout=30)}) before "
                            f"printing a line with {pattern!r}; its stderr:\n{said}")
            if time.monotonic() > deadline:
                pytest.fail(f"no line with {pattern!r} within {timeout} s; stderr so far:\n{said}")
            time.sleep(0.05)

    def finish(self, timeout: float) -> tuple[str, str]:
        """Wait (at most `timeout` s) for the process to end: its stdout, its whole stderr."""
        stdout, rest = self.proc.communicate(timeout=timeout)
        return stdout.decode(), (self.said + rest).decode()


PROGRESS = r"autograd-check: Slurm job {job}: (?P<state>{states})(?: on (?P<node>\S+))?" \
           r"(?: \((?P<reason>[^)]*)\))?, (?P<elapsed>\d+\.\d) s"
"""One line of `submit --wait`'s progress when stderr is not a terminal."""
LIFECYCLE = ["PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "COMPLETED", "CANCELLED"]


def progress_lines(lines: list[str], job_id: str) -> list[re.Match[str]]:
    """`lines` as progress lines of job `job_id`: each one the format, the states in the order of
    a job's life and the elapsed seconds never going back (fails on any other line)."""
    pattern = PROGRESS.format(job=job_id, states="|".join(LIFECYCLE))
    found = [re.fullmatch(pattern, line) for line in lines]
    assert found and all(found), lines
    matches = [m for m in found if m is not None]
    for m in matches:  # a node once the job has left the queue; a reason only while queued
        assert m["node"] is None if m["state"] == "PENDING" else m["reason"] is None, m[0]
    states = [LIFECYCLE.index(m["state"]) for m in matches]
    assert states == sorted(states), lines
    elapsed = [float(m["elapsed"]) for m in matches]
    assert elapsed == sorted(elapsed), lines
    return matches


def submitted_id(stderr: str) -> str:
    match = re.search(r"submitted Slurm job (\d+)", stderr)
    assert match, stderr
    return match.group(1)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def cancel_later() -> Iterator[list[str]]:
    """Job ids to scancel at the end of a test, whatever happens."""
    ids: list[str] = []
    yield ids
    for job_id in ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


class TestSubmit:
    def test_wait_passes_and_reattaches(self, log_dir: Path) -> None:
        done = cli("submit", "--wait", "--no-show-tensors", "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 0, done.stderr
        job_id = submitted_id(done.stderr)
        header = done.stdout.splitlines()[0]
        expected = rf"Slurm job {job_id} step 0 · node (\S+) · partition \S+ · COMPLETED"
        on = re.match(expected, header)
        assert on, header
        assert "PASS" in done.stdout and f"Slurm job {job_id}" in done.stdout
        # stderr: where the job and its logs went, then a line each time its state changed: it
        # was seen running (it runs for seconds, the wait asks at least every second) and ended
        # COMPLETED on the node the header names.
        lines = done.stderr.splitlines()
        assert lines[0] == f"autograd-check: submitted Slurm job {job_id}; logs in {log_dir}"
        progress = progress_lines(lines[1:], job_id)
        assert "RUNNING" in [m["state"] for m in progress], done.stderr
        assert progress[-1]["state"] == "COMPLETED" and progress[-1]["node"] == on[1], done.stderr
        # The log folder: private, no leftover submission links, the result there.
        assert log_dir.stat().st_mode & 0o777 == 0o700
        assert not list(log_dir.glob(".submission_file_*"))
        assert (log_dir / f"{job_id}_0_result.pkl").exists()

        status = cli("status", job_id, "--log-dir", str(log_dir), "--json")
        assert status.returncode == 0, status.stderr
        job = json.loads(status.stdout)["job"]
        assert job["state"] == "COMPLETED" and job["result_available"] and job["node"]
        human = cli("status", job_id, "--log-dir", str(log_dir))
        assert f"Slurm job {job_id}: COMPLETED" in human.stdout and "_0_log.out" in human.stdout

        result = cli("result", job_id, "--log-dir", str(log_dir), "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["environment"]["slurm"]["job_id"] == job_id

    def test_json_is_the_document_of_run(self, log_dir: Path) -> None:
        done = cli("submit", "--wait", "--json", "--shape", "4x5", "--seed", "3",
                   "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 0, done.stderr
        remote = json.loads(done.stdout)
        local = json.loads(cli("run", "--json", "--shape", "4x5", "--seed", "3").stdout)
        assert remote.keys() == local.keys()
        assert remote["spec"] == local["spec"] and remote["tensors"] == local["tensors"]
        assert remote["verdict"] == local["verdict"]
        slurm = remote["environment"]["slurm"]
        assert slurm["job_id"] == submitted_id(done.stderr) and slurm["node"]
        assert local["environment"]["slurm"] is None

    @pytest.mark.skipif(not BUGGY_TARGET.exists(), reason="examples/buggy_target.py not here")
    def test_a_failing_check_exits_1_from_the_node(self, log_dir: Path) -> None:
        done = cli("submit", "--wait", "--no-show-tensors", "--shape", "4x8",
                   "--target", f"{BUGGY_TARGET}:smooth_l1", "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 1, done.stderr
        assert "FAIL" in done.stdout and "Slurm job" in done.stdout

    def test_a_shape_too_big_for_the_job_is_bad_input_from_the_node(self, log_dir: Path) -> None:
        done = cli("submit", "--wait", "--shape", "20000x20000", "--log-dir", str(log_dir),
                   *SMALL)
        assert done.returncode == 2, done.stderr
        error = done.stderr.strip().splitlines()[-1]
        assert error.startswith("autograd-check: error: shape 20000x20000")
        assert "(on node" in error and "Traceback" not in done.stderr
        assert done.stdout == ""

    def test_cancelled_job_exits_4_with_its_state(
        self, log_dir: Path, cancel_later: list[str]
    ) -> None:
        """Cancelled while it runs (its set-up sleeps): the last progress line, the error with
        Slurm's state and exit code, and the log's tail, which is slurmstepd's cancel line."""
        with Background("submit", "--wait", "--setup", "sleep 120", "--log-dir", str(log_dir),
                        *SMALL) as submit:
            job_id = submit.wait_for_line(r"submitted Slurm job (\d+)", 120)[1]
            cancel_later.append(job_id)
            node = submit.wait_for_line(rf"Slurm job {job_id}: RUNNING on (\S+),", 120)[1]
            subprocess.run(["scancel", job_id], check=True, timeout=30)
            stdout, stderr = submit.finish(120)
        assert submit.proc.returncode == 4, stderr
        lines = stderr.splitlines()
        error = f"autograd-check: error: Slurm job {job_id} was cancelled (state CANCELLED, " \
                "exit code 0:15)"
        assert error in lines, stderr
        at = lines.index(error)
        progress = progress_lines(lines[1:at], job_id)
        assert progress[-1]["state"] == "CANCELLED" and progress[-1]["node"] == node, stderr
        assert lines[at + 1:at + 3] == ["last lines of the job's log:",
                                        f"  {log_dir}/{job_id}_0_log.err:"], stderr
        assert len(lines) == at + 4, stderr  # the set-up printed nothing: one line of log
        cancelled = rf"  slurmstepd-\S+: error: \*\*\* JOB {job_id} ON {node} CANCELLED AT \S+ "
        assert re.fullmatch(cancelled + r"\*\*\*", lines[-1]), stderr
        assert stdout == ""

    def test_timeout_bounds_the_wait(self, log_dir: Path, cancel_later: list[str]) -> None:
        start = time.monotonic()
        done = cli("submit", "--wait", "--setup", "sleep 120", "--log-dir", str(log_dir),
                   "--cpus", "1", "--mem", "500M", "--timeout", "3")
        cancel_later.append(submitted_id(done.stderr))
        assert done.returncode == 4, done.stderr
        assert "gave up waiting after 3 s" in done.stderr and "left alone" in done.stderr
        assert time.monotonic() - start < 60

    def test_unknown_partition_is_refused_with_slurms_words(self, log_dir: Path) -> None:
        done = cli("submit", "--wait", "--partition", "no-such-partition",
                   "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 3
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("autograd-check: error: Slurm refused the job: sbatch: error:")
        assert "partition" in lines[0].lower()

    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--cpus", "64", "--mem", "500M", "--wait"],
             "it asks for 64 CPUs and the largest node of partition"),
            (["--cpus", "1", "--mem", "500G", "--wait"], "512000 MB of memory (--mem)"),
            (["--cpus", "1", "--mem", "500M", "--time", "30-00:00:00", "--no-wait"],
             "--time 30-00:00:00 is above partition"),
            (["--cpus", "1", "--mem", "500M", "--gpus", "1", "--no-wait"], "GPU"),
        ],
    )
    def test_a_request_no_node_can_hold_is_refused_without_queueing(
        self, log_dir: Path, args: list[str], words: str
    ) -> None:
        """sbatch would queue these (or refuse some), and the job would pend forever: exit 3 at
        once, saying what was asked and what the partition offers."""
        name = f"agc-never-{os.getpid()}"
        start = time.monotonic()
        done = cli("submit", *args, "--timeout", "120", "--job-name", name,
                   "--log-dir", str(log_dir), timeout=60)
        assert done.returncode == 3, done.stderr
        line = done.stderr.strip()
        assert "\n" not in line
        assert line.startswith("autograd-check: error: Slurm would never start the job: ")
        assert line.endswith("; nothing was queued") and words in line
        assert done.stdout == ""
        assert time.monotonic() - start < 30, "refused at once, not after a wait"
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-n", name], capture_output=True,
                               text=True, timeout=30)
        assert queue.stdout.strip() == ""

    def test_a_queued_job_that_can_never_start_is_not_waited_for(
        self, log_dir: Path, cancel_later: list[str]
    ) -> None:
        """Jobs queued by plain sbatch (which accepts them): `status` says they will never
        start, `result --wait` cancels them and exits 3 instead of waiting for --timeout."""
        jobs = {}
        for reason, flags in (("PartitionConfig", ["--cpus-per-task=64", "--mem=500M"]),
                              ("PartitionTimeLimit", ["--time=30-00:00:00", "--mem=500M"])):
            done = subprocess.run(
                ["sbatch", "--parsable", "--job-name=agc-never", "--output=/dev/null", *flags,
                 "--wrap", "true"], capture_output=True, text=True, timeout=30, env=clean_env(),
            )
            assert done.returncode == 0, done.stderr
            jobs[reason] = done.stdout.strip().split(";")[0]
            cancel_later.append(jobs[reason])
        for reason, job_id in jobs.items():
            deadline = time.monotonic() + 30
            while True:  # the controller gives the reason once it has looked at the job
                status = cli("status", job_id, "--json", "--log-dir", str(log_dir))
                job = json.loads(status.stdout)["job"]
                if job["reason"] == reason or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert job["state"] == "PENDING" and job["reason"] == reason, job
            assert job["never_starts"], job
            if reason == "PartitionConfig":
                assert "it asks for 64 CPUs" in job["never_starts"]
            human = cli("status", job_id, "--log-dir", str(log_dir)).stdout
            assert f"Slurm will never start it: {job['never_starts']}; cancel it: scancel " \
                   f"{job_id}" in human
            start = time.monotonic()
            done = cli("result", job_id, "--wait", "--timeout", "120", "--log-dir", str(log_dir))
            assert done.returncode == 3, done.stderr
            assert f"will never start job {job_id}: it is PENDING ({reason})" in done.stderr
            assert "the job was cancelled" in done.stderr
            assert time.monotonic() - start < 60

    def test_ctrl_c_while_waiting_leaves_the_job_running(
        self, log_dir: Path, cancel_later: list[str]
    ) -> None:
        with Background("submit", "--wait", "--setup", "sleep 120", "--log-dir", str(log_dir),
                        *SMALL) as submit:
            job_id = submit.wait_for_line(r"submitted Slurm job (\d+)", 120)[1]
            cancel_later.append(job_id)
            submit.proc.send_signal(signal.SIGINT)
            stdout, stderr = submit.finish(60)
        assert submit.proc.returncode == 130, stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"autograd-check: stopped waiting; Slurm job {job_id} keeps "
                               "running"), stderr
        assert f"autograd-check result {job_id} --log-dir {log_dir} --wait" in last
        assert "Traceback" not in stderr and stdout == ""
        queue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True,
                               text=True, timeout=30)
        assert queue.stdout.strip() in ("PENDING", "CONFIGURING", "RUNNING"), queue.stdout

    def test_no_wait_then_result_wait(self, log_dir: Path) -> None:
        done = cli("submit", "--no-wait", "--json", "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 0, done.stderr
        job = json.loads(done.stdout)["job"]
        assert job["stdout"].endswith(f"{job['job_id']}_0_log.out")
        result = cli("result", job["job_id"], "--wait", "--timeout", "240",
                     "--log-dir", str(log_dir))
        assert result.returncode == 0, result.stderr
        assert f"Slurm job {job['job_id']}" in result.stdout and "PASS" in result.stdout

    def test_dry_run_submits_nothing(self, log_dir: Path) -> None:
        name = f"agc-dry-{os.getpid()}"
        done = cli("submit", "--dry-run", "--job-name", name, "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 0, done.stderr
        assert f"#SBATCH --job-name={name}" in done.stdout
        assert not log_dir.exists()
        queue = subprocess.run(["squeue", "-h", "-t", "all", "-n", name], capture_output=True,
                               text=True, timeout=30)
        assert queue.stdout.strip() == ""


class TestInsideAnAllocation:
    def test_submit_runs_as_a_step_of_the_allocation(self, log_dir: Path) -> None:
        done, alloc_id = salloc(*CLI, "submit", "--json", "--shape", "2x2",
                                "--log-dir", str(log_dir))
        assert done.returncode == 0, done.stderr
        slurm = json.loads(done.stdout)["environment"]["slurm"]
        assert slurm["job_id"] == alloc_id and slurm["step_id"] is not None
        assert f"step of Slurm job {alloc_id}" in done.stderr
        assert not log_dir.exists(), "no batch job was queued"

    def test_new_job_from_inside_an_allocation(self, log_dir: Path) -> None:
        done, alloc_id = salloc(
            "env", "SLURM_AGC_LEAK=leaked", *CLI, "submit", "--new-job", "--wait", "--json",
            "--setup", 'echo "inherited: ${SLURM_AGC_LEAK:-nothing}"',
            "--log-dir", str(log_dir), *SMALL,
        )
        assert done.returncode == 0, done.stderr
        job_id = submitted_id(done.stderr)
        assert job_id != alloc_id
        assert json.loads(done.stdout)["environment"]["slurm"]["job_id"] == job_id
        log = (log_dir / f"{job_id}_0_log.out").read_text()
        assert "inherited: nothing" in log  # the allocation's SLURM_* did not leak into the job

    def test_new_job_that_could_never_start_is_refused(self, log_dir: Path) -> None:
        """An allocation holding all of the node's memory: a new job would wait for it to end."""
        done = subprocess.run(
            ["salloc", "--nodes=1", "--ntasks=1", "--cpus-per-task=1", "--mem=0", "--time=2",
             *CLI, "submit", "--new-job", "--wait", "--log-dir", str(log_dir), *SMALL],
            capture_output=True, text=True, timeout=300, env=clean_env(),
        )
        assert done.returncode == 3, done.stderr
        assert "would wait until allocation" in done.stderr and "memory" in done.stderr
        assert not log_dir.exists()


class TestJobScripts:
    def sbatch(self, tmp_path: Path, *args: str) -> tuple[int, str]:
        """The job's exit code (as `sbatch --wait` gives it) and its log. Waited for here, at
        0.2 s: sbatch --wait looks after 2 s, then 8 s more (the local MinJobAge of 30 s lets
        it), so a 3 s job took 10 s."""
        done = subprocess.run(
            ["sbatch", "--parsable", f"--chdir={tmp_path}", *args],
            capture_output=True, text=True, timeout=60, env=clean_env(),
        )
        job_id = done.stdout.strip().split(";")[0]
        assert done.returncode == 0 and job_id.isdigit(), done.stderr
        code = job_exit_code(job_id, timeout=300)
        outputs = list(tmp_path.glob(f"*-{job_id}.out"))
        assert len(outputs) == 1, list(tmp_path.iterdir())
        return code, outputs[0].read_text()

    def test_cpu_script(self, tmp_path: Path) -> None:
        code, log = self.sbatch(
            tmp_path, "--mem=500M", str(ROOT / "jobs" / "autograd-check.sbatch"), "--shape", "4x4",
            "--json",
        )
        assert code == 0, log
        doc = json.loads(log[log.index("{"):])
        assert doc["verdict"]["passed"] and doc["environment"]["slurm"]["step_id"] == "0"

    def test_gpu_script(self, tmp_path: Path) -> None:
        """Without GPUs in this cluster: --gpus=0 on the command line beats the #SBATCH line, and
        the check on the node says there is no CUDA (exit 3); with --device cpu it passes."""
        script = str(ROOT / "jobs" / "autograd-check-gpu.sbatch")
        common = ["--gpus=0", "--mem=1G", "--cpus-per-task=1"]
        code, log = self.sbatch(tmp_path, *common, script, "--shape", "4x4")
        cuda = subprocess.run([*CLI, "env", "--json"], capture_output=True, text=True,
                              env=clean_env(), timeout=120).stdout
        if json.loads(cuda)["torch"]["cuda_available"]:
            assert code == 0, log
        else:
            assert code == 3, log
            assert "--device cuda" in log and "Traceback" not in log
        code, log = self.sbatch(tmp_path, *common, script, "--shape", "4x4", "--device", "cpu")
        assert code == 0, log
        assert "PASS" in log

    def test_interactive_script(self, log_dir: Path) -> None:
        done = subprocess.run(
            [str(ROOT / "jobs" / "interactive.sh"), "--shape", "2x2", "--json",
             "--log-dir", str(log_dir)],
            capture_output=True, text=True, timeout=300, env=clean_env(),
        )
        assert done.returncode == 0, done.stderr
        granted = re.search(r"Granted job allocation (\d+)", done.stderr)
        assert granted, done.stderr
        slurm = json.loads(done.stdout)["environment"]["slurm"]
        assert slurm["job_id"] == granted.group(1) and slurm["step_id"] is not None


def test_accounting_off_falls_back_to_the_controller(log_dir: Path) -> None:
    """With accounting disabled sacct fails; waits and status come from scontrol/squeue."""

    def cluster(*args: str) -> None:
        done = subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

    cluster("accounting", "off")
    try:
        sacct = subprocess.run(["sacct", "-n", "-X"], capture_output=True, text=True, timeout=30)
        assert sacct.returncode != 0
        env = json.loads(cli("env", "--json").stdout)
        assert env["slurm"]["accounting"]["works"] is False
        done = cli("submit", "--wait", "--json", "--log-dir", str(log_dir), *SMALL)
        assert done.returncode == 0, done.stderr
        job_id = submitted_id(done.stderr)
        status = json.loads(cli("status", job_id, "--log-dir", str(log_dir), "--json").stdout)
        assert status["job"]["state"] == "COMPLETED"
        assert status["job"]["source"] in ("scontrol", "squeue", "result file")
    finally:
        cluster("accounting", "on")
