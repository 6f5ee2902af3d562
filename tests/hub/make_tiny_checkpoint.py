"""Writes tests/fixtures/hub/tiny-dat-lm/: a small DualAttnTransformerLM checkpoint exactly as the
reference publishes its models on the Hub (PyTorchModelHubMixin.save_pretrained: config.json with the
constructor keywords + model.safetensors with shared tensors saved once).

    .venv/bin/python tests/hub/make_tiny_checkpoint.py
"""

import os

import torch
from dual_attention.hf import DualAttnTransformerLM_HFHub

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "hub", "tiny-dat-lm")

torch.manual_seed(0)
model = DualAttnTransformerLM_HFHub(
    vocab_size=64,
    d_model=32,
    n_layers=2,
    n_heads_sa=2,
    n_heads_ra=2,
    symbol_retrieval_kwargs=dict(d_model=32, n_heads=2, n_symbols=16),
    dff=64,
    dropout_rate=0.0,
    activation="swiglu",
    norm_first=True,
    max_block_size=16,
    ra_kwargs=dict(n_relations=4, symmetric_rels=False),
    symbol_retrieval="symbolic_attention",
    pos_enc_type="RoPE",
)
model.save_pretrained(OUT)
print("wrote", sorted(os.listdir(OUT)))
