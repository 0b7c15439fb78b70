"""benchmarks/bench_run.py: how it measures and reports (nothing here is timed)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_run.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_run", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_run"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


bench = _load()


class TestRunOnce:
    def test_records_wall_and_the_childs_own_peak_rss(self) -> None:
        # Measured from a small process, as the benchmark runs: a child's ru_maxrss starts at
        # its spawner's resident size, and this pytest process (torch loaded) is large.
        code = (
            "import os, sys, importlib.util\n"
            f"spec = importlib.util.spec_from_file_location('bench_run', {str(BENCH)!r})\n"
            "bench = importlib.util.module_from_spec(spec)\n"
            "sys.modules['bench_run'] = bench\n"
            "spec.loader.exec_module(bench)\n"
            "fill = \"b = b'x' * (200 * 2**20); print(1)\"  # writes every page\n"
            "big = bench.Variant('big', [sys.executable, '-c', fill], ours=True)\n"
            "small = bench.Variant('small', [sys.executable, '-c', 'print(1)'], ours=True)\n"
            "bench.run_once(big, dict(os.environ))\n"
            "bench.run_once(small, dict(os.environ))\n"
            "print(big.walls[0] > 0, small.walls[0] > 0, big.rss_kib[0], small.rss_kib[0])\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        big_ok, small_ok, big_rss, small_rss = done.stdout.split()
        assert big_ok == small_ok == "True"
        # Per child, not the largest child so far (what RUSAGE_CHILDREN would give).
        assert int(big_rss) > 200 * 1024 > 100 * 1024 > int(small_rss)

    def test_our_command_must_not_write_to_stderr(self) -> None:
        noisy = bench.Variant(
            "noisy", [sys.executable, "-c", "import sys; print(1); print('w', file=sys.stderr)"],
            ours=True,
        )
        with pytest.raises(bench.BenchError, match="wrote to stderr"):
            bench.run_once(noisy, dict(os.environ))

    def test_a_failing_command_stops_the_benchmark(self) -> None:
        failing = bench.Variant("failing", [sys.executable, "-c", "raise SystemExit(3)"], False)
        with pytest.raises(bench.BenchError, match="exit 3"):
            bench.run_once(failing, dict(os.environ))


class TestReport:
    def comparison(self, tool_wall: float, tool_rss: int, rss_limit: float | None) -> object:
        tool = bench.Variant("tool", [], True, walls=[tool_wall] * 3, rss_kib=[tool_rss] * 3)
        base = bench.Variant("base", [], False, walls=[1.0, 2.0, 3.0], rss_kib=[1000] * 3)
        return bench.Comparison("x", tool, base, wall_limit=1.10, rss_limit=rss_limit)

    def test_ratios_are_of_medians_and_limits_are_inclusive(self) -> None:
        c = self.comparison(2.2, 1000, 1.00)
        assert c.wall_ratio() == pytest.approx(1.10)
        assert c.passed()  # type: ignore[attr-defined]

    @pytest.mark.parametrize(("wall", "rss"), [(2.3, 1000), (2.0, 1001)])
    def test_over_either_limit_fails(self, wall: float, rss: int) -> None:
        c = self.comparison(wall, rss, 1.00)
        assert not c.passed()  # type: ignore[attr-defined]
        assert "| FAIL |" in bench.table([c])

    def test_memory_is_not_judged_without_a_memory_limit(self) -> None:
        c = self.comparison(2.0, 5000, None)
        assert c.passed()  # type: ignore[attr-defined]
        assert "RSS ≤" not in bench.table([c])

    def test_import_table_tells_imported_from_attempted(self) -> None:
        run = bench.Imports("`run`", {"torch": 900.0, "numpy": 0.1, "(standard library)": 50.0},
                            {"torch"})
        snippet = bench.Imports("snippet", {"torch": 950.0}, {"torch", "numpy"})
        text = bench.import_table([run, snippet])
        assert "| torch | 900 | 950 |" in text
        # numpy was only attempted by `run` (not installed), but imported by the snippet.
        assert "| numpy | not imported | 0 |" in text
        assert "| submitit | not imported | not imported |" in text

    def test_standard_library_is_one_row(self) -> None:
        assert bench.grouped({"re": 1.0, "json": 2.0, "typer": 3.0}) == {
            "(standard library)": 3.0,
            "typer": 3.0,
        }

    @pytest.mark.parametrize(("text", "shape"), [("4096x4096", (4096, 4096)), ("64", (64, 64))])
    def test_parse_square(self, text: str, shape: tuple[int, int]) -> None:
        assert bench.parse_square(text) == shape

    @pytest.mark.parametrize("text", ["abc", "0x4", "4x"])
    def test_parse_square_refuses(self, text: str) -> None:
        with pytest.raises(ValueError):
            bench.parse_square(text)


def test_snippet_is_the_tutorials_code(tmp_path: Path) -> None:
    text = bench.snippet_file(tmp_path, (3, 8)).read_text()
    for line in (
        "real = torch.rand(3, 8)",
        "predicted = torch.rand(3, 8, requires_grad=True)",
        "loss = (predicted - real).pow(2).sum()",
        "    manual_gradient_predicted = 2.0 * (predicted - real)",
        "loss.backward()",
        "auto_gradient_predicted = predicted.grad",
        "print(manual_gradient_predicted.eq(auto_gradient_predicted).all())",
    ):
        assert line in text.splitlines()


def test_help_is_held_to_a_tenth_of_import_torch() -> None:
    assert bench.HELP_LIMIT == 0.10
