"""numpy 2 beside a torch built for numpy 1 (torch < 2.3) writes a 50-line notice, a Traceback
included, to stderr while torch loads; torch goes on without numpy, which no check needs. The
notice stays off the user's screen, in the command and in the ranks' fork server alike, and
nothing else that is written to stderr is hidden.

The torch these tests run on is built for numpy 2, so a stand-in numpy on PYTHONPATH writes the
notice as numpy 2 does (one sys.stderr.write, once) and is then missing."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from autograd_check.base.lazy_torch import NUMPY_NOTICE, _WithoutNumpyNotice

NOTICE = (
    "\nA module that was compiled using NumPy 1.x cannot be run in\nNumPy 2.4.6 as it may "
    "crash. To support both 1.x and 2.x\nversions of NumPy, modules must be compiled with NumPy "
    "2.0.\n\nTraceback (most recent call last):  File \"<string>\", line 1, in <module>\n"
    "  File \"torch/__init__.py\", line 1382, in <module>\n"
)
STAND_IN = f"""\
import sys
if not getattr(sys, "_numpy_notice_written", False):
    sys._numpy_notice_written = True
    sys.stderr.write({NOTICE!r})
raise ModuleNotFoundError("No module named 'numpy'", name="numpy")
"""


@pytest.fixture(scope="module")
def numpy_2_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """This environment with the stand-in numpy first on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("numpy2")
    (folder / "numpy").mkdir()
    (folder / "numpy" / "__init__.py").write_text(STAND_IN)
    paths = [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SRUN_"))}
    return {**clean, "PYTHONPATH": os.pathsep.join(paths), "COLUMNS": "100", "NO_COLOR": "1"}


def python(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env=env)


class TestFilter:
    def test_drops_the_notice_only(self) -> None:
        stream = io.StringIO()
        quiet = _WithoutNumpyNotice(stream)
        assert NUMPY_NOTICE in NOTICE
        assert quiet.write(NOTICE) == len(NOTICE)
        quiet.write("a real error\n")
        assert stream.getvalue() == "a real error\n"


class TestOnTheScreen:
    def test_bare_import_shows_the_notice(self, numpy_2_env: dict[str, str]) -> None:
        # The control: without the notice here the next tests would prove nothing.
        done = python(["-c", "import torch"], numpy_2_env)
        assert done.returncode == 0, done.stderr
        assert "A module that was compiled using NumPy 1.x" in done.stderr

    def test_import_torch_hides_it(self, numpy_2_env: dict[str, str]) -> None:
        done = python(["-c", "from autograd_check.base.lazy_torch import import_torch\n"
                             "print(import_torch().ones(2).sum().item())"], numpy_2_env)
        assert (done.returncode, done.stdout, done.stderr) == (0, "2.0\n", "")

    def test_run_with_ranks_hides_it_in_the_fork_server_too(
            self, numpy_2_env: dict[str, str]) -> None:
        done = python(["-m", "autograd_check", "run", "--ranks", "2", "--model", "mlp",
                       "--shape", "4x8", "--timeout", "120"], numpy_2_env)
        assert done.returncode == 0, done.stderr
        assert "PASS" in done.stdout and done.stderr == ""
