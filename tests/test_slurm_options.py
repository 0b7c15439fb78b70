"""Slurm options: validated before anything reaches Slurm; the scripts and argv built from them."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from autograd_check.base.errors import BadInput
from autograd_check.base.spec import CheckSpec
from autograd_check.slurm.batch import executor_parameters, sbatch_script
from autograd_check.slurm.options import (
    DEFAULT_TIME_MIN,
    SlurmOptions,
    build_slurm_options,
    format_minutes,
    mem_to_mb,
    parse_job_id,
    parse_mem,
    parse_sbatch_args,
    parse_time,
)
from autograd_check.slurm.step import setup_script, step_command


class TestTime:
    @pytest.mark.parametrize(
        ("text", "minutes"),
        [
            ("10", 10),
            (10, 10),
            ("1:30", 2),  # MM:SS, rounded up to whole minutes
            ("00:10:00", 10),
            ("01:00:01", 61),
            ("1-0", 24 * 60),  # D-HH
            ("1-02:30", 24 * 60 + 150),  # D-HH:MM
            ("2-00:00:30", 2 * 24 * 60 + 1),  # D-HH:MM:SS
        ],
    )
    def test_slurm_formats(self, text: object, minutes: int) -> None:
        assert parse_time(text) == minutes

    @pytest.mark.parametrize(
        "text", ["abc", "", "1:2:3:4", "-5", "10m", "1-", "x-01:00", "00:61:00", "00:10:60", "0",
                 "0:00:00", True, 1.5]
    )
    def test_refused(self, text: object) -> None:
        with pytest.raises(BadInput, match="time"):
            parse_time(text)

    def test_format_minutes(self) -> None:
        assert format_minutes(90) == "01:30:00"
        assert format_minutes(24 * 60 + 5) == "1-00:05:00"


class TestValues:
    @pytest.mark.parametrize(
        ("text", "expected"), [("500M", "500M"), ("1g", "1G"), ("2048", "2048M"), ("1GB", "1G")]
    )
    def test_mem(self, text: str, expected: str) -> None:
        assert parse_mem(text) == expected
        # One parser: the MB a size means agree with the form sbatch is given.
        assert mem_to_mb(text) == mem_to_mb(expected)

    def test_mem_to_mb(self) -> None:
        assert (mem_to_mb("500M"), mem_to_mb("1G"), mem_to_mb(2048), mem_to_mb("1T")) == (
            500, 1024, 2048, 1024 * 1024
        )
        assert mem_to_mb("1536K") == 2  # rounded up
        with pytest.raises(BadInput, match="mem 'lots' is not a size"):
            mem_to_mb("lots")
        with pytest.raises(BadInput, match="mem True is not a size"):
            mem_to_mb(True)

    @pytest.mark.parametrize("text", ["lots", "1.5G", "-1G", "0", "1 G B", "1P"])
    def test_mem_refused(self, text: str) -> None:
        with pytest.raises(BadInput, match="mem"):
            parse_mem(text)

    @pytest.mark.parametrize(
        ("key", "value", "match"),
        [
            ("gpus", "-1", "must be >= 0"),
            ("gpus", "two", "not a whole number"),
            ("cpus", "0", "must be >= 1"),
            ("job_name", "a;b", "shell characters"),
            ("job_name", "a b", "shell characters"),
            ("job_name", "x\ny", "newline"),
            ("job_name", "$(reboot)", "shell characters"),
            ("partition", "gpu\n#SBATCH --x", "newline"),
            ("partition", "a b", "not a Slurm name"),
            ("account", "acct;rm", "not a Slurm name"),
            ("constraint", "a100 && reboot", "not allowed"),
            ("setup", "module load x", "list of shell lines"),
            ("setup", ["module load x\nrm -rf /"], "newline"),
            ("log_dir", "/tmp/%j", "'%'"),
            ("timeout", "0", "seconds > 0"),
            ("timeout", "soon", "seconds > 0"),
        ],
    )
    def test_refused_before_slurm(self, key: str, value: object, match: str) -> None:
        with pytest.raises(BadInput, match=match):
            build_slurm_options({key: value})

    def test_unknown_key(self) -> None:
        with pytest.raises(BadInput, match="unknown Slurm option 'node'"):
            build_slurm_options({"node": 2})

    def test_none_means_default(self) -> None:
        assert build_slurm_options({"time": None, "gpus": None}) == SlurmOptions()

    def test_all_parsed(self, tmp_path: Path) -> None:
        opts = build_slurm_options(
            {
                "partition": "debug", "time": "00:05:00", "gpus": "2", "cpus": 3, "mem": "1g",
                "account": "proj", "qos": "high", "constraint": "a100|h100", "job_name": "x-1",
                "setup": ["module load cuda"], "sbatch_args": ["mail-type=END"],
                "log_dir": str(tmp_path), "timeout": "90",
            }
        )
        assert (opts.time_min, opts.gpus, opts.cpus, opts.mem, opts.timeout) == (5, 2, 3, "1G", 90)
        assert opts.sbatch_args == (("mail-type", "END"),)
        assert opts.folder() == tmp_path
        assert opts.mem_mb == 1024

    @pytest.mark.parametrize("job_id", ["12", "12_3"])
    def test_job_id(self, job_id: str) -> None:
        assert parse_job_id(job_id) == job_id

    @pytest.mark.parametrize("job_id", ["", "abc", "12;rm", "-1", "12.0"])
    def test_job_id_refused(self, job_id: str) -> None:
        with pytest.raises(BadInput, match="job id"):
            parse_job_id(job_id)


class TestSbatchArgs:
    def test_pairs_and_flags(self) -> None:
        assert parse_sbatch_args(["mail-type=END", "exclusive=", "--comment=a b"]) == (
            ("mail-type", "END"), ("exclusive", ""), ("comment", "a b"),
        )

    def test_table(self) -> None:
        assert parse_sbatch_args({"mail_user": "me@x.org", "nice": 5}) == (
            ("mail-user", "me@x.org"), ("nice", "5"),
        )

    def test_without_equals(self) -> None:
        with pytest.raises(BadInput, match="has no '='"):
            parse_sbatch_args(["exclusive"])

    def test_table_flag_is_an_empty_string(self) -> None:
        assert parse_sbatch_args({"exclusive": ""}) == (("exclusive", ""),)

    @pytest.mark.parametrize(
        ("table", "match"),
        [
            ({"exclusive": True}, r"'exclusive' = True is a boolean; expected a string .*\"\""),
            ({"mail-type": ["END"]}, r"'mail-type' = \['END'\] is a list; expected a string"),
            ({"x": {"a": "b"}}, r"'x' = \{'a': 'b'\} is a table"),
            ({"nice": 1.5}, r"'nice' = 1.5 is a fractional number"),
        ],
    )
    def test_table_values_are_strings(self, table: dict[str, object], match: str) -> None:
        """str(True) would write `--exclusive=True`, str(["END"]) a Python list."""
        with pytest.raises(BadInput, match=match):
            parse_sbatch_args(table)

    @pytest.mark.parametrize(
        ("arg", "match"),
        [
            ("output=/elsewhere", "set by --log-dir"),
            ("partition=x", "use --partition"),
            ("array=0-3", "sweep"),
            ("Bad Key=1", "not an sbatch option name"),
            ("comment=a\nb", "newline"),
        ],
    )
    def test_refused(self, arg: str, match: str) -> None:
        with pytest.raises(BadInput, match=match):
            parse_sbatch_args([arg])


class TestScript:
    def test_defaults(self, tmp_path: Path) -> None:
        script = sbatch_script(CheckSpec(), SlurmOptions(log_dir=tmp_path))
        assert script.startswith("#!/bin/bash")
        assert f"#SBATCH --time={DEFAULT_TIME_MIN}" in script
        assert "#SBATCH --job-name=autograd-check" in script
        assert f"#SBATCH --output={tmp_path}/%j_0_log.out" in script
        assert "gpus" not in script
        assert "-m submitit.core._submit" in script
        assert not list(tmp_path.iterdir()), "a dry run writes nothing"

    def test_cuda_asks_for_one_gpu(self, tmp_path: Path) -> None:
        spec = CheckSpec(device="cuda")
        assert "#SBATCH --gpus-per-node=1" in sbatch_script(spec, SlurmOptions(log_dir=tmp_path))
        two = sbatch_script(spec, SlurmOptions(log_dir=tmp_path, gpus=2))
        assert "#SBATCH --gpus-per-node=2" in two
        none = sbatch_script(spec, SlurmOptions(log_dir=tmp_path, gpus=0))
        assert "gpus" not in none
        gres = SlurmOptions(log_dir=tmp_path, sbatch_args=(("gres", "gpu:a100:1"),))
        text = sbatch_script(spec, gres)
        assert "#SBATCH --gres=gpu:a100:1" in text and "gpus-per-node" not in text

    def test_values_are_quoted(self, tmp_path: Path) -> None:
        opts = build_slurm_options(
            {"sbatch_args": ["comment=it's $(date) `x`", "exclusive="], "log_dir": str(tmp_path),
             "setup": ["module load cuda/12.4"], "mem": "1G", "cpus": 2, "partition": "debug",
             "constraint": "a100|h100"}
        )
        script = sbatch_script(CheckSpec(), opts)
        lines = script.splitlines()
        comment = next(ln for ln in lines if ln.startswith("#SBATCH --comment="))
        assert shlex.split(comment.split("=", 1)[1]) == ["it's $(date) `x`"]
        assert "#SBATCH --exclusive" in lines
        assert "#SBATCH --constraint='a100|h100'" in lines
        assert "#SBATCH --mem=1G" in lines and "#SBATCH --cpus-per-task=2" in lines
        # The setup line is the only shell text from the user, on its own line, before the check.
        assert lines.index("module load cuda/12.4") < next(
            i for i, ln in enumerate(lines) if "submitit.core._submit" in ln
        )

    def test_executor_parameters_names(self, tmp_path: Path) -> None:
        params = executor_parameters(CheckSpec(), SlurmOptions(time_min=5, qos="q", account="a"))
        assert params["time"] == 5 and params["qos"] == "q" and params["account"] == "a"
        assert params["ntasks_per_node"] == 1 and params["nodes"] == 1


class TestStepCommand:
    def test_argv_no_shell(self) -> None:
        spec = CheckSpec(shape=(4, 4))
        cmd = step_command(spec, SlurmOptions(cpus=1, mem="500M", time_min=3))
        assert cmd[:2] == ["srun", "--ntasks=1"]
        assert "--cpus-per-task=1" in cmd and "--mem=500M" in cmd and "--time=3" in cmd
        i = cmd.index(sys.executable)
        # python -c <start without the working folder on sys.path, then autograd_check>
        assert cmd[i + 1] == "-c" and 'run_module("autograd_check"' in cmd[i + 2]
        assert cmd[i + 3 : i + 5] == ["_step", "--spec"]
        assert '"shape": [4, 4]' in cmd[i + 5]
        assert "bash" not in cmd

    def test_cuda_gets_a_gpu(self) -> None:
        assert "--gpus=1" in step_command(CheckSpec(device="cuda"), SlurmOptions())
        assert not any(
            a.startswith("--gpus") for a in step_command(CheckSpec(), SlurmOptions())
        )

    def test_setup_runs_in_bash_from_a_file_with_arguments_apart(self) -> None:
        opts = SlurmOptions(setup=("module load x", "export HF_TOKEN=hf_secret"))
        cmd = step_command(CheckSpec(), opts, "/logs/.step-setup.abc.sh")
        i = cmd.index("bash")
        assert cmd[i + 1] == "/logs/.step-setup.abc.sh"
        assert cmd[i + 2] == sys.executable  # the check's argv follows as "$@", not as text
        # the setup lines (a secret among them) are in the file only: ps and sacct show argv
        assert not any("hf_secret" in a or "module load" in a for a in cmd)
        assert setup_script(opts) == 'module load x\nexport HF_TOKEN=hf_secret\nexec "$@"\n'
