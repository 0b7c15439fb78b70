"""TOML profiles: [check] and [slurm] tables under the flags, and errors that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from autograd_check.base.errors import BadInput
from autograd_check.cli import app
from autograd_check.config import slurm_from, spec_from

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
runner = CliRunner()


def profile(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def no_flags(**given: object) -> dict[str, object]:
    return {"config": None, **given}


class TestMerge:
    def test_file_fills_flags_win(self, tmp_path: Path) -> None:
        path = profile(tmp_path, '[check]\nshape = "4x5"\ndtype = "float64"\nseed = 3\n')
        spec = spec_from({"config": path, "dtype": None, "seed": "7"})
        assert (spec.shape, spec.dtype, spec.seed) == ((4, 5), "float64", 7)

    def test_slurm_table(self, tmp_path: Path) -> None:
        path = profile(
            tmp_path,
            '[slurm]\ntime = "00:20:00"\ncpus = 2\nmem = "2G"\nsetup = ["module load a"]\n'
            'sbatch_args = { mail-type = "END" }\n',
        )
        opts = slurm_from({"cpus": None, "mem": "1G", "setup": None}, path)
        assert (opts.time_min, opts.cpus, opts.mem) == (20, 2, "1G")
        assert opts.setup == ("module load a",)
        assert opts.sbatch_args == (("mail-type", "END"),)
        flags = slurm_from({"setup": ["source .venv/bin/activate"]}, path)
        # A list given by flags replaces the file's.
        assert flags.setup == ("source .venv/bin/activate",)

    def test_no_file(self) -> None:
        assert slurm_from({"partition": "debug"}, None).partition == "debug"


class TestErrors:
    @pytest.mark.parametrize(
        ("text", "match"),
        [
            ("[check]\nsize = 3\n", r"unknown key 'size' in \[check\]; known keys: shape"),
            ("[slurm]\nnode = 2\n", r"unknown key 'node' in \[slurm\]; known keys: partition"),
            ("[jobs]\nx = 1\n", r"unknown key 'jobs'; expected tables \[check\], \[slurm\]"),
            ('[check]\nshape = "3y8"\n', r"\[check\]: shape '3y8'"),
            ('[slurm]\ncpus = "two"\n', r"\[slurm\]: cpus 'two' is not a whole number"),
            ('[slurm]\ntime = "soon"\n', r"\[slurm\]: time 'soon' is not a time"),
            ('[slurm]\nsetup = "module load x"\n', r"\[slurm\]: setup .* expected a list"),
            ("[slurm]\ngpus = -1\n", r"\[slurm\]: gpus -1 is not allowed; it must be >= 0"),
            ('[slurm]\nmem = 1.5\n', r"\[slurm\]: mem 1.5 is not a size"),
            ("[slurm]\nsbatch_args = { exclusive = true }\n",
             r"\[slurm\]: sbatch arg 'exclusive' = True is a boolean; expected a string"),
            ('[slurm]\nsbatch_args = { mail-type = ["END"] }\n',
             r"\[slurm\]: sbatch arg 'mail-type' = \['END'\] is a list; expected a string"),
            ('[slurm]\nsbatch_args = { x = { y = "z" } }\n',
             r"\[slurm\]: sbatch arg 'x' = \{'y': 'z'\} is a table; expected a string"),
            ("[check\n", "is not valid TOML"),
            ("check = 3\n", r"'check' must be a table"),
        ],
    )
    def test_names_file_key_and_expectation(self, tmp_path: Path, text: str, match: str) -> None:
        path = profile(tmp_path, text)
        with pytest.raises(BadInput, match=match) as e:
            spec_from(no_flags(config=path))
            slurm_from({}, path)
        assert str(path) in str(e.value)

    def test_unreadable(self, tmp_path: Path) -> None:
        with pytest.raises(BadInput, match="cannot be read"):
            spec_from(no_flags(config=tmp_path / "missing.toml"))
        with pytest.raises(BadInput, match="cannot be read"):
            spec_from(no_flags(config=tmp_path))  # a folder

    def test_not_utf8(self, tmp_path: Path) -> None:
        path = tmp_path / "latin1.toml"
        path.write_bytes(b'[check]\nshape = "3\xe98"\n')
        with pytest.raises(BadInput, match="not UTF-8"):
            spec_from(no_flags(config=path))


class TestShippedProfiles:
    @pytest.mark.parametrize("name", ["local.toml", "slurm-cpu.toml", "slurm-gpu.toml"])
    def test_valid(self, name: str) -> None:
        path = CONFIGS / name
        spec = spec_from(no_flags(config=path))
        opts = slurm_from({}, path)
        assert spec.shape and opts.timeout > 0

    def test_gpu_profile_asks_for_a_gpu(self) -> None:
        spec = spec_from(no_flags(config=CONFIGS / "slurm-gpu.toml"))
        assert spec.device == "cuda" and slurm_from({}, CONFIGS / "slurm-gpu.toml").gpus == 1

    def test_every_profile_in_configs_has_valid_slurm_keys(self) -> None:
        for path in sorted(CONFIGS.glob("*.toml")):
            slurm_from({}, path)


class TestCli:
    def test_run_with_a_missing_config(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["run", "--config", str(tmp_path / "nope.toml")])
        assert result.exit_code == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "nope.toml" in lines[0] and "cannot be read" in lines[0]

    def test_submit_flags_override_the_file(self, tmp_path: Path) -> None:
        args = ["submit", "--dry-run", "--config", str(CONFIGS / "slurm-cpu.toml"),
                "--log-dir", str(tmp_path / "logs")]
        base = runner.invoke(app, args)
        assert base.exit_code == 0, base.stderr
        assert "#SBATCH --mem=1G" in base.stdout and "#SBATCH --cpus-per-task=1" in base.stdout
        over = runner.invoke(app, [*args, "--mem", "2G", "--time", "3"])
        assert "#SBATCH --mem=2G" in over.stdout and "#SBATCH --time=3" in over.stdout

    def test_submit_sbatch_args_table(self, tmp_path: Path) -> None:
        """A flag is `KEY = ""`; a boolean is exit 2 naming the file and the key."""
        args = ["submit", "--dry-run", "--log-dir", str(tmp_path / "logs"), "--config"]
        good = profile(tmp_path, '[slurm]\nsbatch_args = { exclusive = "", nice = 5 }\n')
        result = runner.invoke(app, [*args, str(good)])
        assert result.exit_code == 0, result.stderr
        assert "#SBATCH --exclusive\n" in result.stdout and "#SBATCH --nice=5\n" in result.stdout
        bad = profile(tmp_path, "[slurm]\nsbatch_args = { exclusive = true }\n", "bad.toml")
        result = runner.invoke(app, [*args, str(bad)])
        assert result.exit_code == 2 and result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(bad) in lines[0] and "'exclusive' = True" in lines[0]
        assert "--exclusive=True" not in result.stdout

    def test_submit_bad_slurm_table(self, tmp_path: Path) -> None:
        path = profile(tmp_path, '[slurm]\njob_name = "a b"\n')
        result = runner.invoke(app, ["submit", "--dry-run", "--config", str(path)])
        assert result.exit_code == 2 and result.stdout == ""
        assert "[slurm]: job name 'a b'" in result.stderr and str(path) in result.stderr
