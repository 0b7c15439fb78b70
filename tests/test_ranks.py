"""run --ranks N here (forked local ranks): what the spec refuses before anything starts, the
examples that pass under DDP and FSDP2, the planted bugs of examples/ranks_bugs.py each caught
with its likely cause, and the ranks' failures: one killed, one hung (--timeout), the user's own
exception; inherited torch.distributed variables and two checks at once on one machine.

A local 2-rank check takes about a second in-process (CliRunner) and two through a fresh
interpreter; the tests that need the real process (stderr, timing, environment) use one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app

ROOT = Path(__file__).resolve().parents[1]
CORRECT = f"{ROOT / 'examples' / 'ranks_correct.py'}:TwoLayer"
BUGS = ROOT / "examples" / "ranks_bugs.py"
CLI = [sys.executable, "-m", "autograd_check"]
PARAMETERS = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK",
                  "AUTOGRAD_CHECK_RENDEZVOUS")

runner = CliRunner()


def env(**extra: str) -> dict[str, str]:
    """This environment without a Slurm allocation's or torchrun's variables, plus extra."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "SRUN_", "SALLOC_")) and k not in RANK_VARIABLES}
    clean.update(COLUMNS="120", NO_COLOR="1", **extra)
    return clean


def process(*args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=env(**extra))


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    """run --json ARGS in this process (the ranks are forked from it): exit code, document."""
    result = runner.invoke(app, ["run", "--json", *args])
    assert result.exit_code in (0, 1), result.stderr
    return result.exit_code, json.loads(result.stdout)


def write(tmp_path: Path, body: str, name: str = "mine.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


class TestRefusedBeforeAnythingRuns:
    @pytest.mark.parametrize(
        ("args", "words"),
        [
            (["--ranks", "2"], "ranks needs a model to split over ranks: give --model"),
            (["--model", "mlp", "--shape", "8x8", "--ranks", "2", "--reference", "finite-diff"],
             "reference 'finite-diff' does not combine with ranks"),
            (["--model", "mlp", "--accumulate", "2"], "accumulate applies only with ranks"),
            (["--model", "mlp", "--parallel", "fsdp"], "parallel applies only with ranks"),
            (["--model", "mlp", "--shape", "6x8", "--ranks", "2", "--accumulate", "2"],
             "shape 6x8: its first dimension (the batch) must split into 2 ranks x 2 "
             "micro-batches"),
            (["--model", "mlp", "--shape", "8x8", "--ranks", "2", "--timeout", "0"],
             "timeout '0' is not allowed"),
            (["--target", f"{ROOT / 'examples' / 'correct_target.py'}:log_cosh", "--ranks", "2"],
             "is a loss; --ranks needs --model linear|mlp with it"),
        ],
    )
    def test_one_line_and_exit_2(self, args: list[str], words: str) -> None:
        done = process("run", *args)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("autograd-check: error: ") and words in done.stderr
        assert done.stdout == ""

    def test_a_module_batch_that_does_not_split_is_refused_by_the_ranks(self) -> None:
        """The target's batch is known only once it is built: the ranks refuse it, one line."""
        done = process("run", "--target", CORRECT, "--ranks", "3")
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            "autograd-check: error: the batch of 8 does not split into 3 ranks x 1 micro-batches "
            "of equal size; choose a batch divisible by 3")


class TestPasses:
    @pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.fsdp)])
    @pytest.mark.parametrize("dtype", ["float32", "float64"])
    def test_the_correct_module_with_accumulation(self, parallel: str, dtype: str) -> None:
        code, doc = run_json("--target", CORRECT, "--ranks", "2", "--parallel", parallel,
                             "--accumulate", "2", "--dtype", dtype)
        assert code == 0 and doc["verdict"]["passed"] is True, doc
        assert [s["name"] for s in doc["statistics"]] == PARAMETERS
        ranks = doc["distributed"]
        assert ranks["ranks"] == 2 and ranks["parallel"] == parallel and ranks["accumulate"] == 2
        assert ranks["ranks_agree"] is True and ranks["start_agree"] is True
        assert ranks["cause"] is None and ranks["reduction"] == "mean" and ranks["scale"] == 1.0
        assert ranks["hosts"] == [ranks["hosts"][0]] * 2
        assert doc["spec"]["dtype"] == dtype and doc["environment"]["backend"] == "gloo"

    def test_json_has_the_statistics_and_the_distributed_block(self) -> None:
        code, doc = run_json("--model", "mlp", "--shape", "8x8", "--ranks", "2",
                             "--loss", "mse-mean")
        assert code == 0, doc
        for stat in doc["statistics"]:
            assert {"name", "shape", "numel", "bit_exact", "mismatched", "max_abs_diff",
                    "max_rel_diff", "rtol", "atol", "passed"} <= stat.keys()
            assert stat["passed"] is True and stat["mismatched"] == 0
        assert [s["name"] for s in doc["statistics"]] == PARAMETERS
        assert {"ranks", "parallel", "wrapper", "accumulate", "train_step", "reduction",
                "reference", "scale", "tolerance", "ranks_agree", "rank_spread", "start_agree",
                "unused_parameters", "cause", "hosts"} <= doc["distributed"].keys()
        assert doc["distributed"]["wrapper"] == "DistributedDataParallel"
        assert doc["distributed"]["rank_spread"] == 0.0
        assert doc["verdict"] == {"bit_exact": doc["verdict"]["bit_exact"],
                                  "criterion": "tolerance", "exit_code": 0, "passed": True}

    @pytest.mark.fsdp
    def test_a_sum_loss_is_checked_against_the_reference_over_w(self) -> None:
        result = runner.invoke(app, ["run", "--model", "mlp", "--shape", "8x8", "--ranks", "2",
                                     "--loss", "mse-sum", "--parallel", "fsdp"])
        assert result.exit_code == 0, result.stderr
        words = " ".join(result.stdout.split())
        assert "the full-batch gradient / 2 (the loss sums over the batch; FSDP averages over " \
               "the 2 ranks)" in words, result.stdout
        code, doc = run_json("--model", "mlp", "--shape", "8x8", "--ranks", "2",
                             "--loss", "mse-sum")
        assert code == 0, doc
        assert doc["distributed"]["reduction"] == "sum" and doc["distributed"]["scale"] == 0.5
        assert doc["distributed"]["reference"].startswith("the full-batch gradient / 2")


NOT_SYNCED = "the ranks hold different gradients: "
ACC2 = ["--accumulate", "2"]
BUG_CASES = [
    # class, extra flags, the finding's kind and factor, words its text holds
    ("UnusedParameter", [], "unused-parameter", None, NOT_SYNCED + "they were not synchronised, "
     "for skip.weight, skip.bias took no part in forward and DDP waited for their gradients "
     "(pass find_unused_parameters=True"),
    ("NoSyncOnLast", ACC2, "unsynced", None, NOT_SYNCED + "some were not synchronised (no_sync() "
     "around the last micro-batch"),
    ("NoSyncEverywhere", ACC2, "unsynced", None, NOT_SYNCED + "some were not synchronised"),
    ("NoSyncOnLast", [*ACC2, "--parallel", "fsdp"], "unsynced", None,
     "the gradients were not synchronised: the last backward ran with gradient sync off "
     "(no_sync() or set_requires_gradient_sync(False)"),
    ("UnscaledAccumulation", ACC2, "scale", 2.0, "every gradient is 2 (= K, K = 2 micro-batches) "
     "times the reference: the accumulated loss is not divided by the 2 micro-batches "
     "(unscaled accumulation)"),
    ("UnscaledAccumulation", [*ACC2, "--parallel", "fsdp"], "scale", 2.0, "every gradient is 2 "
     "(= K, K = 2 micro-batches) times the reference: the accumulated loss is not divided"),
    ("SumLossAsMean", [], "scale", 0.5, "every gradient is 1/2 (= 1/N, N = 2 ranks) times the "
     "reference: the loss sums over the batch but is checked as a mean: DDP averages over the 2 "
     "ranks (use a mean loss, or declare reduction = 'sum')"),
    ("SumLossAsMean", ACC2, "scale", 0.25, "every gradient is 1/4 (= 1/(N·K), N = 2 ranks, K = 2 "
     "micro-batches) times the reference: the loss sums over the batch but is checked as a mean: "
     "DDP averages over the 2 ranks and the train step divides by the 2 micro-batches"),
    ("MeanLossAsSum", [], "scale", 2.0, "every gradient is 2 (= N, N = 2 ranks) times the "
     "reference: the loss averages over the batch but is declared a sum"),
    ("SumLossAveragedTwice", [], "scale", 0.5, "every gradient is 1/2 (= 1/N, N = 2 ranks) times "
     "the reference: the loss is divided by the world size (the 2 ranks) in train_step, and DDP "
     "averages over the ranks as well: averaged twice across ranks"),
    ("PerRankTokenMean", [], "rank-mean", None, "each rank's loss is a mean over its own tokens, "
     "not over the global batch's (rank 0 has 23 tokens, rank 1 has 7, of 30 in all: the "
     "elements of input 1 other than ignore_index -100): DDP averages those means"),
    ("PerRankTokenMean", [*ACC2, "--parallel", "fsdp"], "rank-mean", None, "each micro-batch's "
     "loss is a mean over its own tokens, not over the global batch's (rank 0 has 12 + 11 tokens, "
     "rank 1 has 3 + 4 (one count per micro-batch), of 30 in all"),
    ("RankSeededInit", ["--parallel", "fsdp"], "init-differs", None, "the ranks started from "
     "different parameters, so FSDP sharded a model no rank holds: seed"),
]


class TestPlantedBugs:
    @pytest.mark.parametrize(("name", "flags", "kind", "factor", "words"), [
        pytest.param(*c, marks=[pytest.mark.fsdp] if "fsdp" in c[1] else [],
                     id=f"{c[0]}{''.join(c[1])}") for c in BUG_CASES])
    def test_caught_with_its_finding(self, name: str, flags: list[str], kind: str,
                                     factor: float | None, words: str) -> None:
        code, doc = run_json("--target", f"{BUGS}:{name}", "--ranks", "2", *flags)
        assert code == 1 and doc["verdict"]["passed"] is False, doc
        assert doc["verdict"].get("error") is None, doc["verdict"]
        [finding] = doc["diagnosis"]
        assert finding["kind"] == kind and finding["factor"] == factor, finding
        assert words in finding["text"] and "\n" not in finding["text"], finding["text"]
        assert doc["distributed"]["cause"] == finding["text"]

    def test_the_fixes_pass(self) -> None:
        for name in ("PerRankTokenMeanFixed", "UnusedParameterFound"):
            code, doc = run_json("--target", f"{BUGS}:{name}", "--ranks", "2", *ACC2)
            assert code == 0 and doc["verdict"]["passed"] is True, doc
            assert "diagnosis" not in doc and doc["distributed"]["cause"] is None

    def test_the_human_output_names_the_cause(self) -> None:
        result = runner.invoke(app, ["run", "--target", f"{BUGS}:UnscaledAccumulation",
                                     "--ranks", "2", "--accumulate", "2"])
        assert result.exit_code == 1, result.stderr
        words = " ".join(result.stdout.replace("│", " ").split())  # the panel's lines as one
        assert "FAIL" in words and "likely cause every parameter: [scale] every gradient is 2 (= "\
            "K, K = 2 micro-batches) times the reference: the accumulated loss is not divided by "\
            "the 2 micro-batches (unscaled accumulation)" in words, result.stdout
        assert words.count("likely cause") == 1, result.stdout

    def test_an_unused_parameter_shows_in_the_table_and_in_a_note(self) -> None:
        code, doc = run_json("--target", f"{BUGS}:UnusedParameter", "--ranks", "2")
        assert code == 1 and doc["distributed"]["ranks_agree"] is False
        assert doc["distributed"]["rank_spread"] > 0
        assert doc["distributed"]["unused_parameters"] == ["skip.weight", "skip.bias"]
        assert "no gradient (unused in forward): skip.weight, skip.bias" in doc["notes"]

    def test_rank_seeded_init_is_invisible_to_ddp_but_noted(self) -> None:
        """DDP broadcasts rank 0's parameters when it wraps the model: the gradients are right."""
        code, doc = run_json("--target", f"{BUGS}:RankSeededInit", "--ranks", "2")
        assert code == 0 and doc["verdict"]["passed"] is True, doc
        assert doc["distributed"]["start_agree"] is False and doc["distributed"]["cause"] is None
        assert any("the ranks built different initial parameters; DDP broadcast rank 0's" in n
                   for n in doc["notes"]), doc["notes"]


FAILING = Path(__file__).with_name("ranks_targets.py")
"""Targets that kill, hang or raise (tests/ranks_targets.py)."""


class TestRanksThatFail:
    def test_a_killed_rank_is_named_with_its_log_tail(self) -> None:
        start = time.monotonic()
        done = process("run", "--target", f"{FAILING}:Dies", "--ranks", "2", "--timeout", "60")
        took = time.monotonic() - start
        assert done.returncode == 4, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0] == ("autograd-check: error: rank 1 of 2 was killed by SIGKILL before the "
                            "check ended; the other ranks were stopped"), done.stderr
        assert "  [rank 1] rank 1: about to be killed" in lines, done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""
        # ended by the death, not by --timeout 60 (the margin is for a loaded 2-core machine)
        assert took < 40, took

    def test_a_hung_rank_is_named_at_the_timeout(self) -> None:
        start = time.monotonic()
        done = process("run", "--target", f"{FAILING}:Hangs", "--ranks", "2", "--timeout", "5")
        took = time.monotonic() - start
        assert done.returncode == 4, done.stderr
        lines = done.stderr.splitlines()
        assert lines[0] == ("autograd-check: error: rank 1 of 2 did not finish within 5 s "
                            "(--timeout): still in its own code while the other ranks waited for "
                            "it in a collective; every rank was stopped"), done.stderr
        assert "  [rank 1] rank 1: sleeping forever" in lines, done.stderr
        # where it was: the innermost frames, the target's sleep last
        assert lines[-1] == "  [rank 1]     time.sleep(60)", done.stderr
        # stopped at the deadline, not later (the margin is for a loaded 2-core machine)
        assert 5 <= took < 35, took

    @pytest.mark.parametrize(("name", "rank", "error", "note"), [
        ("Raises", 0, "train_step() raised ValueError: planted: the step refuses (at "
                      "ranks_targets.py:", True),
        ("ForwardRaises", 0, "forward() raised KeyError: 'planted: no such layer' (at "
                             "ranks_targets.py:", True),
        # rank 0 waits in the all-reduce, and reads rank 1's error once it breaks
        ("RaisesOnRank1", 1, "train_step() raised ValueError: planted: rank 1 refuses (at "
                             "ranks_targets.py:", False),
    ])
    def test_the_users_own_exception_is_exit_1_naming_its_rank(self, name: str, rank: int,
                                                               error: str, note: bool) -> None:
        code, doc = run_json("--target", f"{FAILING}:{name}", "--ranks", "2")
        assert code == 1 and doc["verdict"]["passed"] is False
        host = doc["environment"]["host"]
        said = doc["verdict"]["error"]
        assert said.startswith(f"rank {rank} of 2, on host {host}: {error}"), said
        assert re.fullmatch(r".*\(at ranks_targets\.py:\d+\)", said), said
        assert doc["distributed"]["raised_on"] == {"rank": rank, "host": host}
        every = "the target's own code raised on ranks 0, 1 of 2; the error shown is rank 0's"
        assert (every in doc["notes"]) is note, doc["notes"]


class TestTheMachine:
    def test_inherited_rendezvous_variables_are_not_read(self) -> None:
        done = process("run", "--model", "mlp", "--shape", "8x8", "--ranks", "2", "--json",
                       MASTER_PORT="1", MASTER_ADDR="no-such-host.invalid", RANK="5",
                       WORLD_SIZE="9", LOCAL_RANK="3")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["distributed"]["ranks"] == 2

    def test_two_checks_at_once_do_not_share_a_port(self) -> None:
        args = [*CLI, "run", "--model", "mlp", "--shape", "8x8", "--ranks", "2", "--json"]
        procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env()) for _ in range(2)]
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 0, stderr
            assert json.loads(stdout)["verdict"]["passed"] is True


class TestMistakesOfTheModule:
    """What a user's module gets wrong across ranks, each named in the verdict (exit 1)."""

    def test_ranks_that_built_different_parameters_are_a_failed_check(self) -> None:
        code, doc = run_json("--target", f"{FAILING}:FrozenOnOneRank", "--ranks", "2")
        assert code == 1, doc
        assert doc["verdict"]["error"] == (
            "the ranks built different modules: rank 1's parameters differ from rank 0's "
            "(fc.weight has requires_grad=False, rank 0 True); DDP and FSDP need the same "
            "parameters, shapes and requires_grad on every rank")

    def test_what_ddp_refuses_to_wrap_is_the_users_error(self) -> None:
        code, doc = run_json("--target", f"{FAILING}:SyncNormOnCpu", "--ranks", "2")
        assert code == 1, doc
        assert doc["verdict"]["error"].endswith(
            ": DistributedDataParallel(module) raised ValueError: SyncBatchNorm layers only work "
            "with GPU modules")

    @pytest.mark.parametrize(("name", "kinds", "words"), [
        # BatchNorm alone: its per-shard statistics also fit a per-rank mean, never claimed
        ("WithBatchNorm", ["rank-local"], "the module's BatchNorm layers (norm) normalise each "
         "rank's shard with that shard's own statistics (torch.nn.SyncBatchNorm shares them)"),
        ("WithDropout", ["rank-local"], "the module's Dropout layers (drop) draw other masks on "
         "each rank and in the reference"),
        ("ClipsGradients", ["scale"], "times the reference: one uniform scale, as gradient "
         "clipping (clip_grad_norm_)"),
    ])
    def test_a_likely_cause_is_named(self, name: str, kinds: list[str], words: str) -> None:
        code, doc = run_json("--target", f"{FAILING}:{name}", "--ranks", "2")
        assert code == 1 and [f["kind"] for f in doc["diagnosis"]] == kinds, doc["diagnosis"]
        assert words in doc["diagnosis"][-1]["text"], doc["diagnosis"]

    def test_factors_that_coincide_are_both_named(self) -> None:
        code, doc = run_json("--target", f"{FAILING}:LossTimesWorld", "--ranks", "2",
                             "--accumulate", "2")
        assert code == 1
        [finding] = doc["diagnosis"]
        assert finding["kind"] == "scale" and finding["factor"] == 2.0
        assert finding["text"] == (
            "every gradient is 2 (= K, K = 2 micro-batches) times the reference: the accumulated "
            "loss is not divided by the 2 micro-batches (unscaled accumulation); or every "
            "gradient is 2 (= N, N = 2 ranks) times the reference: the ranks' gradients were "
            "summed, not averaged")

    def test_a_frozen_parameter_is_not_called_unused(self) -> None:
        code, doc = run_json("--target", f"{FAILING}:FrozenEverywhere", "--ranks", "2")
        assert code == 0 and doc["distributed"]["unused_parameters"] == []
        assert "no gradient (frozen, requires_grad=False): fc.bias" in doc["notes"]

    def test_the_default_loss_says_what_it_needs(self) -> None:
        code, doc = run_json("--target", f"{FAILING}:DictOutput", "--ranks", "2")
        assert code == 1
        assert doc["verdict"]["error"].startswith(
            f"rank 0 of 2, on host {doc['environment']['host']}: the default train step's loss, "
            "output.square().mean() (give loss(output, *inputs) when forward does not return one "
            "tensor) raised AttributeError")

    def test_a_name_that_is_not_there_is_bad_input_before_the_ranks_start(self) -> None:
        done = process("run", "--target", f"{FAILING}:Nope", "--ranks", "2")
        assert done.returncode == 2 and "no attribute 'Nope'" in done.stderr
        assert "Traceback" not in done.stderr


def test_a_module_s_own_backward_keeps_its_contract_across_ranks() -> None:
    """DDP and the full batch run the same wrong backward and agree: the rules of the module's
    own autograd.Function are what fail the check (issue 16: ranks get the same checks)."""
    code, doc = run_json("--target", f"{FAILING}:WritesGradOutput", "--ranks", "2",
                         "--dtype", "float64")
    assert code == 1, doc
    broken = [c["kind"] for c in doc["contract"] if not c["passed"]]
    assert broken == ["grad-output-mutated"]
    assert all(s["passed"] for s in doc["statistics"])  # the ranks agree with the full batch
    assert doc["diagnosis"][0]["kind"] == "grad-output-mutated"
    code, doc = run_json("--target", CORRECT, "--ranks", "2", "--dtype", "float64")
    assert code == 0 and "contract" not in doc  # torch's own backward: no rules of yours
