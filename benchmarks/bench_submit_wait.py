"""How soon `autograd-check submit --wait` returns after its job ends, on a real Slurm cluster.

For each run, `submit --wait --json` is timed as a fresh process, and compared with two marks of
the job's own end: the moment the node wrote the result (the result file's modification time,
nanoseconds, written as the job's last act) and Slurm's EndTime (whole seconds, from scontrol
or sacct). Side by side, in the same rounds, the bare tutorial snippet is submitted with
`sbatch --wait --wrap` (Slurm's own blocking wait) and timed the same way.

    python benchmarks/bench_submit_wait.py              # 5 rounds
    python benchmarks/bench_submit_wait.py --runs 9 --json

The target (issue 4): return within 3 s of the job's end. Needs sbatch on PATH (a local cluster
from scripts/slurm-local.sh will do); asks for 1 CPU and 500 MB per job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

TUTORIAL = (
    "import torch; real = torch.rand(3, 8); predicted = torch.rand(3, 8, requires_grad=True); "
    "loss = (predicted - real).pow(2).sum(); "
    "m = 2.0 * (predicted - real).detach(); loss.backward(); "
    "print(m.eq(predicted.grad).all())"
)
RESOURCES = ["--cpus-per-task=1", "--mem=500M", "--time=5"]


def end_time(job_id: str) -> float | None:
    """Slurm's EndTime of the finished job, as a Unix time (whole seconds), or None.

    While a job runs, scontrol's EndTime is the time limit's end: wait for a final state.
    """
    for _ in range(60):
        text = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True
        ).stdout
        state = re.search(r"JobState=(\S+)", text)
        stamp = re.search(r"EndTime=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", text)
        if state and stamp and state.group(1) not in ("PENDING", "RUNNING", "COMPLETING"):
            return datetime.fromisoformat(stamp.group(1)).timestamp()
        if not text:  # gone from the controller: ask accounting
            lines = subprocess.run(
                ["sacct", "-X", "-n", "-P", "-o", "End", "-j", job_id],
                capture_output=True, text=True,
            ).stdout.split()
            if lines and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lines[0]):
                return datetime.fromisoformat(lines[0]).timestamp()
        time.sleep(0.5)
    return None


def run_ours(log_dir: Path) -> dict[str, float | str | None]:
    start = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "autograd_check", "submit", "--wait", "--json", "--cpus", "1",
         "--mem", "500M", "--time", "5", "--timeout", "300", "--log-dir", str(log_dir)],
        capture_output=True, text=True,
    )
    returned = time.time()
    if done.returncode != 0:
        raise SystemExit(f"submit failed ({done.returncode}): {done.stderr}")
    job_id = json.loads(done.stdout)["environment"]["slurm"]["job_id"]
    written = (log_dir / f"{job_id}_0_result.pkl").stat().st_mtime_ns / 1e9
    slurm_end = end_time(job_id)
    return {
        "job_id": job_id,
        "total_s": returned - start,
        "after_result_written_s": returned - written,
        "after_slurm_end_s": None if slurm_end is None else returned - slurm_end,
    }


def run_bare(work: Path) -> dict[str, float | str | None]:
    start = time.time()
    done = subprocess.run(
        ["sbatch", "--wait", "--parsable", f"--chdir={work}", "--output=bare-%j.out", *RESOURCES,
         "--wrap", f"{shlex.quote(sys.executable)} -c {shlex.quote(TUTORIAL)}"],
        capture_output=True, text=True,
    )
    returned = time.time()
    if done.returncode != 0:
        raise SystemExit(f"sbatch --wait failed ({done.returncode}): {done.stderr}")
    job_id = done.stdout.strip().split(";")[0]
    out = work / f"bare-{job_id}.out"
    written = out.stat().st_mtime_ns / 1e9
    slurm_end = end_time(job_id)
    return {
        "job_id": job_id,
        "total_s": returned - start,
        "after_result_written_s": returned - written,
        "after_slurm_end_s": None if slurm_end is None else returned - slurm_end,
    }


def median(rows: list[dict[str, float | str | None]], key: str) -> float | None:
    values = [float(v) for r in rows if isinstance(v := r[key], (int, float))]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        work = Path(tmp)
        log_dir = work / "logs"
        ours: list[dict[str, float | str | None]] = []
        bare: list[dict[str, float | str | None]] = []
        for i in range(args.runs):
            # Alternate the order, so that a busy moment of the cluster hurts both alike.
            pair = (lambda: ours.append(run_ours(log_dir)), lambda: bare.append(run_bare(work)))
            for run in pair if i % 2 == 0 else pair[::-1]:
                run()
            print(f"round {i + 1}/{args.runs}: ours {ours[-1]['total_s']:.2f} s, "
                  f"sbatch --wait {bare[-1]['total_s']:.2f} s", file=sys.stderr)
    summary = {
        name: {key: median(rows, key) for key in
               ("total_s", "after_result_written_s", "after_slurm_end_s")}
        for name, rows in (("submit --wait", ours), ("sbatch --wait (bare snippet)", bare))
    }
    if args.json:
        print(json.dumps({"runs": args.runs, "median": summary, "ours": ours, "bare": bare,
                          "host": os.uname().nodename}, indent=2))
        return
    print(f"median of {args.runs} runs (seconds)")
    print(f"{'':32}{'total':>8}{'after result written':>22}{'after Slurm EndTime':>21}")
    for name, row in summary.items():
        cells = [f"{v:.2f}" if v is not None else "?" for v in row.values()]
        print(f"{name:32}{cells[0]:>8}{cells[1]:>22}{cells[2]:>21}")


if __name__ == "__main__":
    main()
