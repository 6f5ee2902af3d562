#!/usr/bin/env python3
"""Writes seed inputs for fuzz/fuzz_tokenizer: GPT-2's tokenizer cut to its first N tokens (the 256
bytes and the first merges, plus <|endoftext|> as id N), in each of the three formats, followed by
sample texts, in the layout of fuzz_inputs.h's load_tokenizer_input (a format byte, then the
file(s) and the text separated by "\\n--8<--\\n").

    .venv/bin/python fuzz/make_tokenizer_seeds.py --ranks gpt2.tiktoken --out DIR [--n-tokens 300]

The Hugging Face files are made by tests/helpers/make_hf_tokenizer_files.py from the cut ranks.
"""

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "helpers"))
import make_hf_tokenizer_files  # noqa: E402

SEPARATOR = b"\n--8<--\n"
TEXTS = [
    b"Hello world! It's 2026; ca\xc3\xa7a 42 <|endoftext|> x",
    "  spaces\n\nnewlines\tand \u00e9\u4e2d\U0001f600".encode(),
    b"\xff\xfe invalid \xc3 utf-8",
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", required=True, help="gpt2.tiktoken")
    parser.add_argument("--out", required=True, help="folder for the seed files")
    parser.add_argument("--n-tokens", type=int, default=300)
    args = parser.parse_args()
    lines = Path(args.ranks).read_bytes().splitlines()
    cut = [line for line in lines if line and int(line.split()[1]) < args.n_tokens]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ranks = Path(tmp) / "cut.tiktoken"
        ranks.write_bytes(b"\n".join(cut) + b"\n")
        hf = make_hf_tokenizer_files.build(
            ranks, Path(tmp) / "hf", special_tokens={"<|endoftext|>": args.n_tokens}
        )
        files = {
            "tiktoken": (0, [ranks.read_bytes()]),
            "tokenizer_json": (1, [(hf / "tokenizer.json").read_bytes()]),
            "vocab_merges": (
                2,
                [(hf / "vocab.json").read_bytes(), (hf / "merges.txt").read_bytes()],
            ),
        }
        for name, (fmt, parts) in files.items():
            for i, text in enumerate(TEXTS):
                seed = bytes([fmt]) + SEPARATOR.join(parts + [text])
                (out / f"seed-{name}-{i}.bin").write_bytes(seed)
    print(f"{len(files) * len(TEXTS)} seeds in {out}")


if __name__ == "__main__":
    main()
