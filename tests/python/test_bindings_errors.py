"""Bad input to the C++ layer arrives in Python as the right exception, carrying the C++ message.

Classification (docs/python.md): an error while building a module from its keywords is ValueError
(bad arguments; the reference raises ValueError or AssertionError there); a wrong keyword name or a
missing argument is TypeError, as Python reports it for the reference; an error raised by a forward
or another call on a built module is RuntimeError (what torch raises for bad tensors); a value that
cannot be a keyword at all (an object) is TypeError. Nothing crashes the interpreter: every case
runs in this process."""

import re

import pytest
import torch

import dual_attention_cpp as dac
from dual_attention_cpp import attention_utils, model_utils, transformer_blocks

X = torch.randn(2, 5, 16)
S = torch.randn(2, 5, 16)

CONSTRUCTION = [
    # (call, exception, message)
    (lambda: dac.Attention(16, 3, 0.0), ValueError, r"Attention: d_model \(16\) must be divisible"),
    (lambda: dac.Attention(16, 4, 0.0, n_kv_heads=3), ValueError, r"n_heads \(4\).*n_kv_heads \(3\)"),
    (lambda: dac.Attention(16, 0, 0.0), ValueError, "n_heads must be positive, got 0"),
    (lambda: dac.Attention(16, 4, 1.5), ValueError, r"dropout must be in \[0, 1\], got 1.5"),
    (lambda: dac.Attention(16, 4, 0.0, key_dim=0), ValueError, "key_dim must be positive"),
    (lambda: dac.Attention(16, "4", 0.0), ValueError, "keyword argument 'n_heads' got \"4\" \\(str\\), expected an int"),
    (lambda: dac.Attention(16, 4, 0.0, add_bias_kv=2), ValueError,
     "'add_bias_kv' got 2 \\(int\\), expected a bool \\(true, false, 0 or 1\\)"),
    (lambda: dac.Attention(16, 4), TypeError, "missing a required argument: 'dropout'"),
    (lambda: dac.Attention(16, 4, 0.0, n_kvheads=2), TypeError, "unexpected keyword argument 'n_kvheads'"),
    (lambda: dac.Attention(16, 4, 0.0, 8, 4, False, False, 4, 5), TypeError, "too many positional arguments"),
    (lambda: dac.Attention(16, 4, 0.0, key_dim=object()), TypeError,
     "Attention: keyword argument 'key_dim': expected None, bool, int, .* got object"),
    (lambda: dac.Attention(2**70, 4, 0.0), ValueError, "out of range"),
    (lambda: dac.RelationalAttention(16, 4, n_relations=3), ValueError,
     r"rel_proj_dim \(5\) \* n_relations \(3\) must equal head_dim \* n_heads"),
    (lambda: dac.RelationalAttention(16, 4, rel_activation="swish"), ValueError,
     "rel_activation 'swish' is not a known activation; expected one of 'relu'"),
    (lambda: dac.RelationalAttention(16, 4, n_relations=0), ValueError, "n_relations must be positive"),
    (lambda: dac.RelationalCrossAttention(16, 4, 0.0, activation="nope"), ValueError, "activation 'nope'"),
    (lambda: dac.DisentangledRelationalCrossAttention(16, 4, 0.0, n_kv_heads=3), ValueError, "n_kv_heads"),
    (lambda: dac.DualAttention(16, 0, 0, 0.0), ValueError, "at least one of n_heads_sa and n_heads_ra"),
    (lambda: dac.DualAttention(16, 2, 1, 0.0, share_attn_params=True), ValueError,
     r"share_attn_params needs n_heads_sa == n_heads_ra, got 2 and 1"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, ra_type="xyz"), ValueError, "ra_type 'xyz' is not valid"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, ra_type="rca", share_attn_params=True), ValueError,
     "share_attn_params needs a relational module with wq_attn"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, sa_kwargs=dict(foo=1)), ValueError,
     "unexpected keyword argument 'foo'; valid keywords are: d_model"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, ra_kwargs=dict(n_heads=3)), ValueError,
     "ra_kwargs must not contain 'n_heads'"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, ra_kwargs=[1]), ValueError, "ra_kwargs' got \\[1\\]"),
    (lambda: dac.DualAttention(16, 2, 2, 0.0, ra_kwargs={1: 2}), TypeError, "dict keys must be str"),
    (lambda: dac.SymbolicAttention(16, 3, 8), ValueError, r"d_model \(16\) must be divisible by n_heads \(3\)"),
    (lambda: dac.SymbolicAttention(16, 4, 0), ValueError, "n_symbols must be positive"),
    (lambda: dac.PositionalSymbolRetriever(16, 0), ValueError, "max_length must be positive"),
    (lambda: dac.PositionRelativeSymbolRetriever(16, -1), ValueError, "max_rel_pos must be >= 0"),
    (lambda: dac.RelationalSymbolicAttention(16, 2, 2, 4, 0, include_self=False), ValueError,
     "the neighbourhood is empty"),
    (lambda: dac.RelationalSymbolicAttention(16, 3, 2, 4, 1), ValueError, "divisible by rel_n_heads"),
    (lambda: dac.SinusoidalPositionalEncoding(15), ValueError, "d_model must be even"),
    (lambda: dac.LearnedPositionalEmbeddings(16, max_len=0), ValueError, "max_len must be positive"),
    (lambda: dac.RelativePositionalEncoding(0, 3), ValueError, "dim must be positive"),
    (lambda: dac.FeedForwardBlock(16, activation="swishy"), ValueError, "'swishy'.*or 'swiglu'"),
    (lambda: dac.FeedForwardBlock(16, dff=0), ValueError, "dff must be positive"),
    (lambda: dac.RMSNorm(16, eps=-1.0), ValueError, "eps must be >= 0"),
    (lambda: dac.EncoderBlock(16, 4, 32, 0.0, "relu", True, norm_type="batchnorm"), ValueError,
     "norm_type 'batchnorm' is not a known norm; expected one of"),
    (lambda: dac.EncoderBlock(16, 4, 32, 0.0, "relu", True, attn_kwargs=dict(n_heads=2)), ValueError,
     "must not contain 'n_heads'"),
    (lambda: dac.EncoderBlock(16, 4, 32, 2.0, "relu", True), ValueError, "dropout_rate must be in"),
    (lambda: dac.DecoderBlock(16, 5, 4, 32, 0.0, "relu", True), ValueError, "divisible by n_heads"),
    (lambda: dac.DualAttnEncoderBlock(16, 2, 2, 32, "relu", -0.1, True), ValueError, "dropout_rate"),
    (lambda: dac.DualAttnDecoderBlock(16, 2, 2, 3, 32, "relu", 0.0, True), ValueError, "Attention"),
    (lambda: transformer_blocks.create_norm(16, "group"), ValueError, "norm_type 'group'"),
    (lambda: model_utils.get_activation_function("swish"), ValueError,
     "name 'swish' is not a known activation; expected one of 'relu', 'sigmoid'"),
]


def case_id(case):
    """A readable test id: what is called, the exception and the start of the expected message."""
    call, exception, message = case
    modules = {"dac", "attention_utils", "model_utils", "transformer_blocks"}
    callee = next(name for name in call.__code__.co_names if name not in modules)
    words = re.sub(r"\\.|[^A-Za-z0-9_]+", " ", message).split()
    return f"{callee}-{exception.__name__}-" + "_".join(words)[:40]


@pytest.mark.parametrize("call,exception,message", CONSTRUCTION, ids=map(case_id, CONSTRUCTION))
def test_bad_constructor_arguments(call, exception, message):
    with pytest.raises(exception, match=message) as info:
        call()
    assert "Exception raised from" not in str(info.value)  # the C++ backtrace is left out


attn = dac.Attention(16, 4, 0.0)
ra = dac.RelationalAttention(16, 4)
ra_rel = dac.RelationalAttention(16, 4, use_relative_positional_symbols=True)
da = dac.DualAttention(16, 2, 2, 0.0)
freqs = attention_utils.precompute_freqs_cis(4, 5)

FORWARD = [
    (lambda: attn(torch.randn(2, 5, 7), X, X), RuntimeError, r"Attention: query must have last dim 16, got shape \[2, 5, 7\]"),
    (lambda: attn(torch.randn(5, 16), X, X), RuntimeError, "query must be \\[batch, len, 16\\]"),
    (lambda: attn(X, torch.randn(3, 5, 16), X), RuntimeError, "same batch size"),
    (lambda: attn(X, X, torch.randn(2, 4, 16)), RuntimeError, "key and value must have the same length"),
    (lambda: attn(X, X, X, attn_mask=torch.ones(5, 5, dtype=torch.bool), is_causal=True), RuntimeError,
     "attn_mask"),
    (lambda: attn(X, X, X, attn_mask=torch.ones(5, 5)), RuntimeError, "bool"),
    (lambda: attn(X, X, X, attn_mask=torch.ones(4, 5, dtype=torch.bool)), RuntimeError, "attn_mask"),
    (lambda: attn(X, X, X, freqs_cos=freqs[0]), RuntimeError, "freqs_cos and freqs_sin"),
    (lambda: attn(X, X, X, *attention_utils.precompute_freqs_cis(4, 6)), RuntimeError, "freqs"),
    (lambda: attn(X, X, "x"), TypeError,
     r"Attention.forward\(\) got incompatible arguments \(Tensor\[2, 5, 16\] torch.float32, .*str"),
    (lambda: ra(X, None), RuntimeError, "RelationalAttention: symbols are required"),
    (lambda: ra(X, torch.randn(2, 4, 16)), RuntimeError, r"symbols must be \[2, 5, 16\] like x"),
    (lambda: ra_rel(X, S), RuntimeError, r"symbols must be \[5, 5, 16\]"),
    (lambda: da(torch.randn(2, 5, 8), S), RuntimeError, "last dim 16"),
    (lambda: dac.PositionalSymbolRetriever(16, 4)(X), RuntimeError, "sequence length 5 exceeds max_length 4"),
    (lambda: dac.SinusoidalPositionalEncoding(16, max_len=4)(X), RuntimeError, "exceeds max_len 4"),
    (lambda: dac.RelativePositionalEncoding(16, 2)(-1), RuntimeError, "length_q must be >= 0"),
    (lambda: dac.FeedForwardBlock(16)(torch.randn(2, 8)), RuntimeError, r"x must be \[\.\.\., 16\]"),
    (lambda: dac.RMSNorm(16)(torch.randn(3)), RuntimeError, r"RMSNorm: x must be \[\.\.\., 16\]"),
    (lambda: dac.SymbolicAttention(16, 4, 8)(torch.randn(2, 5, 8)), RuntimeError, "SymbolicAttention"),
    (lambda: dac.DecoderBlock(16, 4, 4, 32, 0.0, "relu", True)(X, torch.randn(3, 5, 16)), RuntimeError,
     "same batch size"),
    (lambda: dac.DualAttnDecoderBlock(16, 2, 2, 2, 32, "relu", 0.0, True)(X, torch.randn(2, 5, 8), S),
     RuntimeError, r"context must be \[batch, len, 16\]"),
    (lambda: attention_utils.repeat_kv(torch.randn(2, 3, 4), 2), RuntimeError, "repeat_kv: x must be"),
    (lambda: attention_utils.repeat_kv(torch.randn(2, 3, 4, 5), 0), RuntimeError, "n_rep must be >= 1"),
    (lambda: attention_utils.precompute_freqs_cis(3, 4), RuntimeError, "dim must be a positive even"),
    (lambda: attention_utils.apply_rotary_emb(torch.randn(2, 5, 4, 4), torch.randn(2, 5, 4, 4), *attention_utils.precompute_freqs_cis(4, 6)),
     RuntimeError, "apply_rotary_emb"),
    (lambda: dac.RelationalSymbolicAttention.compute_neighbor_mask(-1, 2), RuntimeError, "n must be >= 0"),
]


@pytest.mark.parametrize("call,exception,message", FORWARD, ids=map(case_id, FORWARD))
def test_bad_forward_arguments(call, exception, message):
    with pytest.raises(exception, match=message):
        call()


def test_a_failed_forward_leaves_the_module_usable():
    with pytest.raises(RuntimeError):
        attn(torch.randn(2, 5, 7), X, X)
    out, _ = attn(X, X, X)
    assert out.shape == X.shape
