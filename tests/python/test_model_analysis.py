"""dual_attention_cpp.model_analysis.datlm_utils against the reference's
dual_attention.model_analysis.datlm_utils, live, on the checkpoints of tests/fixtures/lm/: equal
within 1e-5 where the reference runs (pre-norm, SymbolicAttention), and equal to a manual
computation from the reference's own modules where it crashes (post-norm, positional retrievers)."""

import collections
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


# ---- seq2seq and vision models, against the reference's modules composed by hand ----

from dual_attention import seq2seq_models as ref_s2s  # noqa: E402
from dual_attention import vision_models as ref_vision  # noqa: E402

import dual_attention_cpp as dac  # noqa: E402
from dual_attention_cpp.model_analysis import seq2seq_utils  # noqa: E402

V, D, T = 23, 16, 9
SYMBOLIC = dict(symbol_retrieval="symbolic_attention",
                symbol_retrieval_kwargs=dict(d_model=D, n_heads=2, n_symbols=6))


def seq_configs(norm_first):
    block = dict(dff=32, dropout_rate=0.0, activation="relu", norm_first=norm_first)
    spec = dict(type="token", vocab_size=V)
    s2s = dict(input_spec=spec, output_spec=spec, d_model=D, out_dim=V, n_layers_enc=2, n_layers_dec=2,
               in_block_size=T, out_block_size=T)
    vision = dict(image_shape=(3, 8, 12), patch_size=(4, 2), num_classes=5, d_model=D, n_layers=2,
                  dropout_rate=0.0, dff=32, activation="gelu", norm_first=norm_first, pool="mean")
    return {
        "Seq2SeqTransformer": dict(s2s, encoder_kwargs=dict(block, n_heads=4),
                                   decoder_kwargs=dict(block, n_heads=4, n_heads_cross=2, causal=True)),
        "Seq2SeqDualAttnTransformer": dict(s2s, **SYMBOLIC,
                                           encoder_kwargs=dict(block, n_heads_sa=2, n_heads_ra=2),
                                           decoder_kwargs=dict(block, n_heads_sa=2, n_heads_ra=2,
                                                               n_heads_cross=4, causal=True)),
        "VisionTransformer": dict(vision, n_heads=4),
        "VisionDualAttnTransformer": dict(vision, n_heads_sa=1, n_heads_ra=3, **SYMBOLIC,
                                          ra_kwargs=dict(rel_activation="tanh")),
    }


def weights_of(attention, query, context, causal):
    """The reference Attention's explicit weights."""
    return attention(query=query, key=context, value=context, is_causal=causal, attn_mask=None,
                     need_weights=True, freqs_cos=None, freqs_sin=None)[1]


def symbol_weights_of(retriever, x):
    return ref_utils.symbolic_attn_forward_get_weights(retriever, x)[1]


def dat_layer_by_hand(block, retriever, x, out, prefix):
    """A reference DualAttnEncoderBlock with its retriever: the four results, then its output."""
    symbols = retriever(x)
    h = block.norm1(x) if block.norm_first else x
    _, sa, (ra, rels) = block.dual_attn(h, symbols, need_weights=True, is_causal=block.causal)
    for key, value in zip(KEYS, (symbol_weights_of(retriever, x), sa, ra, rels)):
        out[prefix + key].append(value)
    return block(x, symbols)


def decoder_by_hand(block, y, context, out, symbols=None):
    """A reference (DualAttn)DecoderBlock: its self- and cross-attention weights, then its output."""
    h = block.norm1(y) if block.norm_first else y
    if symbols is None:
        out["decoder_self_attn_scores"].append(weights_of(block.self_attn, h, h, block.causal))
        attended = block._compute_self_attn(h)
    else:
        _, sa, (ra, rels) = block.dual_attn(h, symbols, need_weights=True, is_causal=block.causal)
        for key, value in zip(KEYS[1:], (sa, ra, rels)):
            out["decoder_" + key].append(value)
        attended = block._compute_dual_attn(h, symbols)
    after_self = y + attended if block.norm_first else block.norm1(y + attended)
    q = block.norm2(after_self) if block.norm_first else after_self
    out["decoder_cross_attn_scores"].append(weights_of(block.cross_attn, q, context, False))
    return block(y, context) if symbols is None else block(y, context, symbols)


def seq2seq_by_hand(ref, x, y):
    layers = ref.layers
    source = layers.source_pos_embedder(layers.source_embedder(x))
    target = layers.target_pos_embedder(layers.target_embedder(y))
    out = collections.defaultdict(list)
    for block in layers.encoder_blocks:
        if "symbol_retriever" in layers:
            source = dat_layer_by_hand(block, layers.symbol_retriever, source, out, "encoder_")
        else:
            h = block.norm1(source) if block.norm_first else source
            out["encoder_attn_scores"].append(weights_of(block.self_attn, h, h, block.causal))
            source = block(source)
    for block in layers.decoder_blocks:
        if "symbol_retriever" in layers:
            out["decoder_symbol_attn_scores"].append(symbol_weights_of(layers.symbol_retriever, target))
            target = decoder_by_hand(block, target, source, out, layers.symbol_retriever(target))
        else:
            target = decoder_by_hand(block, target, source, out)
    return layers.final_out(target), out


def vision_by_hand(ref, images):
    x = ref.to_patch_embedding(images)
    x = torch.cat((ref.cls_token.expand(x.size(0), 1, -1), x), dim=1) + ref.pos_embedding[:, :x.size(1) + 1]
    out = collections.defaultdict(list)
    for block in ref.encoder_blocks:
        if hasattr(ref, "symbol_retriever"):
            x = dat_layer_by_hand(block, ref.symbol_retriever, x, out, "")
        else:
            h = block.norm1(x) if block.norm_first else x
            out["attn_scores"].append(weights_of(block.self_attn, h, h, block.causal))
            x = block(x)
    x = x[:, 0] if ref.pool == "cls" else x.mean(dim=1)
    return ref.final_out(x), out


FUNCTIONS = {
    "Seq2SeqTransformer": (ref_s2s.Seq2SeqTransformer, seq2seq_utils.seq2seq_forward_w_intermediate_results),
    "Seq2SeqDualAttnTransformer": (ref_s2s.Seq2SeqDualAttnTransformer,
                                   seq2seq_utils.seq2seq_dat_forward_w_intermediate_results),
    "VisionTransformer": (ref_vision.VisionTransformer, seq2seq_utils.vit_forward_w_intermediate_results),
    "VisionDualAttnTransformer": (ref_vision.VisionDualAttnTransformer,
                                  seq2seq_utils.vidat_forward_w_intermediate_results),
}


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre_norm", "post_norm"])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_seq2seq_and_vision_results_equal_the_reference_modules_by_hand(name, norm_first):
    ref_cls, function = FUNCTIONS[name]
    kwargs = seq_configs(norm_first)[name]
    torch.manual_seed(0)
    ref = ref_cls(**kwargs).eval()
    ours = getattr(dac, name)(**kwargs)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    if name.startswith("Vision"):
        args = (torch.randn(2, 3, 12, 8, generator=g),)
        by_hand = vision_by_hand
    else:
        args = (torch.randint(0, V, (2, T), generator=g), torch.randint(0, V, (2, T - 2), generator=g))
        by_hand = seq2seq_by_hand
    with torch.no_grad():
        expected_logits, expected = by_hand(ref, *args)
        logits, results = function(ours, *args)
        if name.startswith("Vision"):  # the hand composition is the reference's forward
            close(expected_logits, ref(*args), 1e-6, "by-hand logits vs the reference's forward")
        else:  # the reference's forward without targets gives the last position's logits
            close(expected_logits[:, -1:], ref(*args)[0], 1e-6, "by-hand logits vs the reference's forward")
    assert not ours.training
    close(logits, expected_logits, 1e-5, f"{name} logits")
    assert sorted(results) == sorted(expected), f"{name}: keys {sorted(results)}"
    for key, values in expected.items():
        assert len(results[key]) == len(values), f"{name} {key}: {len(results[key])} layers"
        for i, (a, b) in enumerate(zip(results[key], values)):
            close(a, b, 1e-5, f"{name} {key}[{i}]")


def test_seq2seq_and_vision_functions_name_the_model_they_expect():
    with pytest.raises(TypeError, match="expected a dual_attention_cpp Seq2SeqTransformer"):
        seq2seq_utils.seq2seq_forward_w_intermediate_results(torch.nn.Linear(2, 2), torch.zeros(1, 2),
                                                             torch.zeros(1, 2))
    vit = dac.VisionTransformer(**seq_configs(True)["VisionTransformer"])
    with pytest.raises(TypeError, match="expected a dual_attention_cpp VisionDualAttnTransformer"):
        seq2seq_utils.vidat_forward_w_intermediate_results(vit, torch.zeros(1, 3, 12, 8))
    with pytest.raises((RuntimeError, ValueError), match="patch"):
        seq2seq_utils.vit_forward_w_intermediate_results(vit, torch.zeros(1, 3, 11, 8))
