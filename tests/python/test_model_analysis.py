"""dual_attention_cpp.model_analysis.datlm_utils against the reference's
dual_attention.model_analysis.datlm_utils, live, on the checkpoints of tests/fixtures/lm/: equal
within 1e-5 where the reference runs (pre-norm, SymbolicAttention), and equal to a manual
computation from the reference's own modules where it crashes (post-norm, positional retrievers)."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dual_attention.model_utils as ref_model_utils
import dual_attention.relational_attention as ref_relational_attention
from dual_attention.hf import DualAttnTransformerLM_HFHub
from dual_attention.model_analysis import datlm_utils as ref_utils

from dual_attention_cpp.language_models import DualAttnTransformerLM, TransformerLM
from dual_attention_cpp.model_analysis import datlm_utils

# dual_attention 0.0.7 bug: 'disrca' needs model_utils in relational_attention's namespace.
ref_relational_attention.model_utils = ref_model_utils

LM = Path(__file__).resolve().parents[1] / "fixtures" / "lm"
PRE_NORM = ["dat_posemb_symattn", "dat_rope_gqa_swiglu_rmsnorm", "dat_symattn_unshared_tied_symrels",
            "dat_share_attn_params", "dat_disrca_ra_heavy", "dat_bf16"]
KEYS = ["symbol_attn_scores", "sa_attn_scores", "ra_attn_scores", "ra_rels"]


def close(ours, ref, tol, what):
    assert ours is not None, f"{what}: None"
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(ref.shape)}"
    scale = max(1.0, ref.abs().max().item())
    err = (ours.double() - ref.double()).abs().max().item()
    assert err <= tol * scale, f"{what}: max abs error {err}"


def load_pair(case):
    folder = str(LM / case)
    ref = DualAttnTransformerLM_HFHub.from_pretrained(folder)
    ours = DualAttnTransformerLM.from_pretrained(folder, dtype=torch.float32 if case == "dat_bf16" else None)
    idx = load_file(str(LM / case / "expected.safetensors"))["idx"]
    if case.endswith("_f64"):
        ref.to(torch.float64)
        ref.load_state_dict(ours.state_dict())
    return ref, ours, idx


@pytest.mark.parametrize("case", PRE_NORM)
def test_equals_the_reference_within_1e5(case):
    ref, ours, idx = load_pair(case)
    with torch.no_grad():
        ref_logits, ref_results = ref_utils.datlm_forward_w_intermediate_results(ref, idx)
        logits, results = datlm_utils.datlm_forward_w_intermediate_results(ours, idx)
    close(logits, ref_logits, 1e-5, "logits")
    assert sorted(results) == sorted(KEYS)
    for key in KEYS:
        assert len(results[key]) == len(ref_results[key])
        for i, (a, b) in enumerate(zip(results[key], ref_results[key])):
            close(a, b, 1e-5, f"{case} {key}[{i}]")
    assert not ours.training


def reference_by_hand(ref, idx):
    """The reference's own modules, composed: the dual attention's weights on each layer's input
    (normed first when pre-norm), each layer's output from the reference's block forward."""
    n = idx.size(1)
    x = ref.layers.token_embedder(idx)
    cos = sin = None
    if ref.pos_enc_type == "pos_emb":
        x = x + ref.layers.positional_embedder(torch.arange(n))
    else:
        cos, sin = ref.freqs_cos[:n], ref.freqs_sin[:n]
    out = {key: [] for key in KEYS}
    for retriever, block in zip(ref.layers.symbol_retrievers, ref.layers.blocks):
        symbols = retriever(x)
        weights = (ref_utils.symbolic_attn_forward_get_weights(retriever, x)[1]
                   if hasattr(retriever, "q_proj") else None)
        h = block.norm1(x) if block.norm_first else x
        _, sa, (ra, rels) = block.dual_attn(h, symbols, need_weights=True, is_causal=True,
                                            freqs_cos=cos, freqs_sin=sin)
        for key, value in zip(KEYS, (weights, sa, ra, rels)):
            out[key].append(value)
        x = block(x, symbols, freqs_cos=cos, freqs_sin=sin)
    return ref.layers.final_out(ref.layers.norm(x)), out


@pytest.mark.parametrize("case", ["dat_symattn_unshared_postnorm", "dat_posrel_postnorm_relu",
                                  "dat_possym_unshared_tied", "dat_posemb_symattn_f64"])
def test_post_norm_and_positional_retrievers_equal_a_manual_computation(case):
    ref, ours, idx = load_pair(case)
    ref.eval()
    tol = 1e-12 if case.endswith("_f64") else 1e-5
    with torch.no_grad():
        with pytest.raises((ValueError, AttributeError)):  # the reference's own function crashes
            ref_utils.datlm_forward_w_intermediate_results(ref, idx)
        expected_logits, expected = reference_by_hand(ref, idx)
        logits, results = datlm_utils.datlm_forward_w_intermediate_results(ours, idx)
    close(logits, expected_logits, tol, "logits")
    for key in KEYS:
        for i, (a, b) in enumerate(zip(results[key], expected[key])):
            if b is None:
                assert a is None, f"{case} {key}[{i}]: expected None (positional symbols)"
            else:
                close(a, b, tol, f"{case} {key}[{i}]")


def test_block_and_symbol_helpers_equal_the_reference():
    ref, ours, idx = load_pair("dat_posemb_symattn")
    with torch.no_grad():
        x_ref = ref.layers.token_embedder(idx) + ref.layers.positional_embedder(torch.arange(idx.size(1)))
        x = ours.layers.token_embedder(idx) + ours.layers.positional_embedder(torch.arange(idx.size(1)))
        s_ref, w_ref = ref_utils.symbolic_attn_forward_get_weights(ref.layers.symbol_retrievers[0], x_ref)
        s, w = datlm_utils.symbolic_attn_forward_get_weights(ours.layers.symbol_retrievers[0], x)
        close(s, s_ref, 1e-5, "symbols")
        close(w, w_ref, 1e-5, "symbol weights")
        ref_out = ref_utils.block_forward_get_weights(ref.layers.blocks[0], x_ref, s_ref)
        out = datlm_utils.block_forward_get_weights(ours.layers.blocks[0], x, s)
        for a, b, name in zip(out, ref_out, ["x", "sa", "ra", "rels"]):
            close(a, b, 1e-5, name)


def test_transformer_lm_scores_and_logits():
    model = TransformerLM.from_pretrained(str(LM / "t_rope_swiglu_gqa_weights"))
    idx = load_file(str(LM / "t_rope_swiglu_gqa_weights" / "expected.safetensors"))["idx"]
    with torch.no_grad():
        logits, results = datlm_utils.transformerlm_forward_w_intermediate_results(model, idx)
        close(logits, model(idx)[0], 1e-5, "logits")
    assert list(results) == ["attn_scores"] and len(results["attn_scores"]) == 2
    scores = results["attn_scores"][0]
    assert scores.shape == (2, 4, idx.size(1), idx.size(1))
    close(scores.sum(-1), torch.ones(2, 4, idx.size(1)), 1e-5, "rows sum to one")


def test_gradients_flow():
    _, ours, idx = load_pair("dat_posemb_symattn")
    logits, results = datlm_utils.datlm_forward_w_intermediate_results(ours, idx)
    results["ra_rels"][1].sum().backward()
    grad = ours.layers.blocks[1].dual_attn.relational_attention.wq_rel.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_errors_name_the_argument():
    _, ours, _ = load_pair("dat_posemb_symattn")
    with pytest.raises(TypeError, match="expected a dual_attention_cpp DualAttnTransformerLM"):
        datlm_utils.datlm_forward_w_intermediate_results(torch.nn.Linear(2, 2), torch.zeros(1, 2))
    with pytest.raises((RuntimeError, ValueError), match=r"token ids must be in \[0, 48\)"):
        datlm_utils.datlm_forward_w_intermediate_results(ours, torch.full((1, 3), 99))
    with pytest.raises((RuntimeError, ValueError), match="exceeds max_block_size 16"):
        datlm_utils.datlm_forward_w_intermediate_results(ours, torch.zeros(1, 17, dtype=torch.long))
