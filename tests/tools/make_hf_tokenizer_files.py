#!/usr/bin/env python3
"""Writes the GPT-2 tokenizer in Hugging Face's formats, built from the tiktoken ranks with the
`tokenizers` package, so that no 2 MB file is committed:

    OUT/tokenizer.json              tokenizers.Tokenizer(BPE(vocab, merges)) with the ByteLevel
                                    pre-tokenizer and decoder, <|endoftext|> an added special token
    OUT/vocab.json, OUT/merges.txt  the same model, saved by tokenizers (GPT-2's original layout)

    .venv/bin/python tests/tools/make_hf_tokenizer_files.py --ranks gpt2.tiktoken --out DIR

The vocab is each token's bytes in GPT-2's byte-level alphabet, its id the rank. The merges come
from the ranks as tiktoken defines them: a token of two or more bytes is the merge of the two parts
that byte-pair merging its bytes with only lower-ranked tokens leaves, in rank order.
Used by tests/cpp/test_tokenizer.cpp, tests/python/test_tokenizer.py and the benchmark.
"""

import argparse
import base64
import json
import os
import sys
from pathlib import Path


def bytes_to_unicode():
    """GPT-2's byte -> character table (printable Latin-1 bytes as themselves, the rest from 256)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load_ranks(path):
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def two_parts(ranks, token, max_rank):
    """Byte-pair merge `token` using only tokens ranked below max_rank (lowest rank first)."""
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def build(ranks_path, out_dir, special_tokens=None):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    special_tokens = special_tokens or {"<|endoftext|>": 50256}
    ranks = load_ranks(ranks_path)
    b2u = bytes_to_unicode()
    as_text = lambda b: "".join(b2u[x] for x in b)  # noqa: E731
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        parts = two_parts(ranks, token, rank)
        if len(parts) != 2:
            sys.exit(f"token {token!r} (rank {rank}) is not the merge of two lower-ranked tokens")
        merges.append((as_text(parts[0]), as_text(parts[1])))
    for token, id_ in special_tokens.items():
        vocab[token] = id_
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True) for t in special_tokens])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "tokenizer.json.tmp"
    tok.save(str(tmp))
    os.replace(tmp, out / "tokenizer.json")
    tok.model.save(str(out))  # vocab.json + merges.txt
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    print(build(args.ranks, args.out))


if __name__ == "__main__":
    main()
