#!/usr/bin/env python3
"""Training speed of a DAT language model: ours against the reference (dual-attention 0.0.7),
eager and under torch.compile, in float32 and under bf16 autocast, on the CPU.

The model is issue 18's (the generation issue's DAT LM): vocab 50304, d_model 512, 6 layers, 4
self-attention + 4 relational heads, 2 kv heads, 8 relations, 512 symbols (symbolic attention, 4
heads), swiglu, RoPE, pre-norm, dropout 0; batch 1, n = 1024, --threads (default 2).

Four parts (and --parts ceiling: ours with relational attention at no cost), each printed as a table and written to --json:
  1. forward (eval, no_grad) and training step (forward, loss, backward, AdamW step) of the same
     weights: ours (dual_attention_cpp: the C++ modules from Python), the reference eager, and the
     reference under torch.compile (compile time reported apart); float32 and bf16 autocast;
  2. training tokens/s of whole loops on a token file: our C++ loop (`dual-attention train`) and
     the reference in its own PyTorch loop (nanoGPT's: random windows, AdamW, clipping);
  3. where a training step's time goes: the vocabulary projection + cross-entropy, the 6
     feed-forward blocks, the 6 DualAttention layers, the symbol retriever (called by every layer),
     each timed alone (forward + backward) for ours and the reference;
  4. our training step against the machine's matrix-product rate: its matmul FLOPs, the GFLOP/s
     of its largest products alone (float32, and bfloat16 for one), and the profiler's self CPU
     time grouped into matrix products, attention kernels, the loss's softmax, the optimizer.

    .venv/bin/python benchmarks/bench_train.py [--reps 3] [--no-compile] [--json out.json]
"""

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build" / "python"))

D_MODEL, N_LAYERS, VOCAB = 512, 6, 50304


def lm_config(n):
    return dict(vocab_size=VOCAB, d_model=D_MODEL, n_layers=N_LAYERS, n_heads_sa=4, n_heads_ra=4,
                symbol_retrieval_kwargs=dict(d_model=D_MODEL, n_heads=4, n_symbols=512), dff=None,
                dropout_rate=0.0, activation="swiglu", norm_first=True, max_block_size=n,
                pos_enc_type="RoPE", sa_kwargs=dict(n_kv_heads=2),
                ra_kwargs=dict(n_kv_heads=2, n_relations=8))


def timed(fn, reps, warmup=1):
    """Median seconds of fn() over reps calls, after warmup calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def autocast(bf16):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()


def step_fn(model, optimizer, x, y, bf16):
    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(bf16):
            _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return step


def forward_fn(model, x, bf16):
    def forward():
        with torch.no_grad(), autocast(bf16):
            return model(x)[0]
    return forward


def same_weights_pair(args):
    """(reference, ours, x, y): the two models with the same weights, and a batch of ids/targets."""
    from dual_attention.language_models import DualAttnTransformerLM as Reference

    from dual_attention_cpp.language_models import DualAttnTransformerLM as Ours

    torch.manual_seed(0)
    reference = Reference(**lm_config(args.n))
    ours = Ours(**lm_config(args.n))
    ours.load_state_dict(reference.state_dict())
    x = torch.randint(0, VOCAB, (args.batch, args.n))
    y = torch.randint(0, VOCAB, (args.batch, args.n))
    return reference, ours, x, y


def part_models(args, results):
    n = args.n
    reference, ours, x, y = same_weights_pair(args)

    with torch.no_grad():
        a, b = reference.eval()(x)[0], ours.eval()(x)[0]
    agree = ((a - b).abs().max() / a.abs().max()).item()
    print(f"logits agree: max rel diff {agree:.1e}")
    results["logits_max_rel_diff"] = agree

    rows = []
    candidates = [("ours", ours, False), ("reference eager", reference, False)]
    if not args.no_compile:
        # Compiled, ours keeps relational attention's blockwise path as two opaque operators.
        candidates += [("reference torch.compile", reference, True),
                       ("ours torch.compile", ours, True)]
    for name, model, compile_it in candidates:
        for bf16 in args.bf16_modes:
            row = {"impl": name, "dtype": "bf16 autocast" if bf16 else "float32"}
            if compile_it:  # a fresh compile per dtype, timed apart
                compiled = torch.compile(model)
                compiled.eval()
                t0 = time.perf_counter()
                forward_fn(compiled, x, bf16)()
                row["compile_forward_s"] = time.perf_counter() - t0
                row["forward_s"] = timed(forward_fn(compiled, x, bf16), args.reps, warmup=0)
                compiled.train()
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                t0 = time.perf_counter()
                step_fn(compiled, opt, x, y, bf16)()
                row["compile_step_s"] = time.perf_counter() - t0
                row["step_s"] = timed(step_fn(compiled, opt, x, y, bf16), args.reps, warmup=0)
                torch._dynamo.reset()
            else:
                model.eval()
                row["forward_s"] = timed(forward_fn(model, x, bf16), args.reps)
                model.train()
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
                row["step_s"] = timed(step_fn(model, opt, x, y, bf16), args.reps)
            rows.append(row)
            print(f"  {name:24s} {row['dtype']:14s} forward {row['forward_s'] * 1e3:7.0f} ms   "
                  f"training step {row['step_s'] * 1e3:7.0f} ms", flush=True)
    results["models"] = rows
    return rows


def part_loops(args, results):
    """Whole training loops on one token file of random ids: tokens/s after the first step."""
    from dual_attention.language_models import DualAttnTransformerLM as Reference, configure_optimizers

    n, steps = args.n, args.loop_steps
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    tokens = tmp / "tokens.bin"
    np.random.default_rng(0).integers(0, 50257, 40 * n, dtype=np.uint16).tofile(tokens)
    config = tmp / "config.json"
    config.write_text(json.dumps(lm_config(n)))
    out = {}
    for bf16 in args.bf16_modes:
        cmd = [str(ROOT / "build" / "tools" / "dual-attention"), "train", "--config", str(config),
               "--out", str(tmp / "run"), "--max-steps", str(steps), "--eval-every", "1000000",
               "--eval-iters", "1", "--batch-size", str(args.batch), "--block-size", str(n),
               "--threads", str(args.threads), "--warmup", "1", "--autocast",
               "bf16" if bf16 else "none", str(tokens)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
        match = re.search(r"trained (\d+) steps in ([\d.]+) s: ([\d.]+) tok/s", run.stdout)
        out[f"ours C++ loop, {'bf16' if bf16 else 'float32'}"] = float(match.group(3))

        torch.manual_seed(0)
        model = Reference(**lm_config(n)).train()
        opt = configure_optimizers(model, 0.1, 6e-4, (0.9, 0.95), "cpu")
        data = np.memmap(tokens, dtype=np.uint16, mode="r")
        rng = np.random.default_rng(1)
        t0 = None
        for step in range(steps + 1):
            if step == 1:
                t0 = time.perf_counter()  # the first step (allocations, warm-up) is not counted
            starts = rng.integers(0, len(data) - n - 1, args.batch)
            batch = torch.from_numpy(np.stack([data[s:s + n + 1] for s in starts]).astype(np.int64))
            for g in opt.param_groups:
                g["lr"] = 6e-4
            with autocast(bf16):
                _, loss = model(batch[:, :-1], batch[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        out[f"reference PyTorch loop, {'bf16' if bf16 else 'float32'}"] = steps * args.batch * n / dt
    for k, v in out.items():
        print(f"  {k:36s} {v:8.0f} tok/s", flush=True)
    results["loops_tok_per_s"] = out


def part_breakdown(args, results):
    """Each component of a training step alone: forward + backward, times its count per step."""
    import dual_attention.dual_attention as ref_da
    import dual_attention.symbol_retrieval as ref_sr
    import dual_attention.transformer_blocks as ref_tb

    import dual_attention_cpp.dual_attention as our_da
    import dual_attention_cpp.symbol_retrieval as our_sr
    import dual_attention_cpp.transformer_blocks as our_tb

    n, b = args.n, args.batch
    cfg = lm_config(n)
    head_dim = D_MODEL // 8
    cos = torch.randn(n, head_dim // 2)
    sin = torch.randn(n, head_dim // 2)
    runs = {}  # impl -> [(component, fn, count)]
    for impl, da, sr, tb in (("ours", our_da, our_sr, our_tb), ("reference", ref_da, ref_sr, ref_tb)):
        torch.manual_seed(0)
        x = torch.randn(b, n, D_MODEL, requires_grad=True)
        weight = torch.nn.Parameter(torch.randn(VOCAB, D_MODEL) * 0.02)
        targets = torch.randint(0, VOCAB, (b, n))

        def head(x=x, weight=weight, targets=targets):
            logits = F.linear(x, weight)
            F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1)).backward()

        ff = tb.FeedForwardBlock(D_MODEL, dff=None, activation="swiglu", use_bias=False)
        attn = da.DualAttention(d_model=D_MODEL, n_heads_sa=4, n_heads_ra=4, dropout=0.0,
                                sa_kwargs=cfg["sa_kwargs"], ra_kwargs=cfg["ra_kwargs"])
        symbols = torch.randn(b, n, D_MODEL)

        def attn_run(attn=attn, x=x, symbols=symbols):
            out = attn(x, symbols, attn_mask=None, is_causal=True, freqs_cos=cos, freqs_sin=sin)
            out[0].sum().backward()

        retriever = sr.SymbolicAttention(**cfg["symbol_retrieval_kwargs"])
        runs[impl] = [("vocab projection + cross-entropy", head, 1),
                      ("feed-forward (swiglu)", lambda ff=ff, x=x: ff(x).sum().backward(), N_LAYERS),
                      ("DualAttention (4 sa + 4 ra heads)", attn_run, N_LAYERS),
                      ("symbol retriever", lambda r=retriever, x=x: r(x).sum().backward(), N_LAYERS)]
    # Each component: the two implementations in alternating rounds (the first one timed after a
    # large allocation otherwise pays for it), median over all rounds.
    rows = []
    reps = max(args.reps, 5)
    for i in range(len(runs["ours"])):
        times = {impl: [] for impl in runs}
        for round_ in range(reps):
            order = list(runs) if round_ % 2 == 0 else list(runs)[::-1]
            for impl in order:
                times[impl].append(timed(runs[impl][i][1], 1, warmup=1 if round_ < 2 else 0))
        for impl in runs:
            name, _, count = runs[impl][i]
            t = statistics.median(times[impl]) * count
            rows.append({"impl": impl, "component": name, "per_step_s": t, "count": count})
            print(f"  {impl:10s} {name:36s} x{count}  {t * 1e3:7.0f} ms", flush=True)
    results["breakdown"] = rows


# Profiler rows grouped into the parts of a step: dense matrix products, attention kernels, the
# loss's softmax, the optimizer and clipping, and everything else (norms, activations, copies).
PROFILE_GROUPS = (
    ("matrix products (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm")),
    ("attention kernels (sdpa)", ("aten::_scaled_dot_product",)),
    ("log-softmax of the loss, fwd + bwd", ("aten::_log_softmax",)),
    ("AdamW and clipping", ("aten::sqrt", "aten::div", "aten::lerp_", "aten::addcdiv_",
                            "aten::linalg_vector_norm", "aten::_foreach")),
)


def sgemm_rate(m, k, n, dtype=torch.float32, reps=5):
    """GFLOP/s of one [m, k] x [k, n] product on this machine (median of reps)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    return 2 * m * k * n / timed(lambda: torch.mm(a, b), reps) / 1e9


def part_profile(args, results):
    """A training step of ours against the machine's matrix-product rate: the step's matmul
    FLOPs (torch.utils.flop_counter), GFLOP/s of its largest products alone, and the profiler's
    self CPU time of each part of the step."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    from dual_attention_cpp.language_models import DualAttnTransformerLM as Ours

    n = args.n
    torch.manual_seed(0)
    model = Ours(**lm_config(n)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, VOCAB, (args.batch, n))
    y = torch.randint(0, VOCAB, (args.batch, n))
    step = step_fn(model, opt, x, y, False)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    shapes = [(n, D_MODEL, VOCAB), (n, VOCAB, D_MODEL), (VOCAB, n, D_MODEL), (n, D_MODEL, 2048),
              (n, D_MODEL, D_MODEL)]
    rates = {f"{m}x{k}x{nn}": sgemm_rate(m, k, nn) for m, k, nn in shapes}
    bf16 = sgemm_rate(n, D_MODEL, 2048, torch.bfloat16, reps=1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    parts = {name: 0.0 for name, _ in PROFILE_GROUPS}
    total = 0.0
    for event in prof.key_averages():
        total += event.self_cpu_time_total / 1e6
        for name, prefixes in PROFILE_GROUPS:
            if event.key.startswith(prefixes):
                parts[name] += event.self_cpu_time_total / 1e6
                break
    parts["everything else"] = total - sum(parts.values())
    best = max(rates.values())
    print(f"  matmul FLOPs of one training step: {flops / 1e9:.1f} G; at the best rate below "
          f"({best:.0f} GFLOP/s) they take {flops / 1e9 / best:.2f} s")
    for shape, rate in rates.items():
        print(f"  float32 product {shape:18s} {rate:7.1f} GFLOP/s")
    print(f"  bfloat16 product {n}x{D_MODEL}x2048    {bf16:7.1f} GFLOP/s")
    print(f"  profiled step of ours: {total:.2f} s of self CPU time")
    for name, t in parts.items():
        print(f"    {name:36s} {t * 1e3:7.0f} ms  {100 * t / total:5.1f} %")
    results["profile"] = {"step_matmul_flops": flops, "sgemm_gflops": rates,
                          "bf16_gemm_gflops": bf16, "step_self_cpu_s": total,
                          "parts_s": parts}


def free_relational_attention(q, k, q_rel, k_rel, sv, wr, *rest):
    """Stands in for torch.ops.dual_attention.relational_attention at no cost: heads [b, n, h, hd]
    of zeros, still connected to every input, so the projections around it keep their backward."""
    touch = (k.sum() + q_rel.sum() + k_rel.sum() + sv.sum() + wr.sum()) * 0
    return q * 0 + touch, None, None


def part_ceiling(args, results):
    """The speed-up our model could reach if relational attention cost nothing: ours with the
    operator replaced by free_relational_attention, against ours and the reference, all eager,
    timed in alternating rounds (median). Everything else (the projections, the symbol retriever,
    self-attention, the feed-forward blocks, the vocabulary projection and the loss, AdamW) is the
    same computation in both implementations."""
    import dual_attention_cpp.relational_attention as ra

    reference, ours, x, y = same_weights_pair(args)

    class FreeOps:  # torch.ops with the relational operator replaced
        def __getattr__(self, name):
            return getattr(torch.ops, name)

    class FreeNamespace:
        relational_attention = staticmethod(free_relational_attention)

        def __getattr__(self, name):
            return getattr(torch.ops.dual_attention, name)

    free_ops = FreeOps()
    free_ops.dual_attention = FreeNamespace()

    class Patched:  # swaps the module-level `torch` that RelationalAttention.forward reads
        def __init__(self, on):
            self.on = on

        def __enter__(self):
            if self.on:
                self.saved = ra.torch
                ra.torch = _TorchWith(free_ops)

        def __exit__(self, *exc):
            if self.on:
                ra.torch = self.saved

    rows = {"reference": (reference, False), "ours": (ours, False),
            "ours, relational attention free": (ours, True)}
    times = {name: {"forward": [], "step": []} for name in rows}
    opts = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, (model, _) in rows.items()}
    for round_ in range(args.reps + 1):  # the first round warms up and is not counted
        for name, (model, free) in rows.items():
            with Patched(free):  # each timed on its second call in a row (the first warms up)
                model.eval()
                forward = timed(forward_fn(model, x, False), 1)
                model.train()
                step = timed(step_fn(model, opts[name], x, y, False), 1)
            if round_ > 0:
                times[name]["forward"].append(forward)
                times[name]["step"].append(step)
    ref = {k: statistics.median(v) for k, v in times["reference"].items()}
    out = []
    print(f"  {'':34s} {'forward':>9s} {'x ref':>6s} {'step':>9s} {'x ref':>6s}")
    for name in rows:
        med = {k: statistics.median(v) for k, v in times[name].items()}
        row = {"impl": name, "forward_s": med["forward"], "step_s": med["step"],
               "forward_speedup": ref["forward"] / med["forward"],
               "step_speedup": ref["step"] / med["step"]}
        out.append(row)
        print(f"  {name:34s} {med['forward'] * 1e3:7.0f} ms {row['forward_speedup']:5.2f}x "
              f"{med['step'] * 1e3:7.0f} ms {row['step_speedup']:5.2f}x", flush=True)
    results["ceiling"] = out


class _TorchWith:
    """The torch module, except for `ops`."""

    def __init__(self, ops):
        self.ops = ops

    def __getattr__(self, name):
        return getattr(torch, name)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--loop-steps", type=int, default=4)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--dtypes", default="float32,bf16",
                   help="comma-separated: float32, bf16 (autocast; slow on CPUs without AVX512-BF16)")
    p.add_argument("--parts", default="models,loops,breakdown,profile")
    p.add_argument("--json", default="bench_train.json")
    args = p.parse_args()
    dtypes = args.dtypes.split(",")
    if not dtypes or any(d not in ("float32", "bf16") for d in dtypes):
        p.error(f"--dtypes: expected a comma-separated list of float32 and bf16, got {args.dtypes!r}")
    args.bf16_modes = [d == "bf16" for d in dtypes]
    torch.set_num_threads(args.threads)
    results = {"config": lm_config(args.n), "batch": args.batch, "threads": args.threads,
               "torch": torch.__version__, "reps": args.reps}
    parts = args.parts.split(",")
    if "models" in parts:
        print(f"== forward and training step, n = {args.n}, batch {args.batch}, "
              f"{args.threads} threads (median of {args.reps})")
        part_models(args, results)
    if "loops" in parts:
        print(f"== training loops, {args.loop_steps} steps after the first")
        part_loops(args, results)
    if "breakdown" in parts:
        print("== where a training step goes (forward + backward of each part alone)")
        part_breakdown(args, results)
    if "profile" in parts:
        print("== our training step against the machine's matrix-product rate")
        part_profile(args, results)
    if "ceiling" in parts:
        print(f"== the ceiling: ours with relational attention at no cost (median of {args.reps})")
        part_ceiling(args, results)
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
