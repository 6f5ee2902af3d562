#!/usr/bin/env python3
"""Tokens per second of greedy generation: ours (dual_attention_cpp, KV cache) against the reference
(dual-attention 0.0.7, which reruns the whole context every step), same weights, each run in a fresh
process with the same number of torch threads.

Cases (issue 12): the DAT LM (vocab 50304, d_model 512, 6 layers, 4 sa + 4 ra heads, 2 kv heads,
8 relations, 512 symbols, swiglu, RoPE) at batch 1; a TransformerLM of the same size (8 heads, 2 kv
heads); the DAT LM at batch 8; the DAT LM in bfloat16 (ours only: converted with .to(bfloat16)).
Prompt 32 tokens, 256 new tokens, greedy (the reference's generate(top_k=1) signature on both sides).

It prints a table (tok/s, peak RSS rise, speed-ups, whether the tokens agree) and the
memory-bandwidth bound beside it: bytes of weights a batch-1 step must read (every unique parameter
but the positional table, at the model's dtype) / the bandwidth of a measured matrix-vector product
of the output layer's shape. Writes everything to --json. See benchmarks/README.md.

    PYTHONPATH=build/python .venv/bin/python benchmarks/bench_generate.py
    ... --new-tokens 64 --cases dat,transformer --skip-reference
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = ("dat", "transformer", "dat_batch8", "dat_bf16")


def dat_kwargs(args):
    return dict(vocab_size=50304, d_model=512, n_layers=6, n_heads_sa=4, n_heads_ra=4,
                symbol_retrieval_kwargs=dict(d_model=512, n_heads=4, n_symbols=512), dff=None,
                dropout_rate=0.0, activation="swiglu", norm_first=True,
                max_block_size=args.prompt + args.new_tokens, pos_enc_type="RoPE",
                sa_kwargs=dict(n_kv_heads=2), ra_kwargs=dict(n_kv_heads=2, n_relations=8))


def transformer_kwargs(args):
    return dict(vocab_size=50304, d_model=512, n_layers=6, n_heads=8, dff=None, dropout_rate=0.0,
                activation="swiglu", norm_first=True, max_block_size=args.prompt + args.new_tokens,
                pos_enc_type="RoPE", block_kwargs=dict(attn_kwargs=dict(n_kv_heads=2)))


def case_setup(case, args):
    """(class name, keywords, batch, dtype) of a case."""
    if case == "transformer":
        return "TransformerLM", transformer_kwargs(args), 1, "float32"
    batch = 8 if case == "dat_batch8" else 1
    return "DualAttnTransformerLM", dat_kwargs(args), batch, "bfloat16" if case == "dat_bf16" else "float32"


def max_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(spec):
    """One measurement in this process: builds the model from the saved weights, runs a short
    warm-up, then times generate(prompt, new_tokens, top_k=1)."""
    torch.set_num_threads(spec["threads"])
    if spec["side"] == "reference":
        from dual_attention import language_models as lm
    else:
        from dual_attention_cpp import language_models as lm
    model = getattr(lm, spec["class"])(**spec["kwargs"])
    model.load_state_dict(torch.load(spec["weights"]), strict=False)
    model.eval()
    if spec["dtype"] == "bfloat16":
        model.to(torch.bfloat16)
    prompt = torch.load(spec["prompt"])
    with torch.no_grad():
        model.generate(prompt[:, :8], 2, top_k=1)  # warm-up
        base = max_rss_bytes()
        start = time.perf_counter()
        out = model.generate(prompt, spec["new_tokens"], top_k=1)
        seconds = time.perf_counter() - start
    peak = max_rss_bytes() - base
    new = out[:, prompt.size(1):]
    return dict(seconds=seconds, tokens_per_s=new.numel() / seconds, peak_rss_rise=peak,
                tokens=new.tolist())


def run_worker(spec):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
        path = f.name
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "build", "python"), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, __file__, "--worker", path], capture_output=True,
                          text=True, env=env)
    os.unlink(path)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['side']} {spec['case']} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gemv_bandwidth(dtype, threads):
    """GB/s of F.linear(x [1, 512], W [50304, 512]): the output layer's matrix-vector product."""
    torch.set_num_threads(threads)
    weight = torch.randn(50304, 512).to(dtype)
    x = torch.randn(1, 512).to(dtype)
    for _ in range(3):
        torch.nn.functional.linear(x, weight)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(10):
            torch.nn.functional.linear(x, weight)
        best = min(best, (time.perf_counter() - start) / 10)
    return weight.numel() * weight.element_size() / best / 1e9


def weight_bytes(class_name, kwargs, dtype):
    """Bytes of every unique parameter but a learned positional table, at `dtype`."""
    from dual_attention import language_models as lm
    model = getattr(lm, class_name)(**kwargs)
    size = torch.tensor([], dtype=getattr(torch, dtype)).element_size()
    seen, total = set(), 0
    for name, p in model.named_parameters():
        if id(p) in seen or "positional_embedder" in name:
            continue
        seen.add(id(p))
        total += p.numel() * size
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results",
                                                       "generate_cpu_2threads.json"))
    args = parser.parse_args()
    if args.worker:
        with open(args.worker) as f:
            print(json.dumps(worker(json.load(f))))
        return

    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}; expected some of {', '.join(CASES)}")
    bandwidth = {d: gemv_bandwidth(getattr(torch, d), args.threads) for d in ("float32", "bfloat16")}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            class_name, kwargs, batch, dtype = case_setup(case, args)
            from dual_attention import language_models as lm
            torch.manual_seed(0)
            reference = getattr(lm, class_name)(**kwargs)
            weights = os.path.join(tmp, f"{case}.pt")
            torch.save(reference.state_dict(), weights)
            prompt_path = os.path.join(tmp, f"{case}_prompt.pt")
            torch.save(torch.randint(0, 50304, (batch, args.prompt), generator=torch.Generator().manual_seed(1)),
                       prompt_path)
            spec = dict(case=case, **{"class": class_name}, kwargs=kwargs, dtype=dtype,
                        weights=weights, prompt=prompt_path, new_tokens=args.new_tokens,
                        threads=args.threads)
            row = dict(case=case, batch=batch, dtype=dtype, ours=run_worker(dict(spec, side="ours")))
            if not args.skip_reference and dtype == "float32":
                row["reference"] = run_worker(dict(spec, side="reference"))
                row["speedup"] = row["ours"]["tokens_per_s"] / row["reference"]["tokens_per_s"]
                row["same_tokens"] = row["ours"]["tokens"] == row["reference"]["tokens"]
            nbytes = weight_bytes(class_name, kwargs, dtype)
            row["weight_bytes_per_step"] = nbytes
            row["bandwidth_bound_tokens_per_s"] = bandwidth[dtype] * 1e9 / nbytes * batch
            results.append(row)
            ref = row.get("reference")
            print(f"{case:12s} b={batch} {dtype:8s} ours {row['ours']['tokens_per_s']:8.1f} tok/s "
                  f"(peak +{row['ours']['peak_rss_rise'] / 2**20:6.0f} MiB)"
                  + (f"  reference {ref['tokens_per_s']:6.2f} tok/s (peak +{ref['peak_rss_rise'] / 2**20:5.0f} MiB)"
                     f"  {row['speedup']:6.1f}x  same tokens: {row['same_tokens']}" if ref else "")
                  + f"  bound {row['bandwidth_bound_tokens_per_s']:6.0f} tok/s"
                  f" ({nbytes / 1e6:.0f} MB/step at {bandwidth[dtype]:.1f} GB/s)", flush=True)
    by_case = {r["case"]: r for r in results}
    ratios = {}
    if "dat" in by_case and "transformer" in by_case:
        ratios["dat_over_transformer"] = by_case["dat"]["ours"]["tokens_per_s"] / by_case["transformer"]["ours"]["tokens_per_s"]
    if "dat" in by_case and "dat_bf16" in by_case:
        ratios["bf16_over_fp32"] = by_case["dat_bf16"]["ours"]["tokens_per_s"] / by_case["dat"]["ours"]["tokens_per_s"]
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    for r in results:  # keep the JSON small
        for side in ("ours", "reference"):
            if side in r:
                r[side].pop("tokens")
    report = dict(machine=platform.processor() or platform.machine(), threads=args.threads,
                  prompt=args.prompt, new_tokens=args.new_tokens, torch=torch.__version__,
                  gemv_bandwidth_gb_s=bandwidth, results=results, ratios=ratios)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    tmp_path = args.json + ".tmp"
    with open(tmp_path, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp_path, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
