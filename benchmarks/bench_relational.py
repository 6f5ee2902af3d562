#!/usr/bin/env python3
"""Time and peak memory of RelationalAttention, DualAttention and a whole DualAttnTransformerLM:
ours against the reference.

For every (module, relation activation, mode, sequence length) this script builds the reference
module (dual-attention 0.0.7) with a fixed seed, saves its weights and random inputs with
torch.save, and then runs, each in a fresh process, the reference (this script with --worker) and
our C++ program build/benchmarks/bench_relational on the same weights and inputs. Peak memory is the
rise of that process's max RSS over the measured calls (after a short warm-up call on a prefix), or
the rise of the CUDA allocator's peak on CUDA. It prints a table, checks that both outputs agree,
and writes everything to a JSON file. See benchmarks/README.md.
"""

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


MODULES = ("relational_attention", "dual_attention", "language_model")


def module_kwargs(module, activation, args, n):
    """Constructor keywords of the benchmarked module (issue 6: d_model 256, 4 relational of 8
    heads, 2 kv heads). The language model has args.lm_layers DualAttention blocks of that shape,
    symbolic-attention symbols, RoPE, and a context of exactly n tokens."""
    d_model, heads_ra, heads_sa, kv_heads = args.d_model, args.heads_ra, args.heads_sa, args.kv_heads
    if module == "relational_attention":
        return dict(d_model=d_model, n_heads=heads_ra, total_n_heads=heads_ra + heads_sa,
                    n_kv_heads=kv_heads, rel_activation=activation)
    if module == "dual_attention":
        return dict(d_model=d_model, n_heads_sa=heads_sa, n_heads_ra=heads_ra, dropout=0.0,
                    sa_kwargs=dict(n_kv_heads=kv_heads),
                    ra_kwargs=dict(n_kv_heads=kv_heads, rel_activation=activation))
    if module == "language_model":
        return dict(vocab_size=args.lm_vocab, d_model=d_model, n_layers=args.lm_layers,
                    n_heads_sa=heads_sa, n_heads_ra=heads_ra,
                    symbol_retrieval_kwargs=dict(d_model=d_model, n_symbols=64, n_heads=4),
                    dff=4 * d_model, dropout_rate=0.0, activation="gelu", norm_first=True,
                    max_block_size=n, sa_kwargs=dict(n_kv_heads=kv_heads),
                    ra_kwargs=dict(n_kv_heads=kv_heads, rel_activation=activation),
                    symbol_retrieval="symbolic_attention", pos_enc_type="RoPE")
    raise ValueError(f"unknown module {module!r}")


def build_reference(module, kwargs):
    from dual_attention.dual_attention import DualAttention
    from dual_attention.language_models import DualAttnTransformerLM
    from dual_attention.relational_attention import RelationalAttention
    if module == "relational_attention":
        return RelationalAttention(**kwargs)
    if module == "dual_attention":
        return DualAttention(**kwargs)
    return DualAttnTransformerLM(**kwargs)


def reference_estimate_gb(module, mode, n, heads_ra, batch=1, layers=1):
    """A rough peak of the reference, which holds several [b, h, n, n] float32 tensors at once
    (measured: about 3.5 of them in a forward, 6.5 in a training step, per layer in training)."""
    per_tensor = batch * heads_ra * n * n * 4
    return per_tensor * (4 if mode == "forward" else 7 * layers) / 2**30


def make_case(module, kwargs, args, n):
    """The module's weights (torch.manual_seed(0)) and random inputs, as torch.save will store
    them: "state.<name>" for every state_dict entry, then "x" and "symbols" ([batch, n, d_model])
    for a layer, or "x" and "targets" (token ids [batch, n]) for the language model."""
    torch.manual_seed(0)
    reference = build_reference(module, kwargs)
    data = {"state." + k: v for k, v in reference.state_dict().items()}
    if module == "language_model":
        data["x"] = torch.randint(0, args.lm_vocab, (args.batch, n))
        data["targets"] = torch.randint(0, args.lm_vocab, (args.batch, n))
    else:
        data["x"] = torch.randn(args.batch, n, args.d_model)
        data["symbols"] = torch.randn(args.batch, n, args.d_model)
    return data


# ---- the reference worker: runs in its own process ---------------------------------------------

def max_rss_mb():
    """Peak resident set size: VmHWM (ru_maxrss would include the parent's size at fork)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_ms():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000


def reset_max_rss():
    """Frees heap back to the system and resets the max RSS to the current RSS (Linux)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_worker(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    data = torch.load(spec["case"])
    module = build_reference(spec["module"], spec["kwargs"])
    state = {k[len("state."):]: v for k, v in data.items() if k.startswith("state.")}
    module.load_state_dict(state)
    module.to(device=device, dtype=dtype).eval()
    train = spec["mode"] == "train"
    is_lm = spec["module"] == "language_model"
    x = data["x"].to(device=device)
    if is_lm:
        second = data["targets"].to(device=device)
    else:
        x = x.to(dtype=dtype)
        second = data["symbols"].to(device=device, dtype=dtype)

    def step(x_in, s_in):
        """Forward under no_grad, or forward and backward: returns what is compared with ours."""
        if is_lm:
            # Weights are tied: final_out.weight is token_embedder.weight.
            if not train:
                with torch.no_grad():
                    return {"out": module(x_in)[0]}
            module.zero_grad(set_to_none=True)
            logits, loss = module(x_in, s_in)
            loss.backward()
            return {"out": logits.detach(), "loss": loss.detach().reshape(1),
                    "embedding_grad": module.layers.final_out.weight.grad}
        if not train:
            with torch.no_grad():
                return {"out": module(x_in, s_in, is_causal=spec["causal"])[0]}
        xg = x_in.detach().requires_grad_(True)
        module.zero_grad(set_to_none=True)
        out = module(xg, s_in, is_causal=spec["causal"])[0]
        out.float().square().mean().backward()
        return {"out": out.detach(), "x_grad": xg.grad}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    warm = min(x.shape[1], 64)
    step(x[:, :warm], second[:, :warm])
    sync()
    gc.collect()
    rss_reset = reset_max_rss()
    rss_before = max_rss_mb()
    cpu_before = cpu_ms()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device)
    times, first = [], None
    for r in range(spec["repeats"]):
        sync()
        t0 = time.perf_counter()
        result = step(x, second)
        sync()
        times.append((time.perf_counter() - t0) * 1000)
        if r == 0:
            first = result
    peak_mb = max_rss_mb() - rss_before
    cpu_per_call = (cpu_ms() - cpu_before) / spec["repeats"]
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated(device) - cuda_before) / 2**20
    torch.save({k: v.float().cpu() for k, v in first.items()}, spec["output"])
    print(json.dumps({"times_ms": times, "cpu_ms": cpu_per_call, "peak_mb": peak_mb,
                      "rss_reset": rss_reset}))


# ---- the driver ---------------------------------------------------------------------------------

def run_process(cmd, timeout, env):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if proc.returncode != 0:
        # The first lines say what went wrong (a C++ error's backtrace follows them).
        head = (proc.stderr or proc.stdout).strip().splitlines()[:2]
        return {"error": f"exit {proc.returncode}: " + " | ".join(head)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def relative_difference(path_a, path_b):
    # Ours is written by torch::pickle_save, whose typed dict needs the full unpickler.
    a, b = torch.load(path_a), torch.load(path_b, weights_only=False)
    worst = 0.0
    for key in a:
        scale = a[key].abs().max().item()
        worst = max(worst, (a[key] - b[key]).abs().max().item() / max(scale, 1e-30))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--n", default="512,1024,2048,4096,8192,16384",
                        help="comma-separated sequence lengths")
    parser.add_argument("--modules", default=",".join(MODULES),
                        help="comma-separated, of " + ", ".join(MODULES))
    parser.add_argument("--activations", default="identity,tanh")
    parser.add_argument("--modes", default="forward,train")
    parser.add_argument("--implementation", default="auto",
                        help="ours: auto, blockwise, sdpa or materialize")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads-ra", type=int, default=4)
    parser.add_argument("--heads-sa", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--lm-layers", type=int, default=2,
                        help="DualAttention blocks of the language model")
    parser.add_argument("--lm-vocab", type=int, default=1024,
                        help="vocabulary of the language model")
    parser.add_argument("--max-reference-gb", type=float, default=6.0,
                        help="skip reference runs whose estimated peak is larger")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--omp-wait-policy", default="PASSIVE",
                        help="OMP_WAIT_POLICY for both processes (PASSIVE: idle OpenMP threads "
                             "sleep instead of spinning, which keeps timings sane on a shared "
                             "machine; 'inherit' leaves the environment alone)")
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "benchmarks",
                                                         "bench_relational"))
    parser.add_argument("--json", default="bench_relational.json", help="where to write results")
    args = parser.parse_args()
    if args.worker:
        return run_worker(args.worker)
    for module in args.modules.split(","):
        if module not in MODULES:
            sys.exit(f"--modules: {module!r} is not one of {', '.join(MODULES)}")
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: build the project first (scripts/setup.sh)")

    env = dict(os.environ)
    if args.omp_wait_policy != "inherit":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    rows = []
    header = (f"{'module':<21}{'rel act':<9}{'mode':<8}{'n':>6} | {'ref ms':>9}{'ours ms':>9}"
              f"{'speedup':>8} | {'ref cpu':>9}{'ours cpu':>9}{'ratio':>7} | {'ref MB':>8}"
              f"{'ours MB':>8}{'less mem':>9} | {'max rel diff':>12}  ours path")
    print(f"device {args.device}, {args.dtype}, {args.threads} threads, batch {args.batch}, "
          f"d_model {args.d_model}, {args.heads_ra} relational + {args.heads_sa} self-attention "
          f"heads, {args.kv_heads} kv heads, causal; ms = median wall time of {args.repeats} "
          f"calls, "
          f"cpu = process CPU time per call (all threads), MB = rise of max RSS; "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', '(unset)')}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for module in args.modules.split(","):
            for activation in args.activations.split(","):
                for n in [int(v) for v in args.n.split(",")]:
                    kwargs = module_kwargs(module, activation, args, n)
                    case = os.path.join(tmp, "case.pt")
                    torch.save(make_case(module, kwargs, args, n), case)
                    for mode in args.modes.split(","):
                        spec = dict(module=module, kwargs=kwargs, case=case, mode=mode,
                                    threads=args.threads, repeats=args.repeats, device=args.device,
                                    dtype=args.dtype, causal=True)
                        row = dict(module=module, rel_activation=activation, mode=mode, n=n,
                                   kwargs=kwargs)
                        layers = args.lm_layers if module == "language_model" else 1
                        estimate = reference_estimate_gb(module, mode, n, args.heads_ra,
                                                         args.batch, layers)
                        outputs = {}
                        for who in ("reference", "ours"):
                            spec_path = os.path.join(tmp, f"{who}.json")
                            outputs[who] = os.path.join(tmp, f"{who}_out.pt")
                            with open(spec_path, "w") as f:
                                json.dump(dict(spec, output=outputs[who],
                                               implementation=args.implementation), f)
                            if who == "reference" and estimate > args.max_reference_gb:
                                row[who] = {"error": f"skipped (estimated {estimate:.0f} GB)"}
                                continue
                            cmd = ([sys.executable, os.path.abspath(__file__), "--worker",
                                    spec_path] if who == "reference" else [args.binary, spec_path])
                            row[who] = run_process(cmd, args.timeout, env)
                        ref, ours = row["reference"], row["ours"]
                        if "error" not in ref and "error" not in ours:
                            row["max_rel_diff"] = relative_difference(outputs["reference"],
                                                                      outputs["ours"])
                        rows.append(row)
                        print(format_row(row), flush=True)
    with open(args.json, "w") as f:
        json.dump(dict(settings=vars(args), torch=torch.__version__, rows=rows), f, indent=1)
    print(f"wrote {args.json}")


def format_row(row):
    def ms(r):
        return statistics.median(r["times_ms"]) if "times_ms" in r else None

    ref, ours = row["reference"], row["ours"]
    cells = [f"{row['module']:<21}{row['rel_activation']:<9}{row['mode']:<8}{row['n']:>6} |"]
    r_ms, o_ms = ms(ref), ms(ours)
    cells.append(f"{r_ms:>9.1f}" if r_ms is not None else f"{'-':>9}")
    cells.append(f"{o_ms:>9.1f}" if o_ms is not None else f"{'-':>9}")
    cells.append(f"{r_ms / o_ms:>7.1f}x |" if r_ms and o_ms else f"{'-':>8} |")
    r_cpu, o_cpu = ref.get("cpu_ms"), ours.get("cpu_ms")
    cells.append(f"{r_cpu:>9.1f}" if r_cpu is not None else f"{'-':>9}")
    cells.append(f"{o_cpu:>9.1f}" if o_cpu is not None else f"{'-':>9}")
    cells.append(f"{r_cpu / o_cpu:>6.1f}x |" if r_cpu and o_cpu else f"{'-':>7} |")
    r_mb, o_mb = ref.get("peak_mb"), ours.get("peak_mb")
    cells.append(f"{r_mb:>8.1f}" if r_mb is not None else f"{'-':>8}")
    cells.append(f"{o_mb:>8.1f}" if o_mb is not None else f"{'-':>8}")
    cells.append(f"{r_mb / max(o_mb, 0.1):>8.1f}x |" if r_mb is not None and o_mb is not None
                 else f"{'-':>9} |")
    diff = row.get("max_rel_diff")
    cells.append(f"{diff:>12.1e}" if diff is not None else f"{'-':>12}")
    cells.append(f"  {ours.get('implementation', '')}")
    line = "".join(cells)
    for who in ("reference", "ours"):
        if "error" in row[who]:
            line += f"  [{who}: {row[who]['error']}]"
    return line


if __name__ == "__main__":
    main()
