"""Failures that must never escape as a traceback with exit 1 (issue 10, items 3 and 9).

Exit 1 means a gradient mismatch and nothing else: each case here is fed as a user would meet it
(CliRunner, or a real process where signals, pipes or byte-named files are involved) and must end
with its own exit code and one line on stderr, `autograd-check: error: ...`, never a traceback.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.sweep.store import Store, record_problem

runner = CliRunner()
CLI = [sys.executable, "-m", "autograd_check"]
BIG = "9" * 5000
"""Past Python's int-from-text limit (4300 digits)."""
ERROR = "autograd-check: error:"


def error_line(stderr: str, *, alone: bool = True) -> str:
    """The one error line on stderr (with `alone`, the only line there); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(ERROR)]
    assert len(errors) == 1, stderr
    if alone:
        assert lines == errors, stderr
    return errors[0]


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def local_sweep(out: Path, seeds: str = "0-2") -> None:
    code, _, stderr = cli("sweep", "--local", "--seeds", seeds, "--out", str(out))
    assert code == 0, stderr


def key_of(out: Path, seed: int) -> str:
    return f"3x8_float32_cpu_mse-sum_seed{seed}"


# -- item 3 ---------------------------------------------------------------------------------------
WRONG_SHAPES: dict[str, Any] = {
    "statistics a string": {"statistics": "oops"},
    "statistics of numbers": {"statistics": [1, 2]},
    "verdict a number": {"verdict": 3},
    "verdict without passed": {"verdict": {"bit_exact": True}},
    "environment a string": {"environment": "here"},
    "slurm ids a list": {"environment": {"slurm": [1]}},
    "mismatched a word": {"statistics": [{"name": "predicted", "mismatched": "many"}]},
    "error a string": {"error": "boom"},
    "case a list": {"case": [1]},
}


class TestRecordOfTheWrongShape:
    """Valid JSON, wrong shape: set aside like an unreadable record; the rest of the report
    stands, and resume runs the case again."""

    @pytest.fixture(scope="class")
    def good(self, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
        out = tmp_path_factory.mktemp("sweep") / "out"
        local_sweep(out)
        store = Store(out)
        doc = store.read_record(key_of(out, 1))
        assert doc is not None
        return out, doc

    @pytest.mark.parametrize("change", WRONG_SHAPES.values(), ids=list(WRONG_SHAPES))
    def test_store_names_the_problem(self, good: tuple[Path, dict[str, Any]],
                                     change: dict[str, Any]) -> None:
        _, doc = good
        grid_id = doc["case"]["grid_id"]
        assert record_problem(doc, grid_id) is None
        bad = {**doc, **change}
        assert record_problem(bad, grid_id) is not None
        assert record_problem([doc], grid_id) is not None

    @pytest.mark.parametrize("change", WRONG_SHAPES.values(), ids=list(WRONG_SHAPES))
    def test_report_sets_it_aside_and_resume_runs_it_again(
        self, good: tuple[Path, dict[str, Any]], tmp_path: Path, change: dict[str, Any]
    ) -> None:
        import shutil

        out = tmp_path / "out"
        shutil.copytree(good[0], out)
        key = key_of(out, 1)
        path = Store(out).record_path(key)
        path.write_text(json.dumps({**good[1], **change}))

        code, stdout, stderr = cli("report", str(out), "--json")
        assert code == 4, stderr  # one case missing: the other two stand
        assert "Traceback" not in stderr
        report = json.loads(stdout)
        assert report["counts"] == {"passed": 2, "failed": 0, "error": 0, "missing": 1}
        assert key in report["ignored_records"]
        code, _, stderr = cli("report", str(out))
        assert code == 4 and "Traceback" not in stderr

        code, stdout, stderr = cli("sweep", "--local", "--seeds", "0-2", "--out", str(out),
                                   "--json")
        assert code == 0, stderr
        assert json.loads(stdout)["counts"]["passed"] == 3
        assert Store(out).problem_of(key, report["grid_id"]) is None

    def test_a_list_at_top_level(self, good: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
        import shutil

        out = tmp_path / "out"
        shutil.copytree(good[0], out)
        Store(out).record_path(key_of(out, 0)).write_text("[1, 2]")
        code, stdout, stderr = cli("report", str(out), "--json")
        assert code == 4 and "Traceback" not in stderr
        assert json.loads(stdout)["counts"]["passed"] == 2



@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished local sweep of three passing cases (not to be changed: copy it first)."""
    out = tmp_path_factory.mktemp("swept") / "out"
    local_sweep(out)
    return out


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (root only), unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


class TestFullDisk:
    def test_a_sweep_that_fills_the_disk(self, small_disk: Path) -> None:
        out = small_disk / "out"
        code, _, stderr = cli("sweep", "--local", "--seeds", "0-59", "--out", str(out))
        assert code == 3, stderr
        line = error_line(stderr, alone=False)
        assert str(out) in line and "No space left" in line
        store = Store(out)
        kept = store.recorded_keys()
        assert kept, "the records written before the disk filled stay"
        manifest = store.read_manifest()
        assert manifest is not None
        for key in kept:
            assert store.problem_of(key, manifest["grid_id"]) is None
        leftovers = [p.name for p in out.rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []
        code, _, stderr = cli("report", str(out))
        assert code == 4 and "Traceback" not in stderr  # the rest is missing, not an error


class TestResultPickle:
    @pytest.mark.parametrize("content", [
        pytest.param(b"truncated", id="truncated"),
        pytest.param(b"", id="empty"),
        pytest.param(pickle.dumps("not a pair"), id="wrong-shape"),
    ])
    def test_a_result_file_that_cannot_be_read(self, tmp_path: Path, finished_job: tuple[Path, str],
                                               content: bytes) -> None:
        from autograd_check.slurm.log_dir import job_paths

        folder = tmp_path / "logs"
        folder.mkdir(mode=0o700)
        result = job_paths(folder, "4242").result_pickle
        if content == b"truncated":
            whole = job_paths(finished_job[0], finished_job[1]).result_pickle.read_bytes()
            content = whole[: len(whole) // 2]
        result.write_bytes(content)
        result.chmod(0o600)
        code, _, stderr = cli("result", "4242", "--log-dir", str(folder))
        assert code == 3, stderr
        assert str(result) in error_line(stderr)
        code, stdout, stderr = cli("result", "4242", "--log-dir", str(folder), "--json")
        assert code == 3 and json.loads(stdout)["error"]["exit_code"] == 3


def run_cli(
    args: Sequence[str | bytes], cwd: Path, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LC_ALL": "C.UTF-8", "NO_COLOR": "1", "COLUMNS": "120"}
    kwargs.setdefault("stdout", subprocess.PIPE)
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, stderr=subprocess.PIPE, text=True,
                          errors="backslashreplace", timeout=120, check=False, **kwargs)


LOSS = """
def loss(predicted, real):
    return ((predicted - real) ** 2).sum()

def manual_grad(predicted, real):
    return 2 * (predicted - real)
"""


class TestNonUtf8TargetName:
    @pytest.fixture
    def byte_named(self, tmp_path: Path) -> Path:
        (Path(os.fsdecode(bytes(tmp_path) + b"/\xff.py"))).write_text(LOSS)
        return tmp_path

    @pytest.mark.parametrize("args", [
        ["run", "--target", b"\xff.py"],
        ["run", "--target", b"\xff.py:loss"],
        ["submit", "--dry-run", "--target", b"\xff.py"],
        ["sweep", "--local", "--dry-run", "--out", "o", "--target", b"\xff.py"],
    ], ids=["run", "run-name", "submit", "sweep"])
    def test_refused_in_one_line(self, byte_named: Path, args: list[str | bytes]) -> None:
        done = run_cli(args, byte_named)
        assert done.returncode == 2, done.stderr
        assert "UTF-8" in error_line(done.stderr)
        done = run_cli([*args, "--json"], byte_named)
        assert done.returncode == 2, done.stderr
        error_line(done.stderr)
        assert json.loads(done.stdout)["error"]["exit_code"] == 2

    def test_a_folder_with_a_non_utf8_name(self, tmp_path: Path) -> None:
        folder = Path(os.fsdecode(bytes(tmp_path) + b"/d\xff"))
        folder.mkdir()
        (folder / "t.py").write_text(LOSS)
        done = run_cli(["run", "--target", "t.py", "--json"], folder)
        assert done.returncode == 2, done.stderr
        assert "UTF-8" in error_line(done.stderr)
        assert json.loads(done.stdout)["error"]["exit_code"] == 2


class TestHugeNumbers:
    @pytest.mark.parametrize("args", [
        ["run", "--seed", BIG],
        ["run", "--shape", f"3x{BIG}"],
        ["run", "--shape", f"{BIG},2"],
        ["run", "--model", "mlp", "--hidden", BIG],
        ["run", "--reference", "finite-diff", "--max-fd-elements", BIG],
        ["run", "--repeat", BIG],
        ["sweep", "--dry-run", "--local", "--seeds", f"0-{BIG}"],
        ["sweep", "--dry-run", "--local", "--seeds", f"{BIG}-{BIG}"],
        ["sweep", "--dry-run", "--local", "--seeds", BIG],
        ["sweep", "--dry-run", "--local", "--shapes", f"3x{BIG}"],
        ["sweep", "--dry-run", "--slurm", "--cases-per-task", BIG],
        ["sweep", "--dry-run", "--slurm", "--max-parallel", BIG],
        ["sweep", "--dry-run", "--local", "--max-cases", BIG],
        ["submit", "--dry-run", "--mem", BIG],
        ["submit", "--dry-run", "--mem", f"{BIG}G"],
        ["submit", "--dry-run", "--time", BIG],
        ["submit", "--dry-run", "--time", f"1-{BIG}"],
        ["submit", "--dry-run", "--time", f"{BIG}:00"],
        ["submit", "--dry-run", "--gpus", BIG],
        ["submit", "--dry-run", "--cpus", BIG],
        ["submit", "--dry-run", "--timeout", BIG],
        ["status", BIG],
        ["result", BIG],
        ["result", f"1_{BIG}"],
    ], ids=lambda a: " ".join(a).replace(BIG, "BIG"))
    def test_one_clear_line(self, args: list[str], tmp_path: Path) -> None:
        if args[0] == "sweep":
            args = [*args, "--out", str(tmp_path / "out")]
        code, _, stderr = cli(*args)
        assert code == 2, stderr
        assert len(error_line(stderr)) < 400

    @pytest.mark.parametrize("table", ["[check]\nseed", "[slurm]\ngpus", "[sweep]\nmax_cases"])
    def test_in_a_config_file(self, tmp_path: Path, table: str) -> None:
        config = tmp_path / "c.toml"
        config.write_text(f"{table} = {BIG}\n")
        for args in (["run"], ["sweep", "--dry-run", "--local", "--out", str(tmp_path / "o")]):
            code, _, stderr = cli(*args, "--config", str(config))
            assert code == 2, stderr
            line = error_line(stderr)
            assert str(config) in line and len(line) < 400


class TestPlotFile:
    def test_an_unsupported_format(self, swept: Path, tmp_path: Path) -> None:
        target = tmp_path / "x.exe"
        code, stdout, stderr = cli("report", str(swept), "--plot", str(target))
        assert code == 2, stderr
        line = error_line(stderr)
        assert ".png" in line and ".pdf" in line and ".svg" in line
        assert stdout == "" and not target.exists()

    @pytest.mark.parametrize("name", ["folder", "noext"])
    def test_a_folder_or_no_format(self, swept: Path, tmp_path: Path, name: str) -> None:
        target = tmp_path / name
        if name == "folder":
            target.mkdir()
        code, stdout, stderr = cli("report", str(swept), "--plot", str(target))
        assert code == 2, stderr
        assert str(target) in error_line(stderr)
        assert stdout == ""
        assert sorted(p.name for p in tmp_path.iterdir()) == (["folder"] if name == "folder"
                                                               else [])


# -- item 9 ---------------------------------------------------------------------------------------
class TestSlurmTableOfConfig:
    @pytest.mark.parametrize("body", ["bogus = 1", 'mem = "lots"'])
    @pytest.mark.parametrize("command", ["run", "sweep"])
    def test_refused_by_every_command(self, tmp_path: Path, body: str, command: str) -> None:
        config = tmp_path / "c.toml"
        config.write_text(f"[slurm]\n{body}\n")
        args = ["run"] if command == "run" else ["sweep", "--local", "--out", str(tmp_path / "o")]
        code, _, stderr = cli(*args, "--config", str(config))
        assert code == 2, stderr
        line = error_line(stderr)
        assert "[slurm]" in line and body.split()[0] in line
        assert not (tmp_path / "o").exists()


class TestSeedDuplicates:
    def test_values_are_kept_once_in_order(self) -> None:
        from autograd_check.sweep.grid import build_grid

        grid = build_grid({"seeds": "5-9,0-6,3,12"})
        assert grid.seeds == (5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 12)
        assert grid.dropped == ("--seeds: 5, 6, 3",)

    def test_the_duplicate_check_does_not_compare_every_pair(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Seeds are compared through a set (hashing), not against every earlier seed: for n
        distinct seeds the old list scan made n²/2 comparisons."""
        from autograd_check.sweep import grid as grid_module

        compared = [0]

        class Seed(int):
            def __eq__(self, other: object) -> bool:
                compared[0] += 1
                return int(self) == other

            __hash__ = int.__hash__

        real = grid_module.build_spec

        def counting(values: dict[str, Any]) -> Any:
            spec = real(values)
            return type("S", (), {"seed": Seed(spec.seed)})()

        monkeypatch.setattr(grid_module, "build_spec", counting)
        values, again = grid_module._axis_values("seeds", "0-1999,0-9")
        assert len(values) == 2000 and len(again) == 10
        assert compared[0] < 100


def fake_tools(folder: Path, tools: dict[str, str]) -> Path:
    """Scripts named like Slurm's commands, in `folder` (put it first on PATH)."""
    folder.mkdir(exist_ok=True)
    for name, body in tools.items():
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return folder


UNKNOWN_TO_SLURM = {"scontrol": "exit 1", "squeue": "exit 1", "sacct": "exit 0"}


class TestUnknownJob:
    def test_result_wait_says_unknown(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fakes = fake_tools(tmp_path / "bin", UNKNOWN_TO_SLURM)
        monkeypatch.setenv("PATH", f"{fakes}{os.pathsep}{os.environ['PATH']}")
        logs = tmp_path / "logs"
        logs.mkdir(mode=0o700)
        code, _, stderr = cli("result", "999999", "--wait", "--timeout", "5", "--log-dir",
                              str(logs))
        assert code == 4, stderr
        line = error_line(stderr)
        assert "unknown" in line and "PENDING" not in line


    @pytest.mark.slurm
    def test_on_the_real_cluster(self, slurm_cluster: None, tmp_path: Path) -> None:
        logs = tmp_path / "logs"
        logs.mkdir(mode=0o700)
        code, _, stderr = cli("result", "999999", "--wait", "--log-dir", str(logs))
        assert code == 4, stderr
        assert "unknown" in error_line(stderr)


class TestHungSlurm:
    def test_status_answers_within_seconds(self, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
        """A hung controller: every query command hangs. `status` used to wait 15 s for each of
        scontrol, squeue and sacct (45 s)."""
        hang = "exec /bin/sleep 60"
        fakes = fake_tools(tmp_path / "bin", {"scontrol": hang, "squeue": hang, "sacct": hang})
        monkeypatch.setenv("PATH", f"{fakes}{os.pathsep}{os.environ['PATH']}")
        logs = tmp_path / "logs"
        logs.mkdir(mode=0o700)
        start = time.monotonic()
        code, _, stderr = cli("status", "4242", "--log-dir", str(logs))
        assert time.monotonic() - start < 15
        assert code == 3, stderr  # not "unknown" (4): Slurm did not answer
        assert "did not answer" in error_line(stderr)


def fake_slurm_for_submit(folder: Path, mark: Path, *, hang_in: str) -> Path:
    """sbatch/srun/scontrol stand-ins: the job is accepted as 4242 and then RUNNING forever;
    `hang_in` (sbatch or scontrol) touches `mark` when reached, sbatch then hangs."""
    touch = f'/usr/bin/touch "{mark}"'
    sbatch = f"{touch}\nexec /bin/sleep 60" if hang_in == "sbatch" else (
        "echo 'Submitted batch job 4242'")
    scontrol = (f'[ "$2" = job ] && {touch if hang_in == "scontrol" else ":"} && '
                'echo "JobId=4242 JobName=x JobState=RUNNING NodeList=n1 RunTime=00:00:01"\n'
                "exit 0")
    return fake_tools(folder, {"sbatch": sbatch, "srun": "exit 0", "scontrol": scontrol,
                               "squeue": "exit 1", "sacct": "exit 0", "sinfo": "exit 0"})


def start_and_signal(tmp_path: Path, args: list[str], mark: Path, signum: int,
                     fakes: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(PATH=f"{fakes}{os.pathsep}{Path(sys.executable).parent}", NO_COLOR="1",
               AUTOGRAD_CHECK_LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.Popen([*CLI, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not mark.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert mark.exists(), proc.communicate(timeout=10)
        time.sleep(0.3)
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.killpg(proc.pid, signal.SIGKILL) if _group_alive(proc.pid) else None
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    return True


class TestSignalsDuringSubmit:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                             ids=["SIGTERM", "SIGHUP", "SIGINT"])
    def test_while_waiting(self, tmp_path: Path, signum: int) -> None:
        mark = tmp_path / "waiting"
        fakes = fake_slurm_for_submit(tmp_path / "bin", mark, hang_in="scontrol")
        done = start_and_signal(tmp_path, ["submit", "--wait"], mark, signum, fakes)
        assert done.returncode == 130, done.stderr
        assert "Traceback" not in done.stderr
        assert "Slurm job 4242 keeps running" in done.stderr
        assert "scancel 4242" in done.stderr

    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM],
                             ids=["SIGINT", "SIGTERM"])
    def test_before_the_wait(self, tmp_path: Path, signum: int) -> None:
        mark = tmp_path / "submitting"
        fakes = fake_slurm_for_submit(tmp_path / "bin", mark, hang_in="sbatch")
        done = start_and_signal(tmp_path, ["submit", "--wait"], mark, signum, fakes)
        assert done.returncode == 130, done.stderr
        assert "interrupted" in error_line(done.stderr)


class TestKilledSweepLeftovers:
    def test_the_next_run_cleans_up(self, swept: Path, tmp_path: Path) -> None:
        import shutil

        out = tmp_path / "out"
        shutil.copytree(swept, out)
        store = Store(out)
        dead = subprocess.Popen(["/bin/true"])
        dead.wait()
        store.add_submission({"mode": "local", "started": "2020-01-01T00:00:00+00:00",
                              "host": os.uname().nodename, "pid": dead.pid, "cases": 3})
        old = time.time() - 3600
        stale = [store.records_dir / ".3x8_float32_cpu_mse-sum_seed0.json.abc123.tmp",
                 out / ".manifest.json.def456.tmp", store.records_dir / ".probe.xyz"]
        for path in stale:
            path.write_text("{half")
            os.utime(path, (old, old))
        fresh = store.records_dir / ".3x8_float32_cpu_mse-sum_seed1.json.ghi789.tmp"
        fresh.write_text("{being written")

        code, _, stderr = cli("sweep", "--local", "--seeds", "0-2", "--out", str(out))
        assert code == 0, stderr
        assert not any(p.exists() for p in stale), stderr
        assert fresh.exists(), "a temporary file that may be being written is left alone"
        manifest = store.read_manifest()
        assert manifest is not None
        killed = [s for s in manifest["submissions"] if s.get("pid") == dead.pid]
        assert killed and killed[0]["status"] == "killed" and "ended" in killed[0]
        assert all("ended" in s for s in manifest["submissions"])


class TestClosedStdout:
    @pytest.mark.parametrize("args", [
        ["report", "{out}", "--json"],
        ["report", "{out}"],
        ["report", "{out}", "--markdown"],
        ["--help"],
        ["report", "--help"],
    ], ids=["report-json", "report", "report-markdown", "help", "report-help"])
    def test_a_reader_that_stops_early(self, swept: Path, tmp_path: Path,
                                       args: list[str]) -> None:
        read, write = os.pipe()
        os.close(read)  # `| head -c 0`: the reader is gone before the first write
        try:
            done = run_cli([a.format(out=swept) for a in args], tmp_path, stdout=write)
        finally:
            os.close(write)
        assert done.returncode == 141, done.stderr
        assert done.stderr == ""
