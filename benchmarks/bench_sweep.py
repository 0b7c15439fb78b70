"""Sweeps against the ways a user would run the same checks without them, side by side, same run.

Local (issue 6, item 9): `sweep --local` of 100 small cases (3x8, float32, seeds 0-99) against one
`autograd-check run` (a fresh process: Python, torch import, one check) plus 100 times the bare
tutorial snippet's in-process time. torch is imported once per sweep, so the sweep must take at
most 1.5x that.

Slurm: 48 small cases packed 8 per array task (`sweep --slurm --cases-per-task 8 --wait`) against
48 separate `submit --wait` jobs, one after another. The sweep must finish at least 3x sooner.

    python benchmarks/bench_sweep.py                 # both (Slurm part skipped without sbatch)
    python benchmarks/bench_sweep.py --local-only --rounds 5
    python benchmarks/bench_sweep.py --json

Every job asks for 1 CPU and 500 MB; the local cluster of scripts/slurm-local.sh will do.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "autograd_check"]
SMALL = ["--cpus", "1", "--mem", "500M", "--time", "5"]


def bare_check_seconds(reps: int = 2000) -> float:
    """Mean in-process time of the tutorial's check (torch already imported and warm)."""
    import torch

    def once(seed: int) -> bool:
        torch.manual_seed(seed)
        real = torch.rand(3, 8)
        predicted = torch.rand(3, 8, requires_grad=True)
        loss = (predicted - real).pow(2).sum()
        with torch.no_grad():
            manual = 2.0 * (predicted - real)
        loss.backward()
        return bool(manual.eq(predicted.grad).all())

    for seed in range(50):
        once(seed)
    start = time.perf_counter()
    for seed in range(reps):
        once(seed)
    return (time.perf_counter() - start) / reps


def timed(cmd: list[str], expect: int = 0) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != expect:
        sys.exit(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed


def local_part(rounds: int) -> dict[str, Any]:
    bare = bare_check_seconds()
    runs, sweeps = [], []
    for _ in range(rounds):  # interleaved, so that both see the same machine
        runs.append(timed([*CLI, "run", "--json"]))
        with tempfile.TemporaryDirectory() as tmp:
            sweeps.append(timed([*CLI, "sweep", "--local", "--seeds", "0-99", "--out",
                                 str(Path(tmp) / "s"), "--json"]))
    run_s, sweep_s = statistics.median(runs), statistics.median(sweeps)
    budget = run_s + 100 * bare
    return {
        "bare_check_s": bare,
        "run_s": run_s,
        "sweep_100_s": sweep_s,
        "budget_s": budget,
        "ratio": sweep_s / budget,
        "target": "ratio <= 1.5",
        "ok": sweep_s / budget <= 1.5,
        "rounds": rounds,
    }


def slurm_part(cases: int, per_task: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        sweep_s = timed([*CLI, "sweep", "--slurm", *SMALL, "--seeds", f"0-{cases - 1}",
                         "--cases-per-task", str(per_task), "--wait", "--json", "--out",
                         str(Path(tmp) / "s")])
        start = time.perf_counter()
        for seed in range(cases):
            timed([*CLI, "submit", *SMALL, "--seed", str(seed), "--wait", "--json",
                   "--log-dir", str(Path(tmp) / "logs")])
        submits_s = time.perf_counter() - start
    return {
        "cases": cases,
        "cases_per_task": per_task,
        "sweep_s": sweep_s,
        "separate_submits_s": submits_s,
        "speedup": submits_s / sweep_s,
        "target": "speedup >= 3",
        "ok": submits_s / sweep_s >= 3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="local rounds (median is kept)")
    parser.add_argument("--local-only", action="store_true")
    parser.add_argument("--slurm-only", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    figures: dict[str, Any] = {}
    if not args.slurm_only:
        figures["local"] = local_part(args.rounds)
    if not args.local_only:
        if shutil.which("sbatch"):
            figures["slurm"] = slurm_part(48, 8)
        else:
            figures["slurm"] = {"skipped": "sbatch is not on PATH"}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        local = figures.get("local")
        if local:
            print(f"local: sweep of 100 cases {local['sweep_100_s']:.2f} s vs one run "
                  f"{local['run_s']:.2f} s + 100 x bare check {local['bare_check_s'] * 1e3:.3f} ms "
                  f"= {local['budget_s']:.2f} s → ratio {local['ratio']:.2f} "
                  f"({'ok' if local['ok'] else 'FAIL'}: {local['target']})")
        slurm = figures.get("slurm")
        if slurm and "skipped" not in slurm:
            print(f"slurm: 48 cases packed 8 per task {slurm['sweep_s']:.1f} s vs 48 separate "
                  f"submits {slurm['separate_submits_s']:.1f} s → {slurm['speedup']:.1f}x sooner "
                  f"({'ok' if slurm['ok'] else 'FAIL'}: {slurm['target']})")
        elif slurm:
            print(f"slurm: skipped ({slurm['skipped']})")
    ok = all(part.get("ok", True) for part in figures.values())
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
