"""Another user must not run code as you, and what you type must not leak or reach the job script
unchecked (docs/security.md): the folder chain (StrictModes), private files whatever the umask,
the guard on the node, one check of script values, sbatch's option prefixes, #SBATCH setup lines,
secrets masked in the manifest. The Slurm class at the end runs the attack on the local cluster."""

from __future__ import annotations

import json
import os
import pickle
import pwd
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.base.errors import BadInput
from autograd_check.base.safety import (
    check_folder_chain,
    folder_chain_problem,
    make_private_dirs,
    mask_secrets,
    masked_parameters,
    script_value,
)
from autograd_check.base.spec import CheckSpec
from autograd_check.cli import app
from autograd_check.slurm import guard
from autograd_check.slurm.batch import sbatch_script
from autograd_check.slurm.log_dir import prepare_log_dir
from autograd_check.slurm.options import build_slurm_options, parse_sbatch_args, parse_setup

runner = CliRunner()
OTHER_USER = "agc-other"
"""The second user of these tests (created once, if missing; root only)."""
CLI = [sys.executable, "-m", "autograd_check"]


@pytest.fixture(scope="session")
def other_user() -> tuple[int, int]:
    """(uid, gid) of a second user: `useradd` once (idempotent); skipped where that is not root's
    to do."""
    if os.getuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("a second user needs root and useradd")
    try:
        entry = pwd.getpwnam(OTHER_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        OTHER_USER], capture_output=True, timeout=60, check=False)
        entry = pwd.getpwnam(OTHER_USER)  # KeyError here: useradd failed, and says why above
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def no_slurm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_")):
            monkeypatch.delenv(var)
    monkeypatch.delenv("AUTOGRAD_CHECK_LOG_DIR", raising=False)


def error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("autograd-check: error: "), stderr
    return lines[0]


def folder(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


class TestFolderChain:
    def test_a_private_chain_under_sticky_tmp_is_fine(self, tmp_path: Path) -> None:
        # tmp_path lies under /tmp (1777, root's): a sticky folder others can write is fine
        sticky = folder(tmp_path / "sticky", 0o1777)
        assert folder_chain_problem(sticky / "mine" / "logs") is None
        check_folder_chain(folder(tmp_path / "own", 0o700) / "new" / "logs", "log dir")

    def test_an_ancestor_others_can_write_is_named(self, tmp_path: Path) -> None:
        shared = folder(tmp_path / "shared", 0o777)
        with pytest.raises(BadInput) as e:
            check_folder_chain(shared / "logs", "log dir")
        said = str(e.value)
        assert repr(str(shared)) in said and "mode 777, without the sticky bit" in said
        assert "chmod go-w" in said and "\n" not in said
        folder(tmp_path / "grp", 0o775)
        assert "mode 775" in str(folder_chain_problem(tmp_path / "grp" / "a" / "b"))

    def test_the_folder_itself_must_be_private_even_when_sticky(self, tmp_path: Path) -> None:
        logs = folder(tmp_path / "logs", 0o1777)
        assert "mode 1777" in str(folder_chain_problem(logs))
        assert folder_chain_problem(logs, itself=False) is None

    def test_another_users_folder_is_refused_roots_is_not(
        self, tmp_path: Path, other_user: tuple[int, int]
    ) -> None:
        theirs = folder(tmp_path / "theirs", 0o755)
        os.chown(theirs, *other_user)
        assert f"belongs to another user (uid {other_user[0]})" in str(
            folder_chain_problem(theirs / "logs"))
        assert folder_chain_problem(Path("/usr/share/doc"), itself=False) is None

    def test_a_symbolic_link_is_followed(self, tmp_path: Path) -> None:
        shared = folder(tmp_path / "shared", 0o777)
        (folder(tmp_path / "own", 0o700) / "link").symlink_to(shared / "target")
        folder(shared / "target", 0o700)
        # the link lives in a private folder, but its target in a folder anyone can write
        assert repr(str(shared)) in str(folder_chain_problem(tmp_path / "own" / "link" / "logs"))

    @pytest.mark.parametrize("umask", [0o000, 0o002, 0o022])
    def test_created_folders_are_private_whatever_the_umask(
        self, tmp_path: Path, umask: int
    ) -> None:
        old = os.umask(umask)
        try:
            make_private_dirs(tmp_path / "a" / "b")
            prepare_log_dir(tmp_path / "c" / "logs")
        finally:
            os.umask(old)
        for made in ("a", "a/b", "c", "c/logs"):
            assert stat.S_IMODE((tmp_path / made).stat().st_mode) == 0o700, made


@pytest.mark.usefixtures("no_slurm_env")
class TestSweepFolders:
    def test_an_out_under_a_group_writable_folder_is_refused(self, tmp_path: Path) -> None:
        # `sweep --slurm --out grp/x` with grp 0775 (umask 002): a group member could swap
        # grp/x/logs; refused before anything is written, --dry-run too
        grp = folder(tmp_path / "grp", 0o775)
        result = runner.invoke(app, ["sweep", "--slurm", "--dry-run", "--seeds", "0-1",
                                     "--out", str(grp / "x")])
        assert result.exit_code == 2, result.output
        assert repr(str(grp)) in error_line(result.stderr)
        assert not (grp / "x").exists()

    def test_an_out_others_can_write_is_refused(self, tmp_path: Path) -> None:
        out = folder(tmp_path / "out", 0o777)
        result = runner.invoke(app, ["sweep", "--slurm", "--dry-run", "--seeds", "0-1",
                                     "--out", str(out), "--log-dir", str(tmp_path / "logs")])
        assert result.exit_code == 2, result.output
        assert "can be written by other users (mode 777)" in error_line(result.stderr)


class TestGuard:
    """The guard on the node, run here with the variables Slurm gives a job."""

    @pytest.fixture
    def job(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
        logs = folder(tmp_path / "logs", 0o700)
        for var in list(os.environ):
            if var.startswith("SLURM_"):
                monkeypatch.delenv(var)
        monkeypatch.setenv("SLURM_JOB_ID", "41")
        monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
        monkeypatch.setattr(guard, "PICKLE_WAIT_S", 0)
        handed: list[list[str]] = []
        import submitit.core.submission as submission

        monkeypatch.setattr(submission, "submitit_main", lambda: handed.append(list(sys.argv)))
        marker = tmp_path / "planted-code-ran"
        pickle_path = logs / "40_1_submitted.pkl"  # an array task's own pickle
        pickle_path.write_bytes(pickle.dumps(Planted(str(marker))))
        pickle_path.chmod(0o600)
        return {"logs": logs, "pickle": pickle_path, "handed": handed, "marker": marker}

    def run(self, job: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
        code = guard.main([*guard.SUBMITIT_ARGS, str(job["logs"])])
        return code, capsys.readouterr().err

    def test_a_private_pickle_is_handed_to_submitit(
        self, job: dict[str, Any], capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, err = self.run(job, capsys)
        assert (code, err) == (0, "")
        assert [argv[1:] for argv in job["handed"]] == [[str(job["logs"])]]

    def test_another_users_pickle_is_never_loaded(
        self, job: dict[str, Any], capsys: pytest.CaptureFixture[str],
        other_user: tuple[int, int]
    ) -> None:
        os.chown(job["pickle"], *other_user)
        code, err = self.run(job, capsys)
        assert code != 0 and job["handed"] == [] and not job["marker"].exists()
        assert err.startswith("autograd-check: refusing to run Slurm job 40_1: ")
        assert "belongs to another user" in err and "nothing was loaded" in err
        assert len(err.strip().splitlines()) == 1

    @pytest.mark.parametrize("what", ["pickle 0666", "folder 0777", "parent 0777", "link"])
    def test_what_others_could_have_written_is_never_loaded(
        self, job: dict[str, Any], capsys: pytest.CaptureFixture[str], what: str
    ) -> None:
        if what == "pickle 0666":
            job["pickle"].chmod(0o666)
        elif what == "folder 0777":
            job["logs"].chmod(0o777)
        elif what == "parent 0777":
            job["logs"].parent.chmod(0o777)
        else:
            real = job["pickle"].with_name("elsewhere.pkl")
            job["pickle"].rename(real)
            job["pickle"].symlink_to(real)
        code, err = self.run(job, capsys)
        assert code != 0 and job["handed"] == [], err
        assert "refusing to run Slurm job 40_1" in err
        job["logs"].parent.chmod(0o700)

    def test_the_job_script_runs_the_guard_first(self, tmp_path: Path) -> None:
        opts = build_slurm_options({"log_dir": str(tmp_path / "logs")})
        script = sbatch_script(CheckSpec(), opts)
        assert (f'run_module("autograd_check.slurm.guard", run_name="__main__", alter_sys=True)\' '
                f"-u -m submitit.core._submit {tmp_path}") in script


class Planted:
    """A pickle whose loading leaves a marker: what another user would plant."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.usefixtures("no_slurm_env")
class TestScriptValues:
    @pytest.mark.parametrize("value", ["logs\n#SBATCH --time=999", "logs\rx", "logs%j", "a%u/b"])
    def test_log_dir_flag_and_variable(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
    ) -> None:
        path = str(tmp_path / value)
        result = runner.invoke(app, ["submit", "--dry-run", "--log-dir", path])
        assert result.exit_code == 2, result.output
        assert repr(path) in error_line(result.stderr) and result.stdout == ""
        monkeypatch.setenv("AUTOGRAD_CHECK_LOG_DIR", path)
        result = runner.invoke(app, ["submit", "--dry-run"])
        assert result.exit_code == 2, result.output
        assert repr(path) in error_line(result.stderr) and result.stdout == ""

    @pytest.mark.parametrize("value", ["out\n#SBATCH --array=0-99", "out%A"])
    def test_out_flag_and_sweep_table(self, tmp_path: Path, value: str) -> None:
        out = str(tmp_path / value)
        result = runner.invoke(app, ["sweep", "--slurm", "--dry-run", "--out", out])
        assert result.exit_code == 2, result.output
        assert repr(out) in error_line(result.stderr) and result.stdout == ""
        config = tmp_path / "c.toml"
        config.write_text(f"[sweep]\nout = {json.dumps(out)}\n")
        result = runner.invoke(app, ["sweep", "--slurm", "--dry-run", "--config", str(config)])
        assert result.exit_code == 2, result.output
        assert repr(out) in error_line(result.stderr)
        assert not list(tmp_path.glob("out*"))

    def test_one_checker(self) -> None:
        assert script_value("x", "a b%c") == "a b%c"
        with pytest.raises(BadInput, match="control character"):
            script_value("x", "a\tb")
        with pytest.raises(BadInput, match="'%'"):
            script_value("x", "a%c", path=True)


class TestSbatchArgs:
    @pytest.mark.parametrize(("arg", "words"), [
        ("arr=0-1", "sbatch reads it as '--array'"),
        ("ar=0-1", "'--array'"),
        ("tim=120", "--time, --time-min"),
        ("outp=/x", "'--output'"),
        ("job-n=x", "'--job-name'"),
        ("part=debug", "'--partition'"),
        ("--arr=0-1", "'--array'"),
        ("a=1", "ambiguous"),
        ("t=5", "ambiguous"),
        ("ti=5", "--time, --time-min"),
        ("gpu=1", "ambiguous"),
    ])
    def test_prefixes_of_managed_options_and_ambiguous_ones(self, arg: str, words: str) -> None:
        with pytest.raises(BadInput, match=words.replace("(", r"\(").replace("[", r"\[")):
            parse_sbatch_args([arg])

    def test_unique_prefixes_are_written_whole(self, tmp_path: Path) -> None:
        assert parse_sbatch_args(["mail-t=END", "gpus-per-n=2", "tasks-per-node=1", "nice=5"]) \
            == (("mail-type", "END"), ("gpus-per-node", "2"), ("ntasks-per-node", "1"),
                ("nice", "5"))
        # A GPU option given through a prefix still stands for --gpus (no second GPU request)
        opts = build_slurm_options({"sbatch_args": ["gpus-per-n=2"],
                                    "log_dir": str(tmp_path)})
        script = sbatch_script(CheckSpec(device="cuda"), opts)
        assert "#SBATCH --gpus-per-node=2" in script and script.count("gpus") == 1

    def test_the_cli_refuses_an_abbreviated_array(self) -> None:
        result = runner.invoke(app, ["submit", "--dry-run", "--sbatch-arg", "arr=0-1"])
        assert result.exit_code == 2 and "'--array'" in error_line(result.stderr)


class TestSetupLines:
    @pytest.mark.parametrize(("line", "pointer"), [
        ("#SBATCH --time=120", "use --time"),
        ("#SBATCH --partition debug", "use --partition"),
        ("#SBATCH --arr=0-1", "arrays are what `sweep` is for"),
        ("#SBATCH --mail-type=END", "use --sbatch-arg mail-type=END"),
        ("#SBATCH -t 5", "--sbatch-arg KEY=VALUE"),
        ("  #PBS -l walltime=1:00:00", "--sbatch-arg KEY=VALUE"),
    ])
    def test_a_directive_is_refused_with_a_pointer(self, line: str, pointer: str) -> None:
        with pytest.raises(BadInput) as e:
            parse_setup([line])
        assert "sbatch directive" in str(e.value) and pointer in str(e.value)

    def test_shell_lines_and_comments_are_fine(self) -> None:
        assert parse_setup(["module load cuda", "# a note", "echo '#SBATCH'"]) == (
            "module load cuda", "# a note", "echo '#SBATCH'")

    def test_a_refused_line_does_not_show_its_secret(self) -> None:
        with pytest.raises(BadInput) as e:
            parse_setup(["export HF_TOKEN=hf_secret\x07"])
        assert "hf_secret" not in str(e.value) and "HF_TOKEN=***" in str(e.value)


class TestSecrets:
    @pytest.mark.parametrize(("line", "stored"), [
        ("export HF_TOKEN=hf_abc", "export HF_TOKEN=***"),
        ("export A=1 WANDB_API_KEY='x y' B=2", "export A=1 WANDB_API_KEY=*** B=2"),
        ("MY_PASSWORD=p python x.py", "MY_PASSWORD=*** python x.py"),
        ("export DB_PASSWD=p; export AWS_SECRET_ACCESS_KEY=s", "export DB_PASSWD=***; "
         "export AWS_SECRET_ACCESS_KEY=***"),
        ("export GH_AUTH=\"a\\\"b\"", "export GH_AUTH=***"),
        ("huggingface-cli login --token hf_abc", "huggingface-cli login --token ***"),
        ("tool --api-key=abc --n 3", "tool --api-key=*** --n 3"),
        ("pip install -i https://me:pw@pypi.example/simple x", "pip install -i "
         "https://me:***@pypi.example/simple x"),
        ("module load cuda/12.1", "module load cuda/12.1"),
        ("source .venv/bin/activate", "source .venv/bin/activate"),
        ("export TOKEN_FILE", "export TOKEN_FILE"),
    ])
    def test_masked(self, line: str, stored: str) -> None:
        assert mask_secrets(line) == stored

    def test_parameters_as_stored(self) -> None:
        params = {"setup": ["export HF_TOKEN=abc"], "time": 5,
                  "additional_parameters": {"export": "ALL,HF_TOKEN=abc", "mail-type": "END"}}
        assert masked_parameters(params) == {
            "setup": ["export HF_TOKEN=***"], "time": 5,
            "additional_parameters": {"export": "ALL,HF_TOKEN=***", "mail-type": "END"}}
        assert params["setup"] == ["export HF_TOKEN=abc"]  # the job script keeps the real one

    @pytest.mark.usefixtures("no_slurm_env")
    def test_the_manifest_and_report_hold_no_token(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from autograd_check.slurm.arrays import SubmittedArray
        from autograd_check.sweep import launch
        from autograd_check.sweep.grid import build_grid
        from autograd_check.sweep.plan import Plan
        from autograd_check.sweep.store import Store

        grid = build_grid({"seeds": "0-1"})
        opts = build_slurm_options({"setup": ["export HF_TOKEN=hf_real"],
                                    "log_dir": str(tmp_path / "out" / "logs")})
        plan = Plan(grid, list(grid.cases()), "slurm", Store(tmp_path / "out"), 2, None, opts)
        plan.store.prepare(plan.grid, force=False)
        sent: list[Any] = []

        def submit_arrays(task: Any, task_args: Any, opts: Any, params: Any, folder: Path,
                          **kwargs: Any) -> None:
            sent.append(params)
            kwargs["on_submitted"](SubmittedArray("7", ["7"], folder / "7_submission.sh"), 0)

        monkeypatch.setattr(launch, "submit_arrays", submit_arrays)
        old = os.umask(0o002)
        try:
            launch.submit(plan, plan.cases)
        finally:
            os.umask(old)
        assert sent[0]["setup"] == ["export HF_TOKEN=hf_real"]  # what the job runs
        manifest = plan.store.manifest_path
        assert "hf_real" not in manifest.read_text() and "HF_TOKEN=***" in manifest.read_text()
        assert stat.S_IMODE(manifest.stat().st_mode) == 0o600
        report = runner.invoke(app, ["report", str(plan.store.root), "--json"])
        assert "hf_real" not in report.stdout and "HF_TOKEN=***" in report.stdout


# -- the attack, on the local cluster -------------------------------------------------------------
def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))}
    env.pop("AUTOGRAD_CHECK_LOG_DIR", None)
    env.update(COLUMNS="120", NO_COLOR="1")
    return env


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env=_clean_env(), cwd=cwd)


def job_state(job_id: str) -> str:
    done = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
                          capture_output=True, text=True, timeout=30, check=False)
    words = done.stdout.split()
    return words[0] if words else "UNKNOWN"


def wait_until_ended(job_id: str, timeout: float = 180) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = job_state(job_id)
        if state not in ("PENDING", "RUNNING", "REQUEUED", "UNKNOWN", "CONFIGURING",
                         "COMPLETING"):
            return state
        time.sleep(1)
    subprocess.run(["scancel", job_id], capture_output=True, timeout=30, check=False)
    pytest.fail(f"job {job_id} had not ended after {timeout} s ({job_state(job_id)})")


SMALL = ["--cpus", "1", "--mem", "500M", "--timeout", "240"]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
class TestTheAttackOnTheCluster:
    def test_a_shared_log_folder_is_refused_at_submit(self, tmp_path: Path) -> None:
        shared = folder(tmp_path / "shared", 0o777)  # mkdir -m 0777 shared
        done = cli("submit", "--no-wait", "--log-dir", "shared/logs", *SMALL, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        line = error_line(done.stderr)
        assert repr(str(shared)) in line and "chmod go-w" in line
        assert not (shared / "logs").exists()

    def test_a_pickle_swapped_after_submission_never_runs(
        self, tmp_path: Path, other_user: tuple[int, int]
    ) -> None:
        logs = tmp_path / "logs"
        old = os.umask(0o002)  # what the tool creates stays private whatever the umask
        try:
            done = cli("submit", "--no-wait", "--json", "--log-dir", str(logs),
                       "--sbatch-arg", "hold=", *SMALL)
        finally:
            os.umask(old)
        assert done.returncode == 0, done.stderr
        job_id = json.loads(done.stdout)["job"]["job_id"]
        try:
            made = [logs, *logs.iterdir()]
            for path in made:
                assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600)
            # What another user plants: their own pickle in place of the job's, whose loading
            # would leave a marker (root writes it here and hands it over to them).
            marker = tmp_path / "planted-code-ran"
            planted = logs / f"{job_id}_submitted.pkl"
            assert planted.exists()
            planted.write_bytes(pickle.dumps(Planted(str(marker))))
            os.chown(planted, *other_user)
            assert planted.stat().st_uid == other_user[0]
        finally:
            subprocess.run(["scontrol", "release", job_id], capture_output=True, timeout=30)
        state = wait_until_ended(job_id)
        assert state == "FAILED", state
        assert not marker.exists()
        err = (logs / f"{job_id}_0_log.err").read_text()
        assert f"autograd-check: refusing to run Slurm job {job_id}: " in err, err
        assert "belongs to another user" in err and "nothing was loaded" in err
        result = cli("result", job_id, "--log-dir", str(logs))
        assert result.returncode == 4, result.stderr
        # the job's own logs too (sbatch hands the submitting umask, 077, to the job)
        for path in logs.glob(f"{job_id}_*"):
            if path != planted:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.skipif(shutil.which("sbatch") is None, reason="no sbatch here to compare with")
def test_the_option_list_is_sbatchs_own() -> None:
    """Every option of the list is one sbatch knows, and prefixes resolve as sbatch resolves them
    (`sbatch --KEY=1 --usage` parses its options and stops; nothing reaches the controller)."""
    from autograd_check.slurm.options import SBATCH_LONG_OPTIONS, sbatch_option

    def sbatch_says(key: str) -> str:
        done = subprocess.run(["sbatch", f"--{key}=1", "--usage"], capture_output=True,
                              text=True, timeout=30, check=False)
        return (done.stdout + done.stderr).splitlines()[0]

    unknown = [o for o in sorted(SBATCH_LONG_OPTIONS) if "unrecognized option" in sbatch_says(o)]
    assert unknown == []
    for key in ("arr", "a", "tim", "ti", "outp", "gpu", "gpus-per-n", "mail-t", "cpus", "cluste",
                "ex", "exc", "no-r", "n", "nt"):
        ambiguous = "is ambiguous" in sbatch_says(key)
        try:
            sbatch_option(key)
        except BadInput:
            assert ambiguous, key
        else:
            assert not ambiguous, key
