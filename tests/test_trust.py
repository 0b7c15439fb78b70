"""Nobody else's code or data acts as you (issue 17, second hardening pass, docs/security.md):
every Python the tool starts has no working folder on its sys.path; a setup line never reaches
an argv; `result` unpickles only from the descriptor it checked; a local sweep and `report` credit
only your own records."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from autograd_check.base.safety import python_module_argv
from autograd_check.base.spec import CheckSpec

SAFE_CLI = python_module_argv("autograd_check")
"""The CLI itself started without the working folder on sys.path: its own start must not import
what the tests plant there (as the console script, whose sys.path[0] is its bin folder)."""
SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))}
    env.pop("AUTOGRAD_CHECK_LOG_DIR", None)
    env.update(COLUMNS="120", NO_COLOR="1", **extra)
    return env


def plant(folder: Path) -> Path:
    """What a group member writes into the folder you work from: packages named as the ones the
    tool's Pythons import first, each leaving a marker when imported. Returns the marker."""
    marker = folder / "planted-code-ran"
    for package in ("autograd_check", "multiprocessing", "runpy", "submitit"):
        (folder / package).mkdir(parents=True)
        (folder / package / "__init__.py").write_text(
            f"open({str(marker)!r}, 'a').write({package!r} + ' ran\\n')\n")
    return marker


def run_in(folder: Path, argv: list[str], timeout: float = 300,
           **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=folder,
                          env=clean_env(**env), check=False)


# -- 1. no working folder on sys.path ----------------------------------------------------------
class TestNoWorkingFolderOnThePath:
    def test_the_plant_works_on_python_dash_m(self, tmp_path: Path) -> None:
        """The control: `python -m autograd_check` from the planted folder runs the plant."""
        marker = plant(tmp_path)
        run_in(tmp_path, [sys.executable, "-m", "autograd_check", "--version"])
        assert "autograd_check ran" in marker.read_text()

    def test_a_started_python_imports_nothing_from_its_folder(self, tmp_path: Path) -> None:
        marker = plant(tmp_path)
        done = run_in(tmp_path, [*SAFE_CLI, "--version"])
        assert done.returncode == 0, done.stderr
        assert not marker.exists()
        # sys.argv as `python -m` gives it, and the folder stays the working folder
        probe = run_in(tmp_path, [*python_module_argv("json.tool"), "--help"])
        assert probe.returncode == 0 and "json.tool" in probe.stdout, probe.stderr
        assert not marker.exists()

    def test_a_module_name_is_checked(self) -> None:
        with pytest.raises(ValueError):
            python_module_argv('x"); import os; ("')

    def test_the_guard_and_the_step_start_that_way(self, tmp_path: Path) -> None:
        from autograd_check.slurm.batch import sbatch_script
        from autograd_check.slurm.options import SlurmOptions, build_slurm_options
        from autograd_check.slurm.step import step_command

        script = sbatch_script(CheckSpec(), build_slurm_options({"log_dir": str(tmp_path)}))
        assert "-m autograd_check.slurm.guard" not in script
        assert 'run_module("autograd_check.slurm.guard"' in script
        step = step_command(CheckSpec(), SlurmOptions())
        assert step[step.index(sys.executable):][:3] == SAFE_CLI
        assert "-m" not in step

    def test_local_ranks_fork_server_imports_nothing_from_the_folder(
        self, tmp_path: Path
    ) -> None:
        """run --ranks: multiprocessing's fork server starts as `python -c`, with '' first."""
        marker = plant(tmp_path)
        done = run_in(tmp_path, [*SAFE_CLI, "run", "--ranks", "2", "--model", "linear",
                                 "--shape", "4x8", "--json", "--timeout", "240"])
        assert done.returncode == 0, done.stderr
        assert not marker.exists(), marker.read_text()
        assert json.loads(done.stdout)["verdict"]["passed"] is True


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestNoWorkingFolderOnTheNode:
    def test_a_batch_job_from_a_planted_folder(self, tmp_path: Path) -> None:
        """The node runs the job in the submit folder: the guard's Python must not import it."""
        marker = plant(tmp_path)
        logs = tmp_path / "logs"
        done = run_in(tmp_path, [*SAFE_CLI, "submit", "--wait", "--json", "--shape", "2x2",
                                 "--log-dir", str(logs), *SMALL])
        assert done.returncode == 0, done.stderr
        assert not marker.exists(), marker.read_text()
        assert json.loads(done.stdout)["verdict"]["passed"] is True

    def test_a_step_inside_salloc_from_a_planted_folder(self, tmp_path: Path) -> None:
        marker = plant(tmp_path)
        done = salloc(tmp_path, *SAFE_CLI, "submit", "--json", "--shape", "2x2",
                      "--log-dir", str(tmp_path / "logs"))
        assert done.returncode == 0, done.stderr
        assert not marker.exists(), marker.read_text()
        assert json.loads(done.stdout)["environment"]["slurm"]["step_id"] is not None


def salloc(folder: Path, *command: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_in(folder, ["salloc", "--nodes=1", "--ntasks=1", "--cpus-per-task=1",
                           "--mem=500M", "--time=5", "--job-name=agc-test-trust", *command],
                  **env)


# -- 7. a setup line never reaches an argv -----------------------------------------------------
class TestStepSetup:
    def test_the_setup_goes_through_a_private_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """run_step hands srun a 0600 file in the log folder, removed afterwards; the argv (what
        `ps` and `sacct -o SubmitLine` show) holds none of the setup text."""
        from autograd_check.slurm import step
        from autograd_check.slurm.allocation import Allocation
        from autograd_check.slurm.options import SlurmOptions

        seen: dict[str, object] = {}
        answer = step.step_main(json.dumps(CheckSpec(shape=(2, 2)).to_dict()))[0]

        class FakeSrun:
            returncode = 0

            def __init__(self, cmd: list[str], stdout: object, **kwargs: object) -> None:
                setup = Path(cmd[cmd.index("bash") + 1])
                seen.update(cmd=cmd, file=setup, mode=setup.stat().st_mode & 0o7777,
                            text=setup.read_text())
                stdout.write(answer + "\n")  # type: ignore[attr-defined]

            def wait(self, timeout: float | None = None) -> int:
                return 0

        monkeypatch.setattr(step, "require_slurm", lambda *tools: None)
        monkeypatch.setattr(step.subprocess, "Popen", FakeSrun)
        opts = SlurmOptions(setup=("export HF_TOKEN=hf_s3cret",), log_dir=tmp_path / "l")
        old = os.umask(0)
        try:
            result = step.run_step(CheckSpec(shape=(2, 2)), opts, Allocation("9", None, (), "h"))
        finally:
            os.umask(old)
        assert result.passed
        assert not any("hf_s3cret" in str(a) for a in seen["cmd"])  # type: ignore[attr-defined]
        assert seen["mode"] == 0o600 and "export HF_TOKEN=hf_s3cret" in str(seen["text"])
        assert Path(str(seen["file"])).parent == tmp_path / "l"
        assert not Path(str(seen["file"])).exists()

    def test_dry_run_shows_no_setup_text(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from typer.testing import CliRunner

        from autograd_check.cli import app

        for var in list(os.environ):
            if var.startswith("SLURM_"):
                monkeypatch.delenv(var)
        monkeypatch.setenv("SLURM_JOB_ID", "9")
        result = CliRunner().invoke(app, ["submit", "--dry-run", "--setup",
                                          "export API_KEY=k3y"])
        assert result.exit_code == 0, result.stderr
        assert "k3y" not in result.stdout and "/.step-setup.XXXXXXXX.sh " in result.stdout

    @pytest.mark.slurm
    @pytest.mark.usefixtures("slurm_cluster")
    def test_a_step_with_a_secret_setup_on_the_cluster(self, tmp_path: Path) -> None:
        """A config's [slurm] setup line (the salloc command line names only the config)."""
        logs = tmp_path / "logs"
        config = tmp_path / "profile.toml"
        config.write_text('[slurm]\nsetup = ["export AGC_TOKEN=tok-s3cret-771", '
                          '"test -n \\"$AGC_TOKEN\\" || exit 9"]\n')
        done = salloc(tmp_path, *SAFE_CLI, "submit", "--json", "--shape", "2x2",
                      "--config", str(config), "--log-dir", str(logs))
        assert done.returncode == 0, done.stderr
        alloc = re.search(r"Granted job allocation (\d+)", done.stderr)
        assert alloc, done.stderr
        submitted = subprocess.run(
            ["sacct", "-n", "-P", "-j", alloc.group(1), "-o", "SubmitLine%2000"],
            capture_output=True, text=True, timeout=30, check=False)
        assert "tok-s3cret-771" not in submitted.stdout
        assert not list(logs.glob(".step-setup.*"))


# -- 3. result unpickles only what it checked --------------------------------------------------
class Planted:
    """A pickle whose loading leaves a marker: what another user would plant."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="session")
def other_user() -> tuple[int, int]:
    """(uid, gid) of a second user (tests/test_security.py's), made once; root only."""
    import pwd
    import shutil

    if os.getuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("a second user needs root and useradd")
    try:
        entry = pwd.getpwnam("agc-other")
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        "agc-other"], capture_output=True, timeout=60, check=False)
        entry = pwd.getpwnam("agc-other")
    return entry.pw_uid, entry.pw_gid


class TestResultReadsWhatItChecked:
    JOB = "5"

    @pytest.fixture
    def logs(self, tmp_path: Path) -> Path:
        import pickle

        from autograd_check.slurm.log_dir import job_paths

        logs = tmp_path / "own" / "logs"
        logs.mkdir(parents=True, mode=0o700)
        logs.parent.chmod(0o700)
        path = job_paths(logs, self.JOB).result_pickle
        path.write_bytes(pickle.dumps(("success", {"outcome": "result", "answer": "real"})))
        path.chmod(0o600)
        return logs

    def load(self, logs: Path) -> object:
        from autograd_check.slurm.watch import load_outcome

        return load_outcome(logs, self.JOB)

    def refused(self, logs: Path, words: str) -> None:
        from autograd_check.base.errors import EnvironmentProblem

        with pytest.raises(EnvironmentProblem) as e:
            self.load(logs)
        assert words in str(e.value) and "not loaded" in str(e.value), str(e.value)

    def pickle_path(self, logs: Path) -> Path:
        from autograd_check.slurm.log_dir import job_paths

        return Path(job_paths(logs, self.JOB).result_pickle)

    def test_a_private_result_loads(self, logs: Path) -> None:
        assert self.load(logs) == ("success", {"outcome": "result", "answer": "real"})

    def test_a_symbolic_link_as_the_result_file_is_refused(self, logs: Path) -> None:
        import pickle

        marker = logs.parent / "planted-code-ran"
        elsewhere = logs / "elsewhere.pkl"
        elsewhere.write_bytes(pickle.dumps(Planted(str(marker))))
        elsewhere.chmod(0o600)
        path = self.pickle_path(logs)
        path.unlink()
        path.symlink_to(elsewhere)
        self.refused(logs, "is a symbolic link")
        assert not marker.exists()

    def test_a_log_dir_reached_through_a_shared_folder_is_refused(
        self, logs: Path, tmp_path: Path
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir(mode=0o777)
        shared.chmod(0o777)
        (shared / "logs").symlink_to(logs)
        self.refused(shared / "logs", "without the sticky bit")
        link = tmp_path / "own" / "link"
        link.symlink_to(logs)  # a link of yours in a private folder: followed
        assert self.load(link)[0] == "success"  # type: ignore[index]

    def test_what_another_user_owns_is_refused(
        self, logs: Path, tmp_path: Path, other_user: tuple[int, int]
    ) -> None:
        link = tmp_path / "own" / "theirs"
        link.symlink_to(logs)
        os.lchown(link, *other_user)  # their link, even to your folder
        self.refused(link, f"belongs to another user (uid {other_user[0]})")
        os.chown(self.pickle_path(logs), *other_user)
        self.refused(logs, f"belongs to another user (uid {other_user[0]})")
        os.chown(logs, *other_user)
        self.refused(logs, f"'{logs}' belongs to another user")

    def test_a_folder_you_may_only_search_is_fine_for_another_user(
        self, other_user: tuple[int, int]
    ) -> None:
        """The way is opened with O_PATH: a root folder of mode 0711 on the way (a cluster's
        /scratch) is searched as the path lookup would, not read. Run as the other user."""
        import shutil
        import tempfile

        python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
        if python is None:
            pytest.skip("no python3 the other user can run")
        src = str(Path(__file__).resolve().parents[1] / "src")
        top = Path(tempfile.mkdtemp(dir="/tmp", prefix="agc-search-"))
        try:
            top.chmod(0o711)
            theirs = top / "theirs"
            theirs.mkdir(mode=0o700)
            os.chown(theirs, *other_user)
            code = ("import os, sys; from pathlib import Path; "
                    "from autograd_check.base.safety import open_private; "
                    "p = Path(sys.argv[1]); p.write_bytes(b'answer'); p.chmod(0o600); "
                    "print(os.read(open_private(p), 16).decode())")
            done = subprocess.run(
                ["setpriv", f"--reuid={other_user[0]}", f"--regid={other_user[1]}",
                 "--clear-groups", "env", f"PYTHONPATH={src}", python, "-c", code,
                 str(theirs / "5_0_result.pkl")],
                capture_output=True, text=True, timeout=60, cwd="/", check=False)
            if "Permission denied" in done.stderr and "autograd_check" not in done.stderr:
                pytest.skip(f"the other user cannot run {python}: {done.stderr.strip()}")
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "answer"
        finally:
            shutil.rmtree(top, ignore_errors=True)

    def test_a_fifo_is_refused_without_hanging(self, logs: Path) -> None:
        path = self.pickle_path(logs)
        path.unlink()
        os.mkfifo(path, 0o600)

        def hung(signum: int, frame: object) -> None:
            raise TimeoutError("opening the FIFO hung")

        previous = signal.signal(signal.SIGALRM, hung)
        signal.alarm(20)
        try:
            self.refused(logs, "is not a plain file")
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)

    def test_what_is_unpickled_is_the_descriptor_that_was_checked(
        self, logs: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another user swaps the file right after the check: the checked one is loaded."""
        import pickle

        from autograd_check.slurm import watch

        marker = logs.parent / "planted-code-ran"
        real_open = watch.open_private

        def open_then_swap(path: Path) -> int:
            fd = real_open(path)
            swapped = path.with_name("swap.tmp")
            swapped.write_bytes(pickle.dumps(Planted(str(marker))))
            os.replace(swapped, path)
            return fd

        monkeypatch.setattr(watch, "open_private", open_then_swap)
        assert self.load(logs) == ("success", {"outcome": "result", "answer": "real"})
        assert not marker.exists()

    def test_the_cli_says_so_with_exit_3(
        self, logs: Path, other_user: tuple[int, int], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from typer.testing import CliRunner

        from autograd_check.cli import app
        from autograd_check.slurm import watch

        os.chown(self.pickle_path(logs), *other_user)
        monkeypatch.setattr(watch, "job_info", lambda *a, **k: None)
        result = CliRunner().invoke(app, ["result", self.JOB, "--log-dir", str(logs)])
        assert result.exit_code == 3, result.stderr
        assert "belongs to another user" in result.stderr


# -- 4. records: only yours count ---------------------------------------------------------------
BUGGY = Path(__file__).resolve().parents[1] / "examples" / "buggy_target.py"


def invoke(*args: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from autograd_check.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


class TestPlantedRecords:
    """A group member writes "passed" records (same grid id) into your local sweep's --out."""

    @pytest.fixture
    def failing(self, tmp_path: Path) -> Path:
        """A local sweep whose target fails every case (exit 1): what the truth is."""
        out = tmp_path / "own" / "sweep"
        out.parent.mkdir(mode=0o700)
        code, _, stderr = invoke("sweep", "--local", "--target", str(BUGGY), "--seeds", "0-1",
                                 "--out", str(out))
        assert code == 1, stderr
        return out

    def plant_passes(self, out: Path, owner: tuple[int, int]) -> list[Path]:
        """Every record turned into a pass, as a file of `owner`'s."""
        planted = []
        for path in sorted((out / "records").glob("*.json")):
            doc = json.loads(path.read_text())
            doc["verdict"]["passed"] = True
            path.unlink()
            path.write_text(json.dumps(doc))
            path.chmod(0o600)
            os.chown(path, *owner)
            planted.append(path)
        assert planted
        return planted

    def test_the_plant_works_on_your_own_records(self, failing: Path) -> None:
        """The control: the same edit made by you is believed (records are the truth)."""
        self.plant_passes(failing, (os.getuid(), os.getgid()))
        assert invoke("report", str(failing))[0] == 0

    def test_another_users_records_never_count(
        self, failing: Path, other_user: tuple[int, int]
    ) -> None:
        planted = self.plant_passes(failing, other_user)
        code, stdout, _ = invoke("report", str(failing))
        assert code == 4, stdout  # their cases are missing, not passed
        assert "2 missing" in stdout and "written by another user" in stdout
        code, stdout, _ = invoke("report", str(failing), "--json")
        ignored = json.loads(stdout)["ignored_records"]
        assert len(ignored) == 2 and all(
            f"written by another user (uid {other_user[0]})" in why for why in ignored.values())
        # the sweep does not resume from them: it runs both cases again, and says why
        code, _, stderr = invoke("sweep", "--local", "--target", str(BUGGY), "--seeds", "0-1",
                                 "--out", str(failing))
        assert code == 1, stderr
        assert "2 record(s) in" in stderr and "written by another user" in stderr
        for path in planted:
            assert path.stat().st_uid == os.getuid()
            assert json.loads(path.read_text())["verdict"]["passed"] is False
        assert invoke("report", str(failing))[0] == 1

    def test_a_group_member_writing_with_setpriv(self, other_user: tuple[int, int]) -> None:
        """The attack as the issue ran it: another user (setpriv) writes "passed" records into an
        --out that others could write. Refused while it is so; once it is private again, their
        records still never count."""
        import shutil
        import tempfile

        top = Path(tempfile.mkdtemp(dir="/tmp", prefix="agc-project-"))
        try:
            top.chmod(0o755)
            out = top / "sweep"
            args = ("sweep", "--local", "--target", str(BUGGY), "--seeds", "0-1",
                    "--out", str(out))
            assert invoke(*args)[0] == 1
            for folder in (out, out / "records"):
                folder.chmod(0o777)  # a umask-000 mistake, or a shared project folder
            for path in sorted((out / "records").glob("*.json")):
                doc = json.loads(path.read_text())
                doc["verdict"]["passed"] = True
                path.unlink()
                done = subprocess.run(
                    ["setpriv", f"--reuid={other_user[0]}", f"--regid={other_user[1]}",
                     "--clear-groups", "sh", "-c", 'cat > "$1"', "sh", str(path)],
                    input=json.dumps(doc), capture_output=True, text=True, timeout=60,
                    check=False)
                assert done.returncode == 0, done.stderr
                assert path.stat().st_uid == other_user[0]
            code, _, stderr = invoke(*args)
            assert code == 2 and "can be written by other users" in stderr, stderr
            assert invoke("report", str(out))[0] == 2
            for folder in (out, out / "records"):
                folder.chmod(0o700)
            code, stdout, _ = invoke("report", str(out))
            assert code == 4 and "2 of them written by another user" in stdout, stdout
            code, _, stderr = invoke(*args)
            assert code == 1 and "written by another user" in stderr, stderr
        finally:
            shutil.rmtree(top, ignore_errors=True)

    @pytest.mark.parametrize("where", ["parent", "out", "records"])
    def test_a_folder_others_can_write_is_refused(self, failing: Path, where: str) -> None:
        folder = {"parent": failing.parent, "out": failing, "records": failing / "records"}
        folder[where].chmod(0o775)  # a group-writable project folder (umask 002)
        for args in (["report", str(failing)],
                     ["sweep", "--local", "--target", str(BUGGY), "--seeds", "0-1",
                      "--out", str(failing)]):
            code, _, stderr = invoke(*args)
            assert code == 2, stderr
            assert "can be written by other users" in stderr and "plant" not in stderr
            assert "write records there" in stderr
        folder[where].chmod(0o700)

    def test_a_symlinked_record_never_counts(self, failing: Path) -> None:
        record = sorted((failing / "records").glob("*.json"))[0]
        real = failing / "elsewhere.json"
        doc = json.loads(record.read_text())
        doc["verdict"]["passed"] = True
        real.write_text(json.dumps(doc))
        real.chmod(0o600)
        record.unlink()
        record.symlink_to(real)
        code, stdout, _ = invoke("report", str(failing))
        assert code == 4 and "a symbolic link" in stdout


# -- 9. smaller faults --------------------------------------------------------------------------
class TestSmallerFaults:
    @pytest.mark.parametrize("umask", [0o000, 0o022])
    def test_the_plot_is_private_whatever_the_umask(self, tmp_path: Path, umask: int) -> None:
        pytest.importorskip("matplotlib")
        out = tmp_path / "sweep"
        code, _, stderr = invoke("sweep", "--local", "--seeds", "0-1", "--out", str(out))
        assert code == 0, stderr
        plot = tmp_path / "p.png"
        old = os.umask(umask)
        try:
            code, _, stderr = invoke("report", str(out), "--plot", str(plot))
        finally:
            os.umask(old)
        assert code == 0, stderr
        assert plot.read_bytes().startswith(b"\x89PNG")
        assert plot.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    @pytest.mark.parametrize("time", ["1", "00:01:00", "0:30"])
    def test_a_sweep_time_within_the_warning_delay_is_refused(
        self, tmp_path: Path, time: str
    ) -> None:
        code, _, stderr = invoke("sweep", "--slurm", "--dry-run", "--seeds", "0-1",
                                 "--time", time, "--out", str(tmp_path / "s"))
        assert code == 2, stderr
        assert "too short for a sweep's array task" in stderr and "--time 2" in stderr
        assert stderr.count("\n") == 1
        code, _, stderr = invoke("sweep", "--slurm", "--dry-run", "--seeds", "0-1",
                                 "--time", "2", "--out", str(tmp_path / "s"))
        assert code == 0, stderr

    @pytest.mark.parametrize("form", ["{name}:loss", "{name}", "./{name}:loss", "{path}/",
                                      "{path}:loss"])
    def test_a_target_that_is_a_folder_is_named(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
    ) -> None:
        folder = tmp_path / "losses_here"
        folder.mkdir()
        monkeypatch.chdir(tmp_path)
        target = form.format(name=folder.name, path=folder)
        code, _, stderr = invoke("run", "--target", target)
        assert code == 2, stderr
        assert "is a folder" in stderr and "there is: nothing" not in stderr
        assert "losses_here" in stderr and "FILE.py:NAME" in stderr

    HANGS = '''
        import signal
        import time


        def loss(predicted, real):
            if STUCK:  # a call that does not come back to Python (signals blocked here)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
                time.sleep(1000)
            while True:
                time.sleep(0.05)


        def manual_grad(predicted, real):
            return 2 * (predicted - real)
    '''

    def hanging(self, tmp_path: Path, block: bool) -> Path:
        import textwrap

        path = tmp_path / "hangs.py"
        path.write_text(textwrap.dedent(self.HANGS).replace("STUCK", str(block)))
        return path

    def test_run_timeout_stops_a_target_that_hangs(self, tmp_path: Path) -> None:
        target = self.hanging(tmp_path, block=False)
        code, stdout, stderr = invoke("run", "--target", str(target), "--timeout", "1")
        assert code == 4, stderr
        assert stdout == ""
        assert "did not finish within 1 s (--timeout) and was stopped in " in stderr
        assert f"{target}:11 in loss" in stderr
        code, stdout, stderr = invoke("run", "--target", str(target), "--timeout", "1",
                                      "--json")
        assert code == 4 and json.loads(stdout)["error"]["exit_code"] == 4, stderr
        code, _, stderr = invoke("run", "--timeout", "0")
        assert code == 2 and "timeout '0' is not allowed" in stderr

    def test_run_timeout_ends_a_check_python_cannot_stop(self, tmp_path: Path) -> None:
        target = self.hanging(tmp_path, block=True)
        done = run_in(tmp_path, [*SAFE_CLI, "run", "--target", str(target), "--timeout", "1"],
                      timeout=120)
        assert done.returncode == 4, done.stderr
        assert "did not finish within 1 s (--timeout) and is stuck where Python cannot stop it" \
            in done.stderr
