#!/usr/bin/env python3
"""Encode and decode throughput of the GPT-2 tokenizer: ours (dual_attention_cpp.tokenizer, C++ on
PCRE2), tiktoken and Hugging Face tokenizers, on a real corpus, single-threaded and batched over 2
threads, in one run. Prints a table and writes JSON (default
benchmarks/results/tokenizer_cpu.json). See benchmarks/README.md.

    PYTHONPATH=build/python .venv/bin/python benchmarks/bench_tokenizer.py [--repeats 3]

Corpus: the Shakespeare plays ($DUAL_ATTENTION_DATA_DIR/shakespeare, scripts/fetch_data.sh) and the
Python standard library's sources (the first --stdlib-mb MB of them, in sorted order), one document
per file. MB/s counts UTF-8 bytes of the documents (10^6 bytes per MB); each figure is the best of
--repeats timed runs. Single-threaded: one call per document (ours and tiktoken: encode_ordinary;
HF: encode without added special tokens), with torch at 1 thread. Batched: one batch call over all
documents with 2 threads (ours: encode_ordinary_batch with torch.set_num_threads(2); tiktoken:
encode_ordinary_batch(num_threads=2); HF: encode_batch with RAYON_NUM_THREADS=2). Decode: decode of
each document's ids, one thread. Every tokenizer's ids are checked equal to tiktoken's first.
"""

import argparse
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "2")  # HF tokenizers' pool, read at its first use
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

import tiktoken  # noqa: E402
import tiktoken.load  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402

import make_hf_tokenizer_files  # noqa: E402
from dual_attention_cpp import tokenizer as ours_module  # noqa: E402

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def data_dir():
    d = os.environ.get("DUAL_ATTENTION_DATA_DIR")
    if d:
        return Path(d)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dual-attention"


def corpus(stdlib_mb):
    docs = [p.read_text(encoding="utf-8", errors="replace")
            for p in sorted((data_dir() / "shakespeare").glob("*.txt"))]
    budget = stdlib_mb * 1e6
    for p in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if budget <= 0:
            break
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        docs.append(text)
        budget -= len(text.encode("utf-8"))
    return docs


def best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stdlib-mb", type=float, default=3.0)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "tokenizer_cpu.json"))
    args = parser.parse_args()

    ranks_path = data_dir() / "gpt2.tiktoken"
    docs = corpus(args.stdlib_mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    print(f"corpus: {len(docs)} documents, {mb:.2f} MB", flush=True)

    ranks = tiktoken.load.load_tiktoken_bpe(str(ranks_path))
    tk = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                           special_tokens={"<|endoftext|>": 50256})
    ours = ours_module.Encoding.from_file(str(ranks_path))
    with tempfile.TemporaryDirectory() as tmp:
        make_hf_tokenizer_files.build(ranks_path, tmp)
        hf = tokenizers.Tokenizer.from_file(str(Path(tmp) / "tokenizer.json"))

    expected = [tk.encode_ordinary(d) for d in docs]
    assert [ours.encode_ordinary(d) for d in docs] == expected, "ours differs from tiktoken"
    assert [e.ids for e in hf.encode_batch(docs, add_special_tokens=False)] == expected, \
        "HF differs from tiktoken"

    results = {}

    def record(name, seconds):
        results[name] = {"seconds": seconds, "MB_per_s": mb / seconds}
        print(f"  {name:32s} {mb / seconds:8.2f} MB/s  ({seconds:.3f} s)", flush=True)

    torch.set_num_threads(1)
    # Ours keeps a cache of merged pieces (warm here after the equality check above); the first
    # row is a fresh tokenizer whose cache starts empty, so that the cache's share is visible.
    def cold_pass():
        fresh = ours_module.Encoding.from_file(str(ranks_path))
        t0 = time.perf_counter()
        for d in docs:
            fresh.encode_ordinary(d)
        return time.perf_counter() - t0

    record("encode 1 thread, cold cache / ours", min(cold_pass() for _ in range(args.repeats)))
    record("encode 1 thread / ours", best_time(lambda: [ours.encode_ordinary(d) for d in docs], args.repeats))
    record("encode 1 thread / tiktoken", best_time(lambda: [tk.encode_ordinary(d) for d in docs], args.repeats))
    record("encode 1 thread / HF tokenizers",
           best_time(lambda: [hf.encode(d, add_special_tokens=False) for d in docs], args.repeats))
    torch.set_num_threads(2)
    record("encode 2 threads / ours", best_time(lambda: ours.encode_ordinary_batch(docs), args.repeats))
    record("encode 2 threads / tiktoken",
           best_time(lambda: tk.encode_ordinary_batch(docs, num_threads=2), args.repeats))
    record("encode 2 threads / HF tokenizers",
           best_time(lambda: hf.encode_batch(docs, add_special_tokens=False), args.repeats))
    torch.set_num_threads(1)
    record("decode 1 thread / ours", best_time(lambda: [ours.decode(e) for e in expected], args.repeats))
    record("decode 1 thread / tiktoken", best_time(lambda: [tk.decode(e) for e in expected], args.repeats))
    record("decode 1 thread / HF tokenizers", best_time(lambda: [hf.decode(e) for e in expected], args.repeats))

    table = ["| | ours | tiktoken | HF tokenizers |", "|---|--:|--:|--:|"]
    for row in ("encode 1 thread", "encode 2 threads", "decode 1 thread"):
        cells = [f"{results[f'{row} / {who}']['MB_per_s']:.2f}" for who in ("ours", "tiktoken", "HF tokenizers")]
        table.append(f"| {row} (MB/s) | " + " | ".join(cells) + " |")
        if row == "encode 1 thread":
            cold = results["encode 1 thread, cold cache / ours"]["MB_per_s"]
            table.append(f"| encode 1 thread, cold cache (MB/s) | {cold:.2f} | (no cache) | (no cache) |")
    print("\n" + "\n".join(table))

    out = {
        "corpus": {"documents": len(docs), "MB": mb, "stdlib_mb": args.stdlib_mb},
        "repeats": args.repeats,
        "versions": {"tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__,
                     "torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor()},
        "results": results,
        "table": table,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(args.json + ".tmp")
    tmp_path.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp_path, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
