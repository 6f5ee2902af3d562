"""Language-model checkpoints written by our C++ save_pretrained load in the reference.

The C++ side is tests/helpers/lm_checkpoint_tool (built into <build>/tests/; the build directory is
$DUAL_ATTENTION_BUILD_DIR, default <repo>/build): it builds a model from a config with a fixed
seed, saves it, and writes its logits and loss for a few token ids. Here the reference package
(dual-attention 0.0.7) loads the folder with `DualAttnTransformerLM_HFHub.from_pretrained` /
`TransformerLM_HFHub.from_pretrained` and must reproduce them; the files must also be what the
reference's own save_pretrained writes for that model.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, load_model

import dual_attention.model_utils as model_utils
import dual_attention.relational_attention as relational_attention
from dual_attention.hf import DualAttnTransformerLM_HFHub, TransformerLM_HFHub

# dual_attention 0.0.7 cannot build 'rca' / 'disrca' without this (a missing import).
relational_attention.model_utils = model_utils

ROOT = Path(__file__).resolve().parents[2]
TOOL = Path(os.environ.get("DUAL_ATTENTION_BUILD_DIR", ROOT / "build")) / "tests" / "lm_checkpoint_tool"
CLASSES = {"DualAttnTransformerLM": DualAttnTransformerLM_HFHub, "TransformerLM": TransformerLM_HFHub}

D = 16
SYMATTN = dict(d_model=D, n_heads=2, n_symbols=8)
DAT = dict(vocab_size=50, d_model=D, n_layers=2, n_heads_sa=2, n_heads_ra=2,
           symbol_retrieval_kwargs=SYMATTN, dff=None, dropout_rate=0.1, activation="gelu",
           norm_first=True, max_block_size=12)
T = dict(vocab_size=50, d_model=D, n_layers=2, n_heads=4, dff=40, dropout_rate=0.0,
         activation="relu", norm_first=False, max_block_size=12)

CASES = {
    "dat_rope_gqa_swiglu": ("DualAttnTransformerLM", "float32", {
        **DAT, "pos_enc_type": "RoPE", "activation": "swiglu", "norm_type": "rmsnorm",
        "sa_kwargs": {"n_kv_heads": 1}, "ra_kwargs": {"n_kv_heads": 1, "symmetric_rels": True}}),
    "dat_posrel_unshared_postnorm": ("DualAttnTransformerLM", "float32", {
        **DAT, "symbol_retrieval": "position_relative",
        "symbol_retrieval_kwargs": {"symbol_dim": D, "max_rel_pos": 3},
        "ra_kwargs": {"use_relative_positional_symbols": True}, "norm_first": False,
        "symbol_retriever_config": {"shared_symbol_retriever": False}}),
    "dat_possym_tied_share_attn": ("DualAttnTransformerLM", "float32", {
        **DAT, "symbol_retrieval": "positional_symbols",
        "symbol_retrieval_kwargs": {"symbol_dim": D, "max_length": 12},
        "symbol_retriever_config": {"shared_symbol_retriever": False,
                                    "weight_tie_symbol_library": True},
        "share_attn_params": True}),
    "dat_symattn_tied_disrca": ("DualAttnTransformerLM", "float32", {
        **DAT, "ra_type": "disrca", "symbol_retriever_config": {
            "shared_symbol_retriever": False, "weight_tie_symbol_library": True}}),
    "t_block_kwargs_weights": ("TransformerLM", "float32", {
        **T, "use_flash_attention": False, "block_kwargs": {"attn_kwargs": {"n_kv_heads": 2}}}),
    "t_rope_swiglu": ("TransformerLM", "float32", {
        **T, "pos_enc_type": "RoPE", "activation": "swiglu", "dff": None, "bias": False}),
    "dat_posemb_f64": ("DualAttnTransformerLM", "float64", {**DAT, "ra_kwargs": {"n_relations": 4}}),
}


def save_with_cpp(tmp_path, name):
    cls_name, dtype, config = CASES[name]
    config_file = tmp_path / "in.json"
    config_file.write_text(json.dumps(config))
    checkpoint, output = tmp_path / "checkpoint", tmp_path / "logits.safetensors"
    assert TOOL.exists(), f"{TOOL} is not built (run scripts/setup.sh)"
    done = subprocess.run([str(TOOL), cls_name, str(config_file), "1234", dtype, str(checkpoint),
                           str(output)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return CLASSES[cls_name], dtype, config, checkpoint, load_file(str(output))


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpp_checkpoint_loads_in_the_reference_with_the_same_logits(tmp_path, name):
    cls, dtype, config, checkpoint, cpp = save_with_cpp(tmp_path, name)
    model = cls.from_pretrained(str(checkpoint))
    weights = str(checkpoint / "model.safetensors")
    if dtype == "float64":  # the mixin builds a float32 model: load the file again in float64
        model.to(torch.float64)
    # from_pretrained loads non-strictly; every tensor must match by name and shape.
    missing, unexpected = load_model(model, weights, strict=True)
    assert not missing and not unexpected
    with torch.no_grad():
        logits, loss = model(cpp["idx"], cpp["targets"])
    scale = cpp["logits"].abs().max()
    tolerance = 1e-10 if dtype == "float64" else 1e-4
    assert logits.dtype == cpp["logits"].dtype
    assert (logits - cpp["logits"]).abs().max() <= tolerance * scale
    assert abs(float(loss) - float(cpp["loss"])) <= tolerance * float(scale)


@pytest.mark.parametrize("name", sorted(CASES))
def test_cpp_checkpoint_files_are_what_the_reference_writes(tmp_path, name):
    cls, dtype, config, checkpoint, _ = save_with_cpp(tmp_path, name)
    # config.json: the keywords, as the mixin records them for a caller passing exactly these.
    model = cls(**json.loads(json.dumps(config)))
    assert json.loads((checkpoint / "config.json").read_text()) == model._hub_mixin_config
    if dtype == "float64":
        model.to(torch.float64)
    load_model(model, str(checkpoint / "model.safetensors"), strict=True)
    model.save_pretrained(str(tmp_path / "reference"))
    ours, theirs = checkpoint / "model.safetensors", tmp_path / "reference" / "model.safetensors"
    assert (checkpoint / "config.json").read_bytes() == (tmp_path / "reference" / "config.json").read_bytes()
    # model.safetensors: the same tensors, stored once each under the same names, same aliases.
    with safe_open(str(ours), "pt") as a, safe_open(str(theirs), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert a.metadata() == b.metadata()
        for key in a.keys():
            x, y = a.get_tensor(key), b.get_tensor(key)
            assert x.dtype == y.dtype and torch.equal(x, y), key
    # The tied weights are one tensor after loading, as in the reference's own model.
    assert model.layers.token_embedder.weight is model.layers.final_out.weight
