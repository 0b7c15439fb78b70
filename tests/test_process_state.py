"""A check leaves the process as it found it: torch's threads, global RNG, default dtype and grad
mode, sys.modules and sys.path, the environment, and glibc's dynamic mmap threshold.

Each test runs the finite-difference reference in-process (the path that changes the most: one
torch thread while the batches run, a heap warmed for them), plainly, with a --target file and
with --model mlp, and compares the process's state before and after."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from autograd_check.base.spec import build_spec
from autograd_check.execute import execute
from autograd_check.losses.user import load_target
from autograd_check.references.finite_diff import CPU_THREADS

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _state() -> dict[str, Any]:
    return {
        "threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "deterministic": (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        ),
        "sys.path": list(sys.path),
        "environment": dict(os.environ),
    }


@pytest.fixture
def two_threads() -> Iterator[None]:
    """More torch threads than finite differences use, so that their restoration is seen."""
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS + 1)
    yield
    torch.set_num_threads(before)


def _target_file(tmp_path: Path) -> str:
    """A target importing a module beside it, as `python FILE.py` would allow; a dataclass needs
    the target in sys.modules while it executes."""
    (tmp_path / "helper_for_state_test.py").write_text("SCALE = 2.0\n")
    (tmp_path / "helper_package_for_state_test").mkdir(exist_ok=True)
    (tmp_path / "helper_package_for_state_test" / "__init__.py").write_text("")
    (tmp_path / "helper_package_for_state_test" / "numbers.py").write_text("TWO = 2.0\n")
    (tmp_path / "state_target.py").write_text(textwrap.dedent("""\
        import dataclasses

        import torch
        import torch.utils.bundled_inputs  # first imported here: an import like any other
        from helper_for_state_test import SCALE
        from helper_package_for_state_test.numbers import TWO


        @dataclasses.dataclass
        class Target:
            scale: float = SCALE

            def loss(self, predicted, real):
                return (predicted - real).pow(2).sum()

            def manual_grad(self, predicted, real):
                return self.scale * (predicted - real) * (TWO / 2.0)
        """))
    return f"{tmp_path / 'state_target.py'}:Target"


SPECS: dict[str, Callable[[Path], dict[str, Any]]] = {
    "plain": lambda _: {},
    "target file": lambda tmp: {"target": _target_file(tmp)},
    "example target": lambda _: {"target": f"{ROOT / 'examples' / 'correct_target.py'}:log_cosh"},
    "mlp": lambda _: {"model": "mlp"},
}


def _run(options: dict[str, Any]) -> None:
    result = execute(build_spec({"reference": "finite-diff", "shape": "16x16", **options}))
    assert any("finite-diff" in c.name for c in result.comparisons)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("case", list(SPECS))
def test_the_check_leaves_the_process_as_it_found_it(case: str, tmp_path: Path) -> None:
    options = SPECS[case](tmp_path)
    _run({k: v for k, v in options.items() if k != "target"})  # lazy imports happen here
    before, rng, modules = _state(), torch.get_rng_state(), set(sys.modules)

    _run(options)

    assert _state() == before
    assert torch.equal(torch.get_rng_state(), rng), "the global RNG was drawn from"
    left = set(sys.modules) - modules
    if case == "target file":  # the first import of a torch module is an import like any other
        assert "torch.utils.bundled_inputs" in sys.modules
        left -= {m for m in left if m.startswith("torch.")}
    assert not left, "modules left in sys.modules"


def test_it_holds_under_no_grad_and_inference_mode(tmp_path: Path) -> None:
    """The check turns grad mode on for itself (autograd needs it), and puts the caller's back."""
    with torch.no_grad():
        _run({"target": _target_file(tmp_path)})
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        _run({"model": "mlp"})
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()


def test_threads_are_restored_when_the_check_fails_midway(tmp_path: Path) -> None:
    """A target whose loss raises under finite differences (after autograd has run): a failed
    check, and the torch threads are back to what they were."""
    (tmp_path / "raising.py").write_text(textwrap.dedent("""\
        import torch

        calls = 0

        def loss(predicted, real):
            global calls
            calls += 1
            if calls > 2:  # the forward, then the evaluation of the loss in float64
                raise ValueError("no more")
            return (predicted - real).pow(2).sum()

        def manual_grad(predicted, real):
            return 2.0 * (predicted - real)
        """))
    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS + 1)
    try:
        result = execute(build_spec({"reference": "finite-diff", "shape": "4x4",
                                     "target": f"{tmp_path / 'raising.py'}"}))
        assert not result.passed and result.error is not None
        assert torch.get_num_threads() == CPU_THREADS + 1
    finally:
        torch.set_num_threads(before)


def test_a_target_file_is_imported_once_per_version_and_not_left_in_sys_modules(
    tmp_path: Path,
) -> None:
    """A sweep loads the same target for every case: the file runs once, until it changes."""
    log = tmp_path / "imports.log"
    target = tmp_path / "counted.py"
    source = textwrap.dedent(f"""\
        with open({str(log)!r}, "a") as f:
            f.write("imported\\n")

        def loss(predicted, real):
            return (predicted - real).pow(2).sum()

        def manual_grad(predicted, real):
            return {{scale}} * (predicted - real)
        """)
    target.write_text(source.format(scale="2.0"))
    assert execute(build_spec({})).passed  # the check's own lazy imports happen here
    modules = set(sys.modules)
    assert load_target(str(target)).name == "counted.py"
    assert execute(build_spec({"target": str(target)})).passed
    assert log.read_text() == "imported\n"
    assert set(sys.modules) == modules

    target.write_text(source.format(scale="3.0"))  # a new version: imported again
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert not execute(build_spec({"target": str(target)})).passed
    assert log.read_text() == "imported\nimported\n"
    assert set(sys.modules) == modules


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_glibcs_dynamic_mmap_threshold_is_still_on(tmp_path: Path) -> None:
    """glibc raises its mmap threshold to the size of an mmapped block when that block is freed,
    unless mallopt() has set a threshold: then every block that large is mmapped again. After
    the check, a block freed must still raise it (the next one as large comes from the heap)."""
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc < 2.33 has no mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]

    for options in SPECS.values():
        _run(options(tmp_path))

    size = (32 << 20) - (1 << 20)  # under glibc's 32 MiB ceiling for the dynamic threshold

    def mmapped() -> bool:
        blocks = libc.mallinfo2().hblks
        pointer = libc.malloc(size)
        assert pointer
        try:
            return bool(libc.mallinfo2().hblks > blocks)
        finally:
            libc.free(pointer)

    mmapped()  # mmapped, unless the threshold is already above it; freeing it raises it
    assert not mmapped(), "glibc's dynamic mmap threshold was turned off (mallopt)"
