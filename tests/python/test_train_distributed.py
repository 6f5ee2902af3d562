"""`dual-attention train` (examples/train_lm.cpp) data parallel on c10d, 2 processes on loopback
with 1 thread each: under torchrun it takes the steps of one process over the same global batch,
rank 0 alone writes the checkpoint (which the reference loads), and a rank that dies or hangs ends
the other with a clear error instead of a hang. Tiny models on token files; seconds."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from test_training import CLI, DAT_CONFIG, VOCAB, counting_corpus, read_log, write_config

TORCHRUN = Path(sys.executable).parent / "torchrun"
# Dropout off: with it each rank draws its own masks, and no single process draws the same.
CONFIG = dict(DAT_CONFIG, dropout_rate=0.0)
# SGD: AdamW divides by the root of tiny second moments and turns float noise into visible steps.
COMMON = ["--threads", 1, "--block-size", 32, "--optimizer", "sgd", "--lr", 0.05, "--warmup", 2,
          "--max-steps", 4, "--eval-every", 4, "--eval-iters", 2, "--seed", 5, "--grad-accum", 2]
ENV = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with --batch-size 8, and torchrun with 2 processes of --batch-size 4."""
    tmp = tmp_path_factory.mktemp("ddp")
    corpus = counting_corpus(tmp / "count.bin")
    config = write_config(tmp, CONFIG)
    args = ["--config", config, *COMMON, corpus]
    one = subprocess.run([str(CLI), "train", *map(str, args), "--batch-size", "8", "--out",
                          str(tmp / "one"), "--log", str(tmp / "one.csv")],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert one.returncode == 0, f"exit {one.returncode}\n{one.stdout}\n{one.stderr}"
    # "--" ends torchrun's own options: its parser would take --log for an abbreviation of its
    # --log-dir.
    two = subprocess.run(
        [str(TORCHRUN), "--nproc-per-node=2", f"--master-port={free_port()}", "--no-python",
         "--", str(CLI), "train", *map(str, args), "--batch-size", "4", "--out", str(tmp / "two"),
         "--log", str(tmp / "two.csv")],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert two.returncode == 0, f"exit {two.returncode}\n{two.stdout}\n{two.stderr}"
    return tmp, one, two


def test_two_processes_take_the_steps_of_one_process_over_the_global_batch(runs):
    tmp, _, two = runs
    assert "2 processes, 4 windows each per micro-batch" in two.stdout, two.stdout
    one_state = load_file(tmp / "one" / "model.safetensors")
    two_state = load_file(tmp / "two" / "model.safetensors")
    assert one_state.keys() == two_state.keys()
    for name, expected in one_state.items():
        scale = expected.abs().max().item()
        difference = (two_state[name] - expected).abs().max().item()
        assert difference <= 1e-6 * scale, f"{name}: {difference} against scale {scale}"
    # The logged loss is the mean over the ranks: the global batch's loss.
    one_log, two_log = read_log(tmp / "one.csv"), read_log(tmp / "two.csv")
    assert sorted(one_log) == sorted(two_log) == [1, 2, 3, 4]
    for step in one_log:
        for a, b in zip(one_log[step], two_log[step]):
            if a == "nan":
                assert b == "nan"
            else:
                assert math.isclose(float(a), float(b), rel_tol=1e-6), (step, a, b)
    # The steps did something: the loss fell.
    assert float(one_log[4][0]) < float(one_log[1][0]) - 0.05, one_log


def test_rank_zero_alone_writes_the_checkpoint_and_the_reference_loads_it(runs):
    from dual_attention.hf import DualAttnTransformerLM_HFHub

    from dual_attention_cpp.language_models import DualAttnTransformerLM as OurDAT

    tmp, _, two = runs
    # One report of the save and one of the evaluation, from rank 0 only.
    assert two.stdout.count("model saved in") == 1, two.stdout
    assert two.stdout.count("step 4: train loss") == 1, two.stdout
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith("two")) == ["two", "two.csv"]
    assert sorted(p.name for p in (tmp / "two").iterdir()) == [
        "config.json", "model.safetensors", "optimizer.pt", "training_state.json"]
    reference = DualAttnTransformerLM_HFHub.from_pretrained(str(tmp / "two")).eval()
    mine = OurDAT.from_pretrained(str(tmp / "two")).eval()
    x = torch.from_numpy(np.fromfile(tmp / "count.bin", dtype=np.uint16)[:64].astype(np.int64))
    with torch.no_grad():
        expected, _ = reference(x.view(2, 32))
        actual, _ = mine(x.view(2, 32))
    assert (actual - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def start_ranks(tmp, port, extra=()):
    """Two processes with torchrun's variables, each with its own stdout/stderr files."""
    corpus = counting_corpus(tmp / "count.bin")
    config = write_config(tmp, CONFIG)
    procs = []
    for rank in range(2):
        env = dict(ENV, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        args = ["--config", config, "--threads", 1, "--block-size", 32, "--batch-size", 4,
                "--max-steps", 1000000, "--eval-every", 1000000, "--out", tmp / "out",
                *extra, corpus]
        if rank == 0:
            args += ["--log", tmp / "rank0.csv"]
        out = open(tmp / f"rank{rank}.err", "w")
        procs.append(subprocess.Popen([str(CLI), "train", *map(str, args)],
                                      stdout=subprocess.DEVNULL, stderr=out, text=True, env=env))
    return procs


def wait_for_steps(tmp, procs, steps, timeout=60):
    """Until rank 0 has logged `steps` steps (both ranks are then inside the training loop)."""
    log = tmp / "rank0.csv"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= steps:
            return
        for rank, p in enumerate(procs):
            assert p.poll() is None, (f"rank {rank} exited {p.returncode} early:\n"
                                      f"{(tmp / f'rank{rank}.err').read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"rank 0 logged fewer than {steps} steps in {timeout} s")


@pytest.mark.parametrize("fault", ["killed", "hung"])
def test_a_rank_that_dies_or_hangs_ends_the_other_with_a_clear_error(tmp_path, fault):
    # A dead peer closes its sockets, and gloo fails at once; a hung one (stopped) is noticed when
    # --dist-timeout passes.
    procs = start_ranks(tmp_path, free_port(), extra=["--dist-timeout", 5])
    try:
        wait_for_steps(tmp_path, procs, 3)
        os.kill(procs[1].pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)
        start = time.monotonic()
        returncode = procs[0].wait(timeout=60)
        seconds = time.monotonic() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    stderr = (tmp_path / "rank0.err").read_text()
    assert returncode == 1, stderr
    assert "train_lm: error: rank 0 of 2: " in stderr, stderr
    if fault == "killed":
        assert "Connection reset by peer" in stderr or "Connection closed by peer" in stderr, stderr
        assert seconds < 5, seconds
    else:
        assert "Timed out" in stderr, stderr
        assert 4 < seconds < 30, seconds
