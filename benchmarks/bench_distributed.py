#!/usr/bin/env python3
"""Step time of `dual-attention train` on 1 process and data parallel on 2 (torchrun, gloo on
loopback), 1 thread each, on this machine's CPU cores (issue 15).

Three runs of the same model and sequence length, each --steps optimizer steps:
  1 process,  batch B          the per-process work of the data-parallel run, without communication
  2 processes, batch B each    data parallel: the global batch is 2B
  1 process,  batch 2B         the same global batch, serially, for the speed-up
The communication overhead is step time(2 processes, B each) / step time(1 process, B) - 1: the
all-reduce of every gradient (and the per-step loss) that the data-parallel step adds, less what
the bucketed all-reduce hides behind the backward pass. Times come from the program's own report,
which skips the first step and evaluations. The data are random token ids (the arithmetic does not
depend on them). Writes a table and --json.

    .venv/bin/python benchmarks/bench_distributed.py            # the demo's model, B = 16, n = 64
    .venv/bin/python benchmarks/bench_distributed.py --steps 10 --batch-size 4
"""

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "build" / "tools" / "dual-attention"
TORCHRUN = Path(sys.executable).parent / "torchrun"
REPORT = re.compile(r"trained (\d+) steps in ([0-9.]+) s: ([0-9.]+) tok/s")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, tmp, name, processes, batch_size):
    out = tmp / name
    train = [str(CLI), "train", "--config", str(args.config), "--out", str(out), "--threads", "1",
             "--block-size", str(args.block_size), "--batch-size", str(batch_size),
             "--max-steps", str(args.steps + 1), "--eval-every", str(10 ** 9), "--eval-iters",
             "1", "--warmup", "1", str(tmp / "tokens.bin")]
    if processes > 1:
        command = [str(TORCHRUN), f"--nproc-per-node={processes}", f"--master-port={free_port()}",
                   "--no-python", "--", *train]
    else:
        command = train
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"{name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    match = REPORT.search(result.stdout)
    if not match:
        sys.exit(f"{name}: no timing report in its output:\n{result.stdout}")
    steps, tokens_per_second = int(match[1]), float(match[3])
    tokens_per_step = processes * batch_size * args.block_size
    return dict(processes=processes, batch_size_per_process=batch_size, steps=steps,
                step_ms=1000.0 * tokens_per_step / tokens_per_second,
                tokens_per_second=tokens_per_second)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples/configs/shakespeare_dat.json")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (one more runs first)")
    parser.add_argument("--json", type=Path,
                        default=ROOT / "benchmarks/results/distributed_cpu_1thread.json")
    args = parser.parse_args()
    config = json.loads(args.config.read_text())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rng = np.random.default_rng(0)
        rng.integers(0, config["vocab_size"], 200_000, dtype=np.uint16).tofile(tmp / "tokens.bin")
        rows = [run(args, tmp, "one", 1, args.batch_size),
                run(args, tmp, "two", 2, args.batch_size),
                run(args, tmp, "one_global", 1, 2 * args.batch_size)]
    one, two, serial = rows
    overhead = two["step_ms"] / one["step_ms"] - 1.0
    speedup = serial["step_ms"] / two["step_ms"]
    print(f"model {args.config.name}, block size {args.block_size}, {args.steps} timed steps, "
          f"1 thread per process, {os.cpu_count()} CPU cores")
    print(f"{'run':<34} {'step (ms)':>10} {'tok/s':>9}")
    labels = [f"1 process, batch {args.batch_size}", f"2 processes, batch {args.batch_size} each",
              f"1 process, batch {2 * args.batch_size}"]
    for label, row in zip(labels, rows):
        print(f"{label:<34} {row['step_ms']:>10.1f} {row['tokens_per_second']:>9.0f}")
    print(f"communication overhead: {100 * overhead:+.1f} % of a step; "
          f"speed-up of 2 processes over 1 on the same global batch: {speedup:.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp_json = args.json.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(dict(
        config=str(args.config.relative_to(ROOT)), block_size=args.block_size, steps=args.steps,
        cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(), runs=rows,
        communication_overhead=overhead, speedup_same_global_batch=speedup), indent=2) + "\n")
    tmp_json.replace(args.json)


if __name__ == "__main__":
    main()
