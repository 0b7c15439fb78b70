"""What the ranks of a check trust (docs/security.md, "Checks across ranks"): nothing crosses
ranks as a pickle, local ranks listen on loopback only, and a process that found the store's
port but did not read the private rendezvous file cannot take part; and a rank whose teardown
hangs, or that ends without an answer, cannot turn a known verdict into a wait or a PASS.

Every check here runs in a fresh interpreter: the targets patch torch.distributed and pickle in
the ranks, and the store tests host a TCPStore, none of which may touch the test process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
CLI = [sys.executable, "-m", "autograd_check"]
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                  "AUTOGRAD_CHECK_RENDEZVOUS", "GLOO_SOCKET_IFNAME")

NET = """
import os
import time

import torch
import torch.distributed as dist
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)

    def inputs(self, generator, dtype, device):
        return (torch.randn(8, 4, generator=generator, dtype=dtype, device=device),)
"""


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))
             and k not in RANK_VARIABLES}
    clean.update(COLUMNS="120", NO_COLOR="1", PYTHONPATH=str(SRC), **extra)
    return clean


def run(*args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env(**extra))


def target(tmp_path: Path, body: str) -> str:
    path = tmp_path / "planted.py"
    path.write_text(NET + textwrap.dedent(body))
    return str(path)


class TestNoPickleCrossesRanks:
    def test_a_check_passes_with_pickle_and_the_object_collectives_broken_in_the_ranks(
            self, tmp_path: Path) -> None:
        # In the ranks only (the module is imported there, after the group formed): every
        # unpickler and every *_object collective raises. The check must not need them.
        path = target(tmp_path, """
            import pickle
            import torch.distributed.distributed_c10d as c10d

            def refuse(*args, **kwargs):
                raise AssertionError("planted: a pickle crossed ranks")

            if dist.is_initialized():
                pickle.loads = pickle.load = refuse
                pickle.Unpickler = c10d._unpickler = refuse
                for name in ("all_gather_object", "broadcast_object_list", "gather_object",
                             "scatter_object_list", "send_object_list", "recv_object_list"):
                    setattr(dist, name, refuse)
                    setattr(c10d, name, refuse)

            class Plain(Net):
                pass
        """)
        done = run("run", "--target", f"{path}:Plain", "--ranks", "2", "--json",
                   "--timeout", "60")
        assert done.returncode == 0, done.stderr + done.stdout
        doc = json.loads(done.stdout)
        assert doc["verdict"]["passed"] is True and doc["distributed"]["hosts"], doc
        assert "a pickle crossed ranks" not in done.stdout + done.stderr


LISTENERS = """
    def listening(path):
        # (local address, port) of every listening TCP socket of this process (/proc/net/tcp*)
        inodes = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        found = []
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.read().splitlines()[1:]:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                        address, port = fields[1].split(":")
                        found.append([address, int(port, 16)])
        with open(path, "w") as f:
            json.dump(found, f)

    class Listens(Net):
        def train_step(self, model, micro_batches):
            listening(os.environ["PLANTED_OUT"] + f".{dist.get_rank()}")
            for micro in micro_batches:
                model(*micro).square().mean().backward()
"""


class TestLocalRanksListenOnLoopback:
    def test_the_store_and_gloo_listen_on_127_0_0_1_only(self, tmp_path: Path) -> None:
        path = target(tmp_path, "import json\n" + textwrap.dedent(LISTENERS))
        out = tmp_path / "listening"
        done = run("run", "--target", f"{path}:Listens", "--ranks", "2", "--json",
                   "--timeout", "60", PLANTED_OUT=str(out))
        assert done.returncode == 0, done.stderr
        rank0 = json.loads((tmp_path / "listening.0").read_text())
        rank1 = json.loads((tmp_path / "listening.1").read_text())
        # rank 0 hosts the store and its gloo listener; rank 1 its gloo listener
        assert len(rank0) >= 2 and len(rank1) >= 1, (rank0, rank1)
        loopback = ("0100007F", "00000000000000000000000001000000")  # 127.0.0.1, ::1
        assert all(address in loopback for address, _ in rank0 + rank1), (rank0, rank1)


MEET = """
import json, sys
from pathlib import Path

import torch

import torch.distributed as dist

from autograd_check.distributed.exchange import all_gather_json
from autograd_check.distributed.rank import farewell, meet
from autograd_check.distributed.rendezvous import Identity
from autograd_check.base.errors import CheckError

rank = int(sys.argv[2])
identity = Identity(rank, 2, rank, Path(sys.argv[1]), "rendezvous.json", "127.0.0.1")
try:
    store, _ = meet(identity, torch.device("cpu"))
    gathered = all_gather_json(f"rank {rank}", 2, torch.device("cpu"))
    dist.destroy_process_group()
    farewell(store, identity)  # as rank_main ends: rank 0 keeps the store until rank 1 is done
    print(json.dumps(gathered), flush=True)
except CheckError as e:
    print(f"refused: {e}", flush=True)
    sys.exit(e.exit_code)
"""

INTRUDER = """
import datetime, json, sys, time
from pathlib import Path

import torch
import torch.distributed as dist

# what another user learns: the port from /proc/net/tcp (here: from the file, its port only),
# and with --know-prefix the keys' prefix from the store itself (TCPStore.list_keys)
rendezvous = Path(sys.argv[1]) / "rendezvous.json"
while not rendezvous.exists():
    time.sleep(0.01)
port = json.loads(rendezvous.read_text())["port"]
timeout = datetime.timedelta(seconds=float(sys.argv[3]))
store = dist.TCPStore("127.0.0.1", port, 2, False, timeout=timeout)
if sys.argv[2] == "--know-prefix":
    keys = []
    while not keys:  # rank 0 is joining the group through its prefix: its keys show
        keys = [k for k in store.list_keys() if k.startswith("autograd-check/")]
        time.sleep(0.01)
    prefix = keys[0][:keys[0].index("/", len("autograd-check/")) + 1]
    store = dist.PrefixStore(prefix, store)
print("joining", flush=True)
try:
    dist.init_process_group("gloo", store=store, rank=1, world_size=2, timeout=timeout)
    tags = [torch.zeros(32, dtype=torch.uint8) for _ in range(2)]
    dist.all_gather(tags, torch.zeros(32, dtype=torch.uint8))  # a proof it cannot compute
    print("joined", flush=True)
except Exception as e:
    print(f"kept out: {type(e).__name__}", flush=True)
"""


def start(script: str, *args: str, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(), cwd=tmp_path)


def finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir(mode=0o700)
    return rendezvous


class TestAPeerWithoutTheRendezvousFile:
    def test_one_that_does_not_know_the_prefix_never_meets_the_ranks(
            self, tmp_path: Path, folder: Path) -> None:
        rank0 = start(MEET, str(folder), "0", tmp_path=tmp_path)
        intruder = start(INTRUDER, str(folder), "--no-prefix", "4", tmp_path=tmp_path)
        assert intruder.stdout is not None
        assert intruder.stdout.readline().strip() == "joining"
        time.sleep(1)  # it has written its keys (as rank 1) before the real rank 1 comes
        rank1 = start(MEET, str(folder), "1", tmp_path=tmp_path)
        code0, out0, err0 = finish(rank0)
        code1, out1, err1 = finish(rank1)
        assert (code0, code1) == (0, 0), err0 + err1
        assert json.loads(out0) == json.loads(out1) == ["rank 0", "rank 1"]
        code, out, err = finish(intruder)
        assert "kept out" in out and "joined" not in out.replace("joining", ""), out + err

    def test_one_that_read_the_prefix_from_the_store_is_refused(
            self, tmp_path: Path, folder: Path) -> None:
        # The store is no secret (list_keys): the key that only the file holds is.
        import torch.distributed as dist

        if not hasattr(dist.TCPStore, "list_keys"):  # 2.4.1 has none
            pytest.skip("this torch's TCPStore has no list_keys, which the intruder reads with")
        rank0 = start(MEET, str(folder), "0", tmp_path=tmp_path)
        intruder = start(INTRUDER, str(folder), "--know-prefix", "20", tmp_path=tmp_path)
        code0, out0, err0 = finish(rank0)
        assert code0 == 3, out0 + err0
        assert out0.startswith(
            "refused: rank 0: refusing to go on: rank 1 of 2 joined without this check's private "
            "rendezvous file"), out0
        finish(intruder)


def teardown_target(tmp_path: Path) -> str:
    return target(tmp_path, """
        if dist.is_initialized() and dist.get_rank() == 1:
            def hang():
                print("rank 1: hanging in destroy_process_group", flush=True)
                while True:
                    time.sleep(60)

            dist.destroy_process_group = hang

        class HangsOnTheWayOut(Net):
            pass

        class ExitsZero(Net):
            def train_step(self, model, micro_batches):
                if dist.get_rank() == 1:
                    os._exit(0)
                time.sleep(120)
    """)


class TestTheWayOut:
    def test_a_rank_that_hangs_in_teardown_cannot_hold_the_verdict(self, tmp_path: Path) -> None:
        path = teardown_target(tmp_path)
        began = time.monotonic()
        done = run("run", "--target", f"{path}:HangsOnTheWayOut", "--ranks", "2", "--json",
                   "--timeout", "120")
        took = time.monotonic() - began
        assert done.returncode == 0, done.stderr
        doc: dict[str, Any] = json.loads(done.stdout)
        assert doc["verdict"]["passed"] is True
        assert any(note.startswith("rank 1 of 2 had not ended 3 s after every rank had the "
                                   "verdict") for note in doc["notes"]), doc["notes"]
        assert took < 30, took

    def test_a_rank_that_ends_with_code_0_and_no_answer_is_not_a_pass(
            self, tmp_path: Path) -> None:
        path = teardown_target(tmp_path)
        done = run("run", "--target", f"{path}:ExitsZero", "--ranks", "2", "--json",
                   "--timeout", "60")
        assert done.returncode == 4, done.stderr + done.stdout
        assert done.stderr.splitlines()[0] == (
            "autograd-check: error: rank 1 of 2 exited with code 0 without an answer before the "
            "check ended; the other ranks were stopped"), done.stderr

    @pytest.mark.slurm
    @pytest.mark.usefixtures("slurm_cluster")
    def test_on_slurm_the_verdict_comes_back_and_the_stuck_rank_is_ended(
            self, tmp_path: Path) -> None:
        # Task 0's result comes back as soon as it has it; task 1, stuck in the teardown, is
        # ended by the teardown's bound (rank.TEARDOWN_LIMIT_S, 30 s) with its stack in its log,
        # not left to run until the job's time limit.
        path = teardown_target(tmp_path)
        logs = tmp_path / "logs"
        began = time.monotonic()
        done = run("submit", "--ranks", "2", "--target", f"{path}:HangsOnTheWayOut", "--wait",
                   "--json", "--log-dir", str(logs), "--cpus", "1", "--mem", "1G",
                   "--timeout", "120", timeout=180)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["verdict"]["passed"] is True
        assert time.monotonic() - began < 60
        (log,) = logs.glob("*_1_log.err")
        deadline = time.monotonic() + 90
        while "Timeout (0:00:30)!" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(1)
        text = log.read_text()
        out = log.with_suffix(".out").read_text()
        assert "rank 1: hanging in destroy_process_group" in out, out
        assert "Timeout (0:00:30)!" in text and " in hang" in text, text[-2000:]
