"""RelationalAttention's need_weights=False paths from Python: forcing one, reading which ran, and
each against the reference (outputs and gradients), plus the bad values of the two settings."""

import pytest
import torch
from dual_attention.relational_attention import RelationalAttention as Reference

import dual_attention_cpp as dac

KWARGS = dict(d_model=32, n_heads=4, n_kv_heads=2, total_n_heads=8, rel_activation="tanh")


def pair():
    torch.manual_seed(0)
    reference = Reference(**KWARGS)
    ours = dac.RelationalAttention(**KWARGS)
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.mark.parametrize("implementation", ["auto", "materialize", "blockwise"])
def test_each_path_matches_the_reference(implementation):
    reference, ours = pair()
    assert ours.implementation == "auto" and ours.block_size == 128
    ours.implementation = implementation
    ours.block_size = 16  # several blocks at this length
    x, symbols = torch.randn(2, 40, 32), torch.randn(2, 40, 32)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = reference(x_ref, symbols, is_causal=True)[0]
    out, scores, relations = ours(x_ours, symbols, is_causal=True, need_weights=False)
    assert scores is None and relations is None
    # Auto materialises a sequence this short on the CPU (faster there).
    assert ours.last_implementation == ("materialize" if implementation == "auto" else implementation)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    cotangent = torch.randn_like(out)
    expected.backward(cotangent)
    out.backward(cotangent)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    reference_grads = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_grads[name].grad, rtol=1e-5, atol=1e-6)


def test_auto_goes_blockwise_for_long_sequences_and_weights_always_materialise():
    _, ours = pair()
    x = torch.randn(1, 300, 32)
    with torch.no_grad():
        ours(x, x, is_causal=True, need_weights=False)
        assert ours.last_implementation == "blockwise"
        ours.implementation = "blockwise"
        _, scores, relations = ours(x, x, is_causal=True, need_weights=True)
    assert ours.last_implementation == "materialize"
    assert scores.shape == (1, 4, 300, 300) and relations.shape == (1, 300, 300, 4)


def test_bad_settings_name_the_value_and_what_was_expected():
    _, ours = pair()
    with pytest.raises(ValueError, match="implementation must be one of 'auto', 'materialize', "
                                         "'blockwise', 'sdpa', got 'fast'"):
        ours.implementation = "fast"
    with pytest.raises(ValueError, match="block_size must be positive, got 0"):
        ours.block_size = 0
    assert ours.implementation == "auto" and ours.block_size == 128
    with pytest.raises(TypeError):
        ours.implementation = 3
