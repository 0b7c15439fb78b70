"""Start-up: how torch is imported, and what `run` brings in (each case in a fresh interpreter)."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A finder that makes numpy unimportable, as in a clean environment with only torch installed:
# torch then warns "Failed to initialize NumPy" at import.
NO_NUMPY = """\
import sys
class _NoNumpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy" or name.startswith("numpy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoNumpy())
"""


def python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


class TestImportTorch:
    def test_bare_import_warns_without_numpy(self) -> None:
        # The control: without this warning the next test would prove nothing.
        done = python(NO_NUMPY + "import torch\n")
        assert done.returncode == 0, done.stderr
        assert "Failed to initialize NumPy" in done.stderr

    def test_import_torch_is_silent_without_numpy(self) -> None:
        done = python(
            NO_NUMPY + "from autograd_check.base.lazy_torch import import_torch\n"
            "torch = import_torch()\n"
            "print(torch.ones(2).sum().item())\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "2.0"
        assert done.stderr == ""

    def test_collector_is_left_enabled_and_torch_frozen(self) -> None:
        done = python(
            "import gc\n"
            "from autograd_check.base.lazy_torch import import_torch\n"
            "torch = import_torch()\n"
            "print(gc.isenabled(), gc.get_freeze_count() > 10000, import_torch() is torch)\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "True", "True"]

    def test_a_disabled_collector_stays_disabled(self) -> None:
        done = python(
            "import gc\n"
            "gc.disable()\n"
            "from autograd_check.base.lazy_torch import import_torch\n"
            "import_torch()\n"
            "print(gc.isenabled())\n"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "False"


RUN_AND_LIST = """\
import sys
from autograd_check.cli import main
sys.argv = ["autograd-check", "run"]
try:
    main()
except SystemExit as e:
    code = e.code
print("LOADED", code, " ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


class TestRunStartUp:
    def test_run_writes_nothing_to_stderr_without_numpy(self) -> None:
        done = python(NO_NUMPY + RUN_AND_LIST)
        assert done.stderr == ""
        assert "PASS" in done.stdout
        assert done.stdout.splitlines()[-1].split()[1] == "0"

    def test_a_target_writes_nothing_to_stderr_without_numpy(self) -> None:
        # The user's module imports torch itself, before our code has run any check.
        code = NO_NUMPY + RUN_AND_LIST.replace(
            '"run"]', '"run", "--target", "examples/correct_target.py:log_cosh"]'
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert done.stderr == ""
        assert done.stdout.splitlines()[-1].split()[1] == "0"

    def test_run_does_not_import_slurm_or_plotting_packages(self) -> None:
        done = python(RUN_AND_LIST)
        loaded = set(done.stdout.splitlines()[-1].split()[2:])
        assert "torch" in loaded and "rich" in loaded  # the listing works
        assert not loaded & {"submitit", "cloudpickle", "matplotlib"}

    def test_run_does_not_import_sympy(self) -> None:
        """loss.backward() without an explicit gradient: with one, torch imports sympy for its
        shape checks (about 130 modules and 30 MiB more)."""
        for args in ([], ["--model", "mlp", "--shape", "3x4"]):
            argv = ", ".join(f'"{a}"' for a in ["run", *args])
            done = python(RUN_AND_LIST.replace('"run"', argv))
            loaded = set(done.stdout.splitlines()[-1].split()[2:])
            assert "torch" in loaded and "sympy" not in loaded, args

    @pytest.mark.skipif(
        tuple(int(p) for p in metadata.version("typer").split(".")[:2]) >= (0, 29),
        reason="typer >= 0.29 imports pydantic on every command; pyproject keeps typer < 0.29",
    )
    def test_run_does_not_import_pydantic(self) -> None:
        done = python(RUN_AND_LIST)
        loaded = set(done.stdout.splitlines()[-1].split()[2:])
        assert "typer" in loaded
        assert "pydantic" not in loaded


HELP_AND_LIST = """\
import sys
from autograd_check.cli import main
sys.argv = ["autograd-check", *{args!r}]
try:
    main()
except SystemExit as e:
    code = e.code
print("LOADED", code, " ".join(sorted(sys.modules)))
"""

COMMAND_MODULES = {
    "autograd_check.cli.run", "autograd_check.cli.env", "autograd_check.cli.submit",
    "autograd_check.cli.jobs", "autograd_check.cli.sweep", "autograd_check.cli.report",
    "autograd_check.cli.tour",
}


def loaded_by(*args: str) -> tuple[int, set[str]]:
    done = python(HELP_AND_LIST.format(args=list(args)))
    assert done.stderr == "", done.stderr
    last = done.stdout.splitlines()[-1].split()
    assert last[0] == "LOADED"
    return int(last[1]), set(last[2:])


class TestHelpStartUp:
    """`--help` imports the app and the command names only: a command loads when it runs."""

    @pytest.mark.parametrize("args", [["--help"], [], ["--version"]])
    def test_app_help_loads_no_command(self, args: list[str]) -> None:
        code, loaded = loaded_by(*args)
        assert code == 0
        tops = {m.split(".")[0] for m in loaded}
        assert "typer" in tops  # the listing works
        assert not tops & {"torch", "submitit", "cloudpickle", "numpy", "pydantic"}
        assert not loaded & COMMAND_MODULES
        # typer's help module pulls in Markdown, tracebacks and syntax highlighting
        assert "typer.rich_utils" not in loaded and "rich.markdown" not in loaded

    @pytest.mark.parametrize(
        ("command", "module"),
        [("run", "autograd_check.cli.run"), ("status", "autograd_check.cli.jobs"),
         ("tour", "autograd_check.cli.tour")],
    )
    def test_a_command_loads_its_own_module_only(self, command: str, module: str) -> None:
        code, loaded = loaded_by(command, "--help")
        assert code == 0
        assert loaded & COMMAND_MODULES == {module}
        assert "torch" not in {m.split(".")[0] for m in loaded}
