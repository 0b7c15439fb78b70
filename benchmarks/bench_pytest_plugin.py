"""pytest with the autograd_check plugin against pytest without it (`-p no:autograd_check`).

The plugin is loaded by every pytest run in an environment where autograd-check is installed
(its `pytest11` entry point), whether the tests use the fixture or not; loading it imports
neither torch nor the checking code, so pytest is not measurably slower. Measured here, side by
side in the same run, each sample a fresh process, the two variants interleaved (their order
alternating from one round to the next), medians compared:

    version     pytest --version            (pytest 9 answers it before loading any plugin)
    version -VV pytest --version --version  (loads every plugin, and lists them)
    collect     pytest --collect-only -q    on a file with one test that does not use the fixture
    run         pytest -q                   the same file, run

and, in process, what importing the plugin module costs once pytest is imported.

"Not measurably slower": the median with the plugin is at most LIMIT_REL above the median without
it, or LIMIT_ABS_S, whichever is larger (a noisy neighbour moves a 0.3 s process by more than that).

    python benchmarks/bench_pytest_plugin.py              # 9 runs of each (about 30 s)
    python benchmarks/bench_pytest_plugin.py --runs 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMIT_REL = 0.03
LIMIT_ABS_S = 0.010

UNRELATED = "def test_unrelated():\n    assert 1 + 1 == 2\n"

SCENARIOS: dict[str, list[str]] = {
    "version": ["--version"],
    "version -VV": ["--version", "--version"],
    "collect": ["--collect-only", "-q", "test_unrelated.py"],
    "run": ["-q", "test_unrelated.py"],
}

IMPORT_PLUGIN = """\
import time
import pytest
t = time.perf_counter()
import autograd_check.pytest_plugin
print(time.perf_counter() - t)
import sys
print("torch" in sys.modules)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}


def _time(argv: list[str], cwd: Path) -> float:
    t = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="samples of each variant (>= 7)")
    args = parser.parse_args(argv)
    runs = max(args.runs, 7)
    pytest = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"]
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_unrelated.py").write_text(UNRELATED)
        print(f"python {sys.version.split()[0]}, {runs} runs of each, interleaved; median wall "
              f"(limit: +{LIMIT_REL:.0%} or +{LIMIT_ABS_S * 1000:.0f} ms, whichever is larger)")
        print(f"  {'pytest':<12} {'with plugin':>12} {'without':>12} {'difference':>12}")
        for label, extra in SCENARIOS.items():
            variants = {"with": pytest + extra, "without": pytest + ["-p", "no:autograd_check"]
                        + extra}
            _time(variants["with"], folder)  # warm the file cache and the .pyc files
            _time(variants["without"], folder)
            walls: dict[str, list[float]] = {"with": [], "without": []}
            for i in range(runs):
                order = ["with", "without"] if i % 2 == 0 else ["without", "with"]
                for name in order:
                    walls[name].append(_time(variants[name], folder))
            with_s = statistics.median(walls["with"])
            without_s = statistics.median(walls["without"])
            diff = with_s - without_s
            ok = diff <= max(LIMIT_REL * without_s, LIMIT_ABS_S)
            if not ok:
                failed.append(label)
            print(f"  {label:<12} {with_s * 1000:>9.0f} ms {without_s * 1000:>9.0f} ms "
                  f"{diff * 1000:>+9.1f} ms  {'ok' if ok else 'SLOWER'}")
    imports = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", IMPORT_PLUGIN], capture_output=True,
                              text=True, env=_env(), check=True)
        seconds, torch_loaded = done.stdout.split()
        if torch_loaded != "False":
            raise SystemExit("importing autograd_check.pytest_plugin imported torch")
        imports.append(float(seconds))
    print(f"importing autograd_check.pytest_plugin after pytest: "
          f"{statistics.median(imports) * 1000:.1f} ms (median), torch not imported")
    if failed:
        print(f"measurably slower with the plugin: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
