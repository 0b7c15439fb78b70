"""The pytest plugin (src/autograd_check/pytest_plugin.py): the autograd_check fixture, its
options, what a failure shows, and that loading it imports no torch. Inner pytest runs use
pytester (in process, so torch is imported once); start-up is checked in fresh processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
import torch

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
HAS_CUDA = torch.cuda.is_available()

USES_EXAMPLES = """\
import pytest
import torch

from function_buggy import Swish
from function_correct import LogSumExp
"""


@pytest.fixture
def examples(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester whose inner tests can import the examples' Functions."""
    pytester.syspathinsert(EXAMPLES)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", *args)


class TestTheFixture:
    def test_it_is_registered_by_the_entry_point(self, pytester: pytest.Pytester) -> None:
        result = run(pytester, "--fixtures")
        result.stdout.fnmatch_lines(["autograd_check -- *pytest_plugin.py*",
                                     "*check() and assert_gradients() of autograd-check*"])

    def test_defaults_are_cpu_float32_seed_0(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("""
            import torch

            def test_defaults(autograd_check):
                assert autograd_check.device == torch.device("cpu")
                assert autograd_check.dtype == torch.float32
                assert autograd_check.seed == 0
                x = autograd_check.randn(2, 3)
                assert x.dtype == torch.float32 and x.requires_grad and x.is_leaf
                assert x.shape == autograd_check.randn((2, 3)).shape == (2, 3)
                assert not autograd_check.randn(2, requires_grad=False).requires_grad
                assert autograd_check.tensor([1.0, 2.0]).dtype == torch.float32
        """)
        run(pytester).assert_outcomes(passed=1)

    def test_randn_is_the_same_in_every_test(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("""
            import torch

            def expected():
                gen = torch.Generator().manual_seed(0)
                return torch.randn(3, generator=gen, dtype=torch.float64).float()

            def test_one(autograd_check):
                assert torch.equal(autograd_check.randn(3).detach(), expected())

            def test_two(autograd_check):
                assert torch.equal(autograd_check.randn(3).detach(), expected())
        """)
        run(pytester).assert_outcomes(passed=2)

    def test_a_correct_function_passes(self, examples: pytest.Pytester) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            from function_correct import manual

            def test_projection(autograd_check):
                result = autograd_check.assert_gradients(LogSumExp.apply,
                                                         autograd_check.randn(4, 5))
                assert result.passed

            def test_manual(autograd_check):
                x = autograd_check.randn(4, 5)
                assert autograd_check.check(LogSumExp.apply, x, manual=manual).passed
        """))
        run(examples).assert_outcomes(passed=2)

    @pytest.mark.parametrize("dtype", ["float64", "float32", "bfloat16", "float16"])
    def test_a_correct_hand_written_backward_passes_in_every_dtype(
            self, examples: pytest.Pytester, dtype: str) -> None:
        """In half precision manual and autograd round differently: judged against float64."""
        examples.makepyfile(dedent("""
            from traps import GradOutputInPlace, RMSNorm

            def test_rms_norm(autograd_check):
                x, w = autograd_check.randn(32, 32), autograd_check.randn(32)
                autograd_check.assert_gradients(RMSNorm.fn, x, w, manual=RMSNorm.manual)

            def test_the_trap_fails_by_its_name(autograd_check):
                result = autograd_check.check(GradOutputInPlace.apply,
                                              autograd_check.randn(4, 5),
                                              manual=GradOutputInPlace.manual)
                assert [c.kind for c in result.contract if not c.passed] == [
                    "grad-output-mutated"]
        """))
        run(examples, "--autograd-check-dtype", dtype).assert_outcomes(passed=2)

    def test_to_moves_a_module_and_a_tensor(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("""
            import pytest
            import torch

            def test_to(autograd_check):
                layer = autograd_check.to(torch.nn.Linear(3, 2))
                assert layer.weight.dtype == torch.float64
                x = autograd_check.to(torch.ones(2, requires_grad=True))
                assert x.dtype == torch.float64 and x.requires_grad and x.is_leaf
                assert autograd_check.assert_gradients(layer, autograd_check.randn(4, 3)).passed
                with pytest.raises(TypeError, match="not a list"):
                    autograd_check.to([1.0])
        """)
        run(pytester, "--autograd-check-dtype", "float64").assert_outcomes(passed=1)


class TestAFailure:
    def test_the_planted_bug_fails_with_the_table(self, examples: pytest.Pytester) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            def test_swish(autograd_check):
                autograd_check.assert_gradients(Swish.apply, autograd_check.randn(4, 5))
        """))
        result = run(examples)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([
            ">*autograd_check.assert_gradients(Swish.apply, autograd_check.randn(4, 5))",
            "E*AssertionError: FAIL: Swish.apply, reference projection: 0 of 1 comparisons "
            "passed",
            "E*checked: x (4×5 float32)",
            "E*compared*shape*bit-exact*mismatched*greatest abs diff*greatest rel diff*rtol*atol"
            "*verdict",
            "E*x: autograd vs projection*3 directions*3 of 3*FAIL",
            # where: elements' indices, never the direction's
            "E*located (x: autograd vs projection): 20 wrong elements of 20, all of them*: "
            "[[]0, 0]: autograd*, reference*",
            "E*criterion: *",
            "test_the_planted_bug_fails_with_the_table.py:*: AssertionError",
        ])
        # the plugin's and the API's own frames are hidden (__tracebackhide__)
        assert "pytest_plugin.py" not in result.stdout.str()
        assert "api/check.py" not in result.stdout.str()

    @pytest.mark.parametrize("tb", ["short", "line", "native"])
    def test_every_traceback_style_shows_the_table(
        self, examples: pytest.Pytester, tb: str
    ) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            def correct(x, grad_output):
                s = torch.sigmoid(x)
                return grad_output * (s + x * s * (1 - s))

            def test_swish(autograd_check):
                autograd_check.assert_gradients(Swish.apply, autograd_check.randn(4, 5),
                                                manual=correct)
        """))
        result = run(examples, f"--tb={tb}")
        result.assert_outcomes(failed=1)
        out = result.stdout.str()
        # manual against autograd: element by element, k of N mismatched, where and how much
        row = re.search(r"^E?\s*x\s+4×5\s+no\s+(\d+) of 20\s+(\S+) at \[\d+, \d+\]\s+"
                        r"(\S+) at \[\d+, \d+\]\s+1\.3e-06\s+1e-05\s+FAIL$", out, re.MULTILINE)
        assert row is not None, out
        assert 0 < int(row[1]) <= 20 and float(row[2]) > 1e-3

    def test_check_returns_the_result_for_an_assert_with_its_text(
        self, examples: pytest.Pytester
    ) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            def test_swish(autograd_check):
                result = autograd_check.check(Swish.apply, autograd_check.randn(4, 5))
                assert result.passed, str(result)
        """))
        result = run(examples)
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines(["E*AssertionError: FAIL: Swish.apply*",
                                     "E*x: autograd vs projection*FAIL"])


class TestOptions:
    def test_the_dtype_reaches_the_fixture_and_the_check(self, examples: pytest.Pytester) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            def test_dtype(autograd_check):
                assert autograd_check.dtype == torch.float64
                x = autograd_check.randn(4, 5)
                assert x.dtype == torch.float64
                result = autograd_check.check(LogSumExp.apply, x)
                assert result.spec["checked"][0]["dtype"] == "float64"
                assert "checked: x (4×5 float64)" in str(result)
        """))
        run(examples, "--autograd-check-dtype", "float64").assert_outcomes(passed=1)

    def test_the_seed_reaches_the_generator_and_the_check(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("""
            import torch

            def test_seed(autograd_check):
                assert autograd_check.seed == 7
                gen = torch.Generator().manual_seed(7)
                expected = torch.randn(3, generator=gen, dtype=torch.float64).float()
                x = autograd_check.randn(3)
                assert torch.equal(x.detach(), expected)
                assert autograd_check.check(torch.sin, x).spec["seed"] == 7
                assert autograd_check.check(torch.sin, x, seed=3).spec["seed"] == 3
        """)
        run(pytester, "--autograd-check-seed", "7").assert_outcomes(passed=1)

    def test_ini_settings_and_the_command_line_first(self, pytester: pytest.Pytester) -> None:
        pytester.makeini("""
            [pytest]
            autograd_check_dtype = float64
            autograd_check_seed = 5
        """)
        pytester.makepyfile("""
            import os
            import torch

            def test_settings(autograd_check):
                assert autograd_check.dtype == getattr(torch, os.environ["WANT_DTYPE"])
                assert autograd_check.seed == 5
        """)
        os.environ["WANT_DTYPE"] = "float64"
        try:
            run(pytester).assert_outcomes(passed=1)
            os.environ["WANT_DTYPE"] = "bfloat16"
            run(pytester, "--autograd-check-dtype", "bfloat16").assert_outcomes(passed=1)
        finally:
            del os.environ["WANT_DTYPE"]

    @pytest.mark.parametrize(
        ("option", "value", "says"),
        [
            # the command line's own parsers and words (base/spec.py)
            ("--autograd-check-device", "gpu", "device 'gpu' is not known; choose cpu, cuda, "
             "cuda:N (N >= 0) or auto"),
            ("--autograd-check-device", "cuda:x", "device 'cuda:x' is not known; choose cpu, "
             "cuda, cuda:N (N >= 0) or auto"),
            ("--autograd-check-dtype", "float8", "dtype 'float8' is not supported; choose "
             "one of float32, float64, float16, bfloat16"),
            ("--autograd-check-seed", "-1", "seed '-1' is not a non-negative integer"),
            ("--autograd-check-seed", str(2**64), f"seed '{2**64}' is too large; seeds go from 0 "
             "to 2**64 - 1"),
        ],
    )
    def test_a_bad_value_is_a_usage_error(
        self, pytester: pytest.Pytester, option: str, value: str, says: str
    ) -> None:
        pytester.makepyfile("def test_nothing(): pass")
        result = run(pytester, f"{option}={value}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"*error: argument {option}: {says}"])

    def test_a_bad_ini_value_is_a_usage_error(self, pytester: pytest.Pytester) -> None:
        pytester.makeini("[pytest]\nautograd_check_device = tpu\n")
        pytester.makepyfile("def test_nothing(): pass")
        result = run(pytester)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*ini setting autograd_check_device: device 'tpu' is not "
                                     "known; choose cpu, cuda, cuda:N (N >= 0) or auto"])

    def test_auto_is_cuda_when_usable(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile(f"""
            def test_auto(autograd_check):
                assert autograd_check.device.type == {"cuda" if HAS_CUDA else "cpu"!r}
                assert autograd_check.randn(2).device.type == autograd_check.device.type
        """)
        run(pytester, "--autograd-check-device", "auto").assert_outcomes(passed=1)

    @pytest.mark.skipif(HAS_CUDA, reason="a usable CUDA device is here")
    def test_cuda_without_one_skips_with_the_reason(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("""
            def test_uses_the_fixture(autograd_check):
                raise AssertionError("not reached")

            def test_does_not():
                pass
        """)
        result = run(pytester, "--autograd-check-device", "cuda", "-rs")
        result.assert_outcomes(passed=1, skipped=1)
        reason = ("no CUDA device is visible" if torch.version.cuda else
                  f"this torch build ({torch.__version__}) has no CUDA support")
        result.stdout.fnmatch_lines([f"SKIPPED *--autograd-check-device cuda: {reason}*"])

    @pytest.mark.cuda
    @pytest.mark.skipif(not HAS_CUDA, reason="no usable CUDA device here")
    def test_cuda_checks_on_the_gpu(self, examples: pytest.Pytester) -> None:
        examples.makepyfile(USES_EXAMPLES + dedent("""
            def test_on_the_gpu(autograd_check):
                assert autograd_check.device == torch.device("cuda", 0)
                x = autograd_check.randn(4, 5)
                assert x.is_cuda
                result = autograd_check.assert_gradients(LogSumExp.apply, x, reference="forward")
                assert result.spec["checked"][0]["device"] == "cuda:0"

            def test_the_bug_on_the_gpu(autograd_check):
                with pytest.raises(AssertionError, match="x: autograd vs projection"):
                    autograd_check.assert_gradients(Swish.apply, autograd_check.randn(4, 5))
        """))
        run(examples, "--autograd-check-device", "cuda").assert_outcomes(passed=2)

    def test_the_plugin_can_be_turned_off(self, pytester: pytest.Pytester) -> None:
        pytester.makepyfile("def test_x(autograd_check): pass")
        result = run(pytester, "-p", "no:autograd_check")
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*fixture 'autograd_check' not found*"])


# --- start-up: fresh processes ------------------------------------------------------------------

RECORD = """\
import atexit, sys
def _record():
    with open({out!r}, "w") as f:
        f.write("\\n".join(sorted(sys.modules)))
atexit.register(_record)
import pytest
sys.exit(pytest.console_main())
"""


@pytest.mark.parametrize(
    "args",
    [["--version"], ["--version", "--version"], ["--collect-only", "-q", "test_unrelated.py"],
     ["-q", "test_unrelated.py"]],
    ids=["version", "version-version", "collect", "run"],
)
def test_pytest_with_the_plugin_imports_no_torch(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "test_unrelated.py").write_text("def test_unrelated():\n    pass\n")
    out = tmp_path / "modules.txt"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    done = subprocess.run(
        [sys.executable, "-c", RECORD.format(out=str(out)), "-p", "no:cacheprovider", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = set(out.read_text().split())
    if args != ["--version"]:  # pytest answers a lone --version before loading any plugin
        assert "autograd_check.pytest_plugin" in modules  # the control: the plugin was loaded
    assert "torch" not in modules
    # the base floor's plain modules (the spec's parsers: no torch) may load; nothing above it
    engine = sorted(m for m in modules if m.startswith("autograd_check.")
                    and m not in ("autograd_check.pytest_plugin", "autograd_check._version")
                    and not m.startswith("autograd_check.base"))
    assert engine == []


def test_the_example_test_file_passes() -> None:
    """examples/test_gradients_example.py, run as a user runs it (its planted bug is xfail)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "examples/test_gradients_example.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^5 passed, 1 xfailed in ", done.stdout, re.MULTILINE), done.stdout
