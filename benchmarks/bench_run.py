"""autograd-check side by side with the bare tutorial snippet: wall time and peak memory.

Every sample is a fresh process. The variants of a comparison are interleaved (their order
alternates from one round to the next) so that a noisy neighbour hurts both alike, and the
medians are compared. Peak RSS is the child's own ru_maxrss (os.wait4), not the benchmark's.

    python benchmarks/bench_run.py                # the full table (7 runs each, about 4 minutes)
    python benchmarks/bench_run.py --runs 9       # more runs, steadier medians
    python benchmarks/bench_run.py --quick        # help and default shape only
    python benchmarks/bench_run.py --help-only    # `autograd-check --help` against `import torch`

`autograd-check --help` imports the app and typer only (no torch, no command module): its limit is
0.10x of `python -c "import torch"`, measured side by side in the same run.

The tool is run as the console script that sits next to this interpreter (what users type),
the snippet with this interpreter; run the script with the Python of the environment to measure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

# The tutorial's code, exactly, with only the shape as a parameter.
TUTORIAL = """\
import torch
real = torch.rand({dims})
print(real)
predicted = torch.rand({dims}, requires_grad=True)
print(predicted)
loss = (predicted - real).pow(2).sum()
with torch.no_grad():
    manual_gradient_predicted = 2.0 * (predicted - real)
print(manual_gradient_predicted)
loss.backward()
auto_gradient_predicted = predicted.grad
print(auto_gradient_predicted)
print(manual_gradient_predicted.eq(auto_gradient_predicted).all())
"""

HELP_LIMIT = 0.10
"""`autograd-check --help` at most this fraction of `python -c "import torch"` (median wall)."""

DEPENDENCIES = ("torch", "typer", "rich", "submitit", "pydantic", "click", "numpy", "shellingham")


@dataclass
class Variant:
    name: str
    argv: list[str]
    ours: bool  # our own command: its stderr must stay empty
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # user + system seconds, all threads

    def median_wall(self) -> float:
        return statistics.median(self.walls)

    def median_rss(self) -> float:
        return statistics.median(self.rss_kib)


@dataclass
class Comparison:
    label: str
    tool: Variant
    baseline: Variant
    wall_limit: float
    rss_limit: float | None

    def wall_ratio(self) -> float:
        return self.tool.median_wall() / self.baseline.median_wall()

    def rss_ratio(self) -> float:
        return self.tool.median_rss() / self.baseline.median_rss()

    def passed(self) -> bool:
        ok = self.wall_ratio() <= self.wall_limit
        if self.rss_limit is not None:
            ok = ok and self.rss_ratio() <= self.rss_limit
        return ok


class BenchError(Exception):
    pass


def run_once(variant: Variant, env: dict[str, str]) -> None:
    """One fresh process: wall time around spawn-to-reap, peak RSS of that child alone.

    Linux carries the spawning process's resident size over exec into the child's ru_maxrss, so
    a child's figure is never below this script's own (see own_rss_kib); keep this script small.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            variant.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env
        )
        # wait4 reaps exactly this child and gives its own rusage (getrusage(RUSAGE_CHILDREN)
        # would report the largest child so far).
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise BenchError(
            f"{variant.name}: exit {proc.returncode}: {stderr.decode(errors='replace')[-2000:]}"
        )
    if variant.ours and not stdout:
        raise BenchError(f"{variant.name}: printed nothing on stdout")
    if variant.ours and stderr:
        text = stderr.decode(errors="replace")[:2000]
        raise BenchError(f"{variant.name}: wrote to stderr: {text}")
    variant.walls.append(wall)
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    variant.rss_kib.append(usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss)
    variant.cpu.append(usage.ru_utime + usage.ru_stime)


def own_rss_kib() -> int:
    """This script's peak RSS: the floor under every child's ru_maxrss (see run_once)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


def measure(comparisons: Sequence[Comparison], runs: int, env: dict[str, str]) -> None:
    """One untimed warm-up each (page cache), then `runs` rounds, alternating the order in pairs."""
    for c in comparisons:
        for v in (c.tool, c.baseline):
            run_once(v, env)
            v.walls.clear()
            v.rss_kib.clear()
            v.cpu.clear()
    for i in range(runs):
        for c in comparisons:
            pair = (c.tool, c.baseline) if i % 2 == 0 else (c.baseline, c.tool)
            for v in pair:
                run_once(v, env)
        print(f"  round {i + 1}/{runs} done", file=sys.stderr, flush=True)


# -X importtime lines: "import time: self [us] | cumulative | imported package"
_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)$")


def import_costs(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Milliseconds of import time per top-level package (self times summed), one run."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    costs: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m:
            top = m.group(4).split(".")[0]
            costs[top] = costs.get(top, 0.0) + int(m.group(1)) / 1000
    return costs


# Runs a console script as the interpreter would, then lists the top-level packages it loaded.
PROBE = """\
import json, os, runpy, sys
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit as e:
    code = e.code
else:
    code = 0
with open(os.environ["BENCH_MODULES_OUT"], "w") as f:
    json.dump(sorted({m.split(".")[0] for m in sys.modules}), f)
sys.exit(code)
"""


def loaded_packages(argv: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages in sys.modules when the command is done."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "modules.json"
        subprocess.run(
            [sys.executable, "-c", PROBE, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env={**env, "BENCH_MODULES_OUT": str(out)},
            check=False,
        )
        if not out.exists():
            raise BenchError(f"could not list the modules {' '.join(argv)} loads")
        return set(json.loads(out.read_text()))


def median_costs(argv: list[str], env: dict[str, str], runs: int) -> dict[str, float]:
    samples = [import_costs(argv, env) for _ in range(runs)]
    names = set().union(*samples)
    return {n: statistics.median(s.get(n, 0.0) for s in samples) for n in names}


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def find_cli(explicit: str | None) -> str:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "autograd-check"
    if beside.exists():
        return str(beside)
    found = shutil.which("autograd-check")
    if not found:
        raise BenchError("no autograd-check console script found; pip install the project first")
    return found


def snippet_file(folder: Path, shape: tuple[int, int]) -> Path:
    path = folder / f"tutorial_{shape[0]}x{shape[1]}.py"
    path.write_text(TUTORIAL.format(dims=f"{shape[0]}, {shape[1]}"))
    return path


def parse_square(text: str) -> tuple[int, int]:
    """'4096x4096' (or '4096') → (4096, 4096); ValueError otherwise."""
    rows, x, cols = text.strip().lower().partition("x")
    shape = int(rows), int(cols if x else rows)
    if min(shape) < 1:
        raise ValueError(text)
    return shape


def mib(kib: float) -> str:
    return f"{kib / 1024:,.0f} MiB"


def table(comparisons: Sequence[Comparison]) -> str:
    lines = [
        "| variant | median wall | ratio | median peak RSS | ratio | limit | result |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for c in comparisons:
        b, t = c.baseline, c.tool
        lines.append(
            f"| {b.name} | {b.median_wall():.3f} s | 1.00 | {mib(b.median_rss())} | 1.00 "
            "| baseline | |"
        )
        limit = f"wall ≤ {c.wall_limit:.2f}×"
        rss = f"{c.rss_ratio():.2f}"
        if c.rss_limit is not None:
            limit += f", RSS ≤ {c.rss_limit:.2f}×"
        lines.append(
            f"| {t.name} | {t.median_wall():.3f} s | **{c.wall_ratio():.3f}** | "
            f"{mib(t.median_rss())} | {'**' + rss + '**' if c.rss_limit else rss} | {limit} | "
            f"{'pass' if c.passed() else 'FAIL'} |"
        )
    return "\n".join(lines)


def cpu_table(comparisons: Sequence[Comparison]) -> str:
    """CPU seconds (user + system, all threads): steadier than wall time on a shared machine."""
    lines = [
        "| comparison | tool CPU | baseline CPU | ratio |",
        "| --- | ---: | ---: | ---: |",
    ]
    for c in comparisons:
        tool, base = statistics.median(c.tool.cpu), statistics.median(c.baseline.cpu)
        lines.append(f"| {c.label} | {tool:.3f} s | {base:.3f} s | {tool / base:.3f} |")
    return "\n".join(lines)


STDLIB = "(standard library)"


def grouped(costs: dict[str, float]) -> dict[str, float]:
    """Top-level packages as they are, the standard library as one row."""
    out: dict[str, float] = {}
    for name, ms in costs.items():
        key = STDLIB if name in sys.stdlib_module_names else name
        out[key] = out.get(key, 0.0) + ms
    return out


@dataclass
class Imports:
    """What one command imports at start-up: cost per top-level package, and what it loaded."""

    title: str
    costs: dict[str, float]
    loaded: set[str]

    @classmethod
    def of(cls, title: str, argv: list[str], env: dict[str, str], runs: int = 3) -> Imports:
        return cls(title, grouped(median_costs(argv, env, runs)), loaded_packages(argv, env))


def import_table(columns: Sequence[Imports]) -> str:
    # -X importtime also times failed attempts (an optional numpy that is not installed), so
    # whether a package was imported comes from sys.modules, its cost from importtime.
    names = sorted(
        set().union(*(c.costs for c in columns)),
        key=lambda n: -max(c.costs.get(n, 0.0) for c in columns),
    )
    shown = [n for n in names if max(c.costs.get(n, 0.0) for c in columns) >= 1.0]
    shown += [d for d in DEPENDENCIES if d not in shown]
    lines = [
        "| package | " + " | ".join(f"{c.title} (ms)" for c in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for n in shown:
        cells = [
            f"{c.costs.get(n, 0.0):.0f}" if n == STDLIB or n in c.loaded else "not imported"
            for c in columns
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    totals = " | ".join(f"{sum(c.costs.values()):.0f}" for c in columns)
    lines.append(f"| **all imports** | {totals} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    shown = ("torch", "typer", "rich", "submitit", "pydantic")
    deps = ", ".join(f"{d} {version(d)}" for d in shown)
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; {deps}; "
        f"load average before {os.getloadavg()[0]:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant (default 7)")
    parser.add_argument(
        "--shapes",
        default="4096x4096,8192x8192",
        help="large float32 shapes, comma separated (default 4096x4096,8192x8192)",
    )
    parser.add_argument("--quick", action="store_true", help="help and default shape only")
    parser.add_argument(
        "--help-only", action="store_true", help="only `autograd-check --help` against import torch"
    )
    parser.add_argument("--cli", help="the autograd-check executable (default: beside python)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        large = [parse_square(t) for t in args.shapes.split(",") if t.strip()]
    except ValueError:
        parser.error(f"--shapes {args.shapes!r}: expected shapes like 4096x4096,8192x8192")
    if args.runs < 7:
        print("note: fewer than 7 runs each; the docs' figures are medians of 7", file=sys.stderr)

    cli = find_cli(args.cli)
    py = sys.executable
    env = dict(os.environ)
    # Users run with bytecode caches (pip writes them at install, Python at first import); a
    # PYTHONDONTWRITEBYTECODE left in the environment would charge our package a recompile on
    # every start that torch, installed from a wheel, never pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    report = [f"Machine: {machine()}", f"Tool: `{cli}` (console script); snippet: `{py}`", ""]

    with tempfile.TemporaryDirectory(prefix="bench-autograd-check-") as tmp:
        folder = Path(tmp)
        comparisons = [
            Comparison(
                "--help",
                Variant("`autograd-check --help`", [cli, "--help"], ours=True),
                Variant('`python -c "import torch"`', [py, "-c", "import torch"], ours=False),
                wall_limit=HELP_LIMIT,
                rss_limit=None,
            ),
        ]
        if not args.help_only:
            comparisons.append(Comparison(
                "3x8",
                Variant("`autograd-check run` (3×8)", [cli, "run"], ours=True),
                Variant("tutorial snippet (3×8)", [py, str(snippet_file(folder, (3, 8)))], False),
                wall_limit=1.15,
                rss_limit=None,
            ))
        if not (args.quick or args.help_only):
            for shape in large:
                dims = f"{shape[0]}x{shape[1]}"
                pretty = f"{shape[0]}×{shape[1]}"
                comparisons.append(
                    Comparison(
                        dims,
                        Variant(
                            f"`autograd-check run --shape {dims}`",
                            [cli, "run", "--shape", dims],
                            ours=True,
                        ),
                        Variant(
                            f"tutorial snippet ({pretty})",
                            [py, str(snippet_file(folder, shape))],
                            ours=False,
                        ),
                        wall_limit=1.10,
                        rss_limit=1.00,
                    )
                )

        print(f"measuring {len(comparisons) * 2} variants, {args.runs} runs each", file=sys.stderr)
        measure(comparisons, args.runs, env)
        imports = [Imports.of("`--help`", [cli, "--help"], env)]
        if not args.help_only:
            imports += [
                Imports.of("`run`", [cli, "run"], env),
                Imports.of("snippet", [str(snippet_file(folder, (3, 8)))], env),
            ]

    help_loaded = imports[0].loaded
    run_loaded = imports[1].loaded if len(imports) > 1 else set()
    torch_in_help = "torch" in help_loaded

    report += [table(comparisons), ""]
    said = f"`autograd-check --help` imports torch: {'YES (FAIL)' if torch_in_help else 'no'}"
    if len(imports) > 1:
        said += (
            f"; `autograd-check run` imports submitit: "
            f"{'yes' if 'submitit' in run_loaded else 'no'}, "
            f"pydantic: {'yes' if 'pydantic' in run_loaded else 'no'}"
        )
    report.append(said + ".")
    floor = own_rss_kib()
    lowest = min(v.median_rss() for c in comparisons for v in (c.tool, c.baseline))
    report += [
        f"Load average after: {os.getloadavg()[0]:.2f}. Medians of {args.runs} runs each, "
        "interleaved, after one warm-up run each. A child's peak RSS cannot show less than "
        f"this script's own, {mib(floor)}"
        + (" (every figure above is higher)." if lowest > floor else ": SOME FIGURES ARE AT IT."),
        "",
        "CPU time (user + system, all threads; median), less sensitive to a busy machine:",
        "",
        cpu_table(comparisons),
        "",
        "Start-up import cost per top-level package (`python -X importtime`, self times summed,"
        " median of 3 runs; snippet: the 3×8 tutorial snippet):",
        "",
        import_table(imports),
    ]
    text = "\n".join(report)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        doc = {
            "comparisons": [
                {
                    "label": c.label,
                    "tool": asdict(c.tool),
                    "baseline": asdict(c.baseline),
                    "wall_ratio": c.wall_ratio(),
                    "rss_ratio": c.rss_ratio(),
                    "wall_limit": c.wall_limit,
                    "rss_limit": c.rss_limit,
                    "passed": c.passed(),
                }
                for c in comparisons
            ],
            "imports": [
                {"title": i.title, "costs": i.costs, "loaded": sorted(i.loaded)} for i in imports
            ],
        }
        args.json.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    ok = all(c.passed() for c in comparisons) and not torch_in_help
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench_run: error: {e}", file=sys.stderr)
        sys.exit(2)
