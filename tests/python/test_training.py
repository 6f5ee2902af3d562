"""`dual-attention train` (examples/train_lm.cpp) as a user runs it: a short run whose loss falls,
resuming that equals an uninterrupted run bit for bit (CPU, one thread), a checkpoint the reference
loads with the same logits, and clear errors for bad input. Tiny models on token files; seconds."""

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

import dual_attention_cpp as ours  # noqa: F401  (the package must be built)
from dual_attention_cpp.language_models import DualAttnTransformerLM as OurDAT
from dual_attention_cpp.language_models import TransformerLM as OurT

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / "build" / "tools" / "dual-attention"

VOCAB = 64
DAT_CONFIG = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads_sa=2, n_heads_ra=2,
                  symbol_retrieval_kwargs=dict(d_model=32, n_heads=2, n_symbols=8), dff=None,
                  dropout_rate=0.1, activation="swiglu", norm_first=True, max_block_size=32,
                  pos_enc_type="RoPE", ra_kwargs=dict(n_kv_heads=1, symmetric_rels=True))
T_CONFIG = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4, dff=None, dropout_rate=0.1,
                activation="gelu", norm_first=True, max_block_size=32)


def counting_corpus(path, n=6000, restart=20, seed=0):
    """Counting sequences modulo VOCAB from random starts: the next token is determined except at
    a restart (1 in `restart`), so a good model reaches a loss near ln(VOCAB) / restart."""
    rng = np.random.default_rng(seed)
    tokens, t = [], 0
    for i in range(n):
        t = int(rng.integers(VOCAB)) if i % restart == 0 else (t + 1) % VOCAB
        tokens.append(t)
    np.asarray(tokens, dtype=np.uint16).tofile(path)  # nanoGPT's train.bin layout
    return path


@pytest.fixture
def corpus(tmp_path):
    return counting_corpus(tmp_path / "count.bin")


def write_config(tmp_path, config, name="model.json"):
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def train(*args, check=True):
    result = subprocess.run([str(CLI), "train", *map(str, args)], capture_output=True, text=True,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    if check:
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def read_log(path):
    """step -> (loss, lr, val_loss) as the program wrote them (%.9g: float32 exactly)."""
    rows = {}
    for line in Path(path).read_text().splitlines():
        step, loss, lr, val = line.split(",")
        rows[int(step)] = (loss, lr, val)
    return rows


COMMON = ["--threads", 1, "--batch-size", 8, "--block-size", 32, "--lr", 1e-2, "--warmup", 5,
          "--eval-every", 10, "--eval-iters", 2, "--seed", 5]


def test_loss_falls_below_bound_in_fifty_steps(tmp_path, corpus):
    config = write_config(tmp_path, DAT_CONFIG)
    out, log = tmp_path / "run", tmp_path / "log.csv"
    result = train("--config", config, "--out", out, "--max-steps", 50, "--log", log, *COMMON,
                   corpus)
    rows = read_log(log)
    assert sorted(rows) == list(range(1, 51))
    first, last = float(rows[1][0]), float(rows[50][0])
    assert first > 3.9, first  # ~ln(64) = 4.16 at initialisation
    # Bound: the restarts alone cost ln(64) / 20 = 0.21; a model that learned to count is < 1.0.
    assert float(rows[50][2]) < 1.0, (first, last, rows[50])
    assert "step 50: train loss" in result.stdout
    assert (out / "config.json").exists() and (out / "model.safetensors").exists()
    state = json.loads((out / "training_state.json").read_text())
    assert state["step"] == 50 and state["data_position"] == 50
    assert state["extra"]["model_class"] == "DualAttnTransformerLM"


@pytest.mark.parametrize("model_class", ["DualAttnTransformerLM", "TransformerLM"])
def test_resume_equals_uninterrupted_run_bit_for_bit(tmp_path, corpus, model_class):
    config = write_config(tmp_path, DAT_CONFIG if model_class == "DualAttnTransformerLM"
                          else T_CONFIG)
    # Dropout 0.1, so the restored RNG state matters; accumulation 2, so the data position does.
    args = ["--config", config, "--model-class", model_class, "--max-steps", 16, "--grad-accum",
            2, *COMMON, corpus]
    train("--out", tmp_path / "full", "--log", tmp_path / "full.csv", *args)
    train("--out", tmp_path / "cut", "--log", tmp_path / "cut.csv", "--stop-at", 7, *args)
    partial = read_log(tmp_path / "cut.csv")
    assert sorted(partial) == list(range(1, 8))
    resumed = train("--out", tmp_path / "cut", "--log", tmp_path / "cut.csv", "--resume", *args)
    assert "resumed from" in resumed.stdout and "at step 7" in resumed.stdout
    full, cut = read_log(tmp_path / "full.csv"), read_log(tmp_path / "cut.csv")
    assert sorted(cut) == list(range(1, 17))
    for step in range(1, 17):
        assert cut[step][:2] == full[step][:2], (step, cut[step], full[step])
    assert cut[16] == full[16]  # the held-out loss at the end too
    a = (tmp_path / "full" / "model.safetensors").read_bytes()
    b = (tmp_path / "cut" / "model.safetensors").read_bytes()
    assert a == b


@pytest.mark.parametrize("model_class", ["DualAttnTransformerLM", "TransformerLM"])
def test_checkpoint_loads_in_the_reference_with_the_same_logits(tmp_path, corpus, model_class):
    from dual_attention.hf import DualAttnTransformerLM_HFHub, TransformerLM_HFHub

    dat = model_class == "DualAttnTransformerLM"
    config = write_config(tmp_path, DAT_CONFIG if dat else T_CONFIG)
    out = tmp_path / "run"
    train("--config", config, "--model-class", model_class, "--out", out, "--max-steps", 12,
          *COMMON, corpus)
    reference = (DualAttnTransformerLM_HFHub if dat else TransformerLM_HFHub).from_pretrained(
        str(out)).eval()
    mine = (OurDAT if dat else OurT).from_pretrained(str(out)).eval()
    x = torch.from_numpy(np.fromfile(corpus, dtype=np.uint16)[:64].astype(np.int64)).view(2, 32)
    with torch.no_grad():
        expected, _ = reference(x)
        actual, _ = mine(x)
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= 1e-5 * scale
    # The trained weights are what the reference reads: the loss is well below chance.
    with torch.no_grad():
        _, loss = reference(x[:, :-1], x[:, 1:])
    assert loss.item() < math.log(VOCAB) - 1.0


def error_of(result):
    assert result.returncode != 0, result.stdout
    return result.stderr


def test_unknown_config_keyword_is_an_error_naming_it(tmp_path, corpus):
    config = write_config(tmp_path, {**DAT_CONFIG, "n_head_sa": 2})
    message = error_of(train("--config", config, "--out", tmp_path / "o", corpus, check=False))
    assert str(config) in message and "n_head_sa" in message, message
    assert not (tmp_path / "o" / "model.safetensors").exists()


def test_corpus_smaller_than_one_block_is_an_error(tmp_path):
    small = tmp_path / "small.bin"
    np.arange(30, dtype=np.uint16).tofile(small)
    config = write_config(tmp_path, DAT_CONFIG)
    message = error_of(train("--config", config, "--out", tmp_path / "o", "--block-size", 32,
                             small, check=False))
    assert "the corpus is smaller than one block" in message and "block_size + 1 = 33" in message, \
        message


def test_missing_files_are_errors_naming_them(tmp_path, corpus):
    config = write_config(tmp_path, DAT_CONFIG)
    message = error_of(train("--config", config, "--out", tmp_path / "o", tmp_path / "none.bin",
                             check=False))
    assert f"cannot open token file {tmp_path / 'none.bin'}" in message, message
    message = error_of(train("--config", tmp_path / "none.json", "--out", tmp_path / "o", corpus,
                             check=False))
    assert str(tmp_path / "none.json") in message, message


def test_unwritable_output_folder_fails_before_training(tmp_path, corpus):
    (tmp_path / "file").write_text("x")  # no folder can be made below a file, even by root
    config = write_config(tmp_path, DAT_CONFIG)
    out = tmp_path / "file" / "out"
    result = train("--config", config, "--out", out, "--max-steps", 5, corpus, check=False)
    message = error_of(result)
    assert f"output folder {out} cannot be created" in message, message
    assert "step" not in result.stdout


def test_interrupted_save_keeps_the_previous_checkpoint(tmp_path, corpus):
    config = write_config(tmp_path, DAT_CONFIG)
    out = tmp_path / "run"
    train("--config", config, "--out", out, "--max-steps", 10, *COMMON, corpus)
    before = (out / "model.safetensors").read_bytes()
    # A save killed between its two renames leaves only run.old: resuming finds it.
    out.rename(tmp_path / "run.old")
    (tmp_path / "run.saving-abc123").mkdir()  # and a half-written staging folder
    resumed = train("--config", config, "--out", out, "--max-steps", 12, "--resume", *COMMON,
                    corpus)
    assert "at step 10" in resumed.stdout
    assert json.loads((out / "training_state.json").read_text())["step"] == 12
    assert not (tmp_path / "run.old").exists()
    assert (out / "model.safetensors").read_bytes() != before
