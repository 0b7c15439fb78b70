"""--ranks: the cost of checking across ranks, side by side with the one-process check.

1. `run --ranks 2 --model mlp` against `run --model mlp` (same shape, loss and dtype), each a
   fresh process, interleaved (the order alternates per round), medians compared. Limit: 1.6x on
   a 2-core machine: the ranks are forked from a fork server that loads torch once (they start
   in parallel and import nothing again) and rank 0 computes the full-batch reference. Measured
   in the same rounds: `import torch` against `import torch, torch._dynamo`, the floor under that
   ratio (DistributedDataParallel's constructor reads torch._dynamo's config, which loads it).
2. With --slurm: how soon `submit --ranks 2 --wait` returns after its job ends: the time from
   the moment task 0 wrote its result file (the job's last act) to the command's return, and to
   Slurm's EndTime (whole seconds). Limit: 3 s after the result was written.

    python benchmarks/bench_ranks.py                 # 7 rounds of part 1
    python benchmarks/bench_ranks.py --slurm         # and 5 jobs of part 2 (needs sbatch)
    python benchmarks/bench_ranks.py --json          # figures as JSON

Exits 1 when a limit is not met.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_submit_wait import end_time

RUN_LIMIT = 1.6
WAIT_LIMIT_S = 3.0
CHECK = ["--model", "mlp", "--shape", "8x16", "--loss", "mse-mean"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "autograd_check", *args], capture_output=True,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return took


def timed_python(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def part_run(rounds: int) -> dict[str, float]:
    """The two commands, and the floor under the ratio: what torch itself loads for DDP."""
    one: list[float] = []
    ranks: list[float] = []
    bare: list[float] = []
    dynamo: list[float] = []
    for i in range(rounds):
        variants = (
            (one, lambda: timed(["run", *CHECK])),
            (ranks, lambda: timed(["run", "--ranks", "2", *CHECK])),
            (bare, lambda: timed_python("import torch")),
            (dynamo, lambda: timed_python("import torch, torch._dynamo")),
        )
        for samples, measure in variants if i % 2 == 0 else variants[::-1]:
            samples.append(measure())
        print(f"round {i + 1}/{rounds}: run {one[-1]:.2f} s, run --ranks 2 {ranks[-1]:.2f} s",
              file=sys.stderr)
    a, b = statistics.median(one), statistics.median(ranks)
    t, d = statistics.median(bare), statistics.median(dynamo)
    return {"run_s": a, "run_ranks_2_s": b, "ratio": b / a, "import_torch_s": t,
            "import_torch_dynamo_s": d, "floor_ratio": d / t}


def part_submit(runs: int) -> dict[str, float | None]:
    after_result: list[float] = []
    after_end: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        log_dir = Path(tmp) / "logs"
        for i in range(runs):
            start = time.time()
            done = subprocess.run(
                [sys.executable, "-m", "autograd_check", "submit", "--ranks", "2", *CHECK,
                 "--wait", "--json", "--mem", "1G", "--time", "5", "--timeout", "300",
                 "--log-dir", str(log_dir)], capture_output=True, text=True)
            returned = time.time()
            if done.returncode != 0:
                raise SystemExit(f"submit --ranks 2 failed ({done.returncode}): {done.stderr}")
            job = json.loads(done.stdout)["environment"]["slurm"]["job_id"]
            written = (log_dir / f"{job}_0_result.pkl").stat().st_mtime_ns / 1e9
            after_result.append(returned - written)
            slurm_end = end_time(job)
            if slurm_end is not None:
                after_end.append(returned - slurm_end)
            print(f"job {i + 1}/{runs} ({job}): {returned - start:.2f} s in all, returned "
                  f"{after_result[-1]:.2f} s after the result was written", file=sys.stderr)
    return {
        "after_result_written_s": statistics.median(after_result),
        "after_slurm_end_s": statistics.median(after_end) if after_end else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--slurm", action="store_true", help="also time submit --ranks 2 --wait")
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    figures: dict[str, object] = {"run": part_run(args.rounds)}
    if args.slurm:
        figures["submit"] = part_submit(args.jobs)
    ok = figures["run"]["ratio"] <= RUN_LIMIT  # type: ignore[index]
    if args.slurm:
        ok = ok and figures["submit"]["after_result_written_s"] <= WAIT_LIMIT_S  # type: ignore[index]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        run = figures["run"]
        assert isinstance(run, dict)
        print(f"median of {args.rounds} rounds, {' '.join(CHECK)}")
        print(f"  run                 {run['run_s']:.2f} s")
        print(f"  run --ranks 2       {run['run_ranks_2_s']:.2f} s")
        print(f"  ratio               {run['ratio']:.2f}x (limit {RUN_LIMIT}x)")
        print(f"  python -c 'import torch'                 {run['import_torch_s']:.2f} s")
        print(f"  python -c 'import torch, torch._dynamo'  {run['import_torch_dynamo_s']:.2f} s"
              f" ({run['floor_ratio']:.2f}x: what DDP's constructor loads)")
        if args.slurm:
            sub = figures["submit"]
            assert isinstance(sub, dict)
            end = sub["after_slurm_end_s"]
            print(f"submit --ranks 2 --wait, median of {args.jobs} jobs")
            print(f"  returned after the result was written  {sub['after_result_written_s']:.2f}"
                  f" s (limit {WAIT_LIMIT_S:g} s)")
            print("  returned after Slurm's EndTime         "
                  + ("n/a" if end is None else f"{end:.2f} s (whole seconds)"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
