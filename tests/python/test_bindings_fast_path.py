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


# Under torch.compile and torch.export, "auto" keeps the blockwise path (n = 300 here, past the
# CPU's materialising limit of 256) as its two operators, forward and backward, instead of tracing
# its blocks or the reference's len x len tensors; with dropout in training it materialises (a
# graph would freeze the blockwise path's seed).
N_TRACED = 300


def operators_of(graph):
    """{name: count} of the dual_attention operators that an FX graph calls."""
    names = [str(node.target) for node in graph.nodes if node.op == "call_function"]
    counts = {}
    for name in names:
        if name.startswith("dual_attention."):
            counts[name] = counts.get(name, 0) + 1
    return counts


def compile_capturing(fn):
    """torch.compile(fn, fullgraph=True) through AOTAutograd, keeping the forward and backward
    graphs it produces (run eagerly) in the returned list."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def keep(gm, _example_inputs):
        graphs.append(gm.graph)
        return make_boxed_func(gm)

    torch._dynamo.reset()
    backend = aot_autograd(fw_compiler=keep, bw_compiler=keep)
    return torch.compile(fn, fullgraph=True, backend=backend), graphs


def test_compiled_blockwise_is_one_operator_each_way_with_the_reference_gradients():
    reference, ours = pair()
    x, symbols = torch.randn(2, N_TRACED, 32), torch.randn(2, N_TRACED, 32)
    compiled, graphs = compile_capturing(
        lambda x, s: ours(x, s, is_causal=True, need_weights=False)[0])
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(x_ours, symbols)
    expected = reference(x_ref, symbols, is_causal=True)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    cotangent = torch.randn_like(out)
    expected.backward(cotangent)
    out.backward(cotangent)
    assert [operators_of(g) for g in graphs] == [
        {"dual_attention.relational_attention_blockwise_forward.default": 1},
        {"dual_attention.relational_attention_blockwise_backward.default": 1},
    ]
    # Gradients sum 2 x 300 rows in another order than the reference's: float32 tolerances 1e-4
    # relative and 1e-5 absolute (the outputs' are 1e-5 and 1e-6).
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    reference_grads = dict(reference.named_parameters())
    for name, parameter in ours.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_grads[name].grad, rtol=1e-4,
                                   atol=1e-5, msg=lambda m, name=name: f"grad of {name}: {m}")


def test_inductor_runs_the_blockwise_operators():  # torch.compile's default backend (~20 s)
    reference, ours = pair()
    x, symbols = torch.randn(2, N_TRACED, 32), torch.randn(2, N_TRACED, 32)
    torch._dynamo.reset()
    compiled = torch.compile(lambda x, s: ours(x, s, is_causal=True, need_weights=False)[0],
                             fullgraph=True)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = compiled(x_ours, symbols)
    expected = reference(x_ref, symbols, is_causal=True)[0]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    out.sum().backward()
    expected.sum().backward()
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_compiled_with_dropout_materialises():
    torch.manual_seed(0)
    ours = dac.RelationalAttention(**KWARGS, dropout=0.1).train()
    x, symbols = torch.randn(2, N_TRACED, 32), torch.randn(2, N_TRACED, 32)
    compiled, graphs = compile_capturing(
        lambda x, s: ours(x, s, is_causal=True, need_weights=False)[0])
    compiled(x.requires_grad_(), symbols).sum().backward()
    assert len(graphs) == 2 and [operators_of(g) for g in graphs] == [{}, {}], (
        "with dropout, a compiled forward must not call the blockwise operators, whose seed the "
        "graph would freeze")


def test_exported_blockwise_is_one_operator_and_matches_the_reference():
    reference, ours = pair()
    x, symbols = torch.randn(2, N_TRACED, 32), torch.randn(2, N_TRACED, 32)
    exported = torch.export.export(
        ours, (x, symbols), kwargs=dict(is_causal=True, need_weights=False)).run_decompositions()
    assert operators_of(exported.graph) == {
        "dual_attention.relational_attention_blockwise_forward.default": 1}
    x2, symbols2 = torch.randn(2, N_TRACED, 32), torch.randn(2, N_TRACED, 32)  # inputs, not constants
    with torch.no_grad():
        got = exported.module()(x2, symbols2, is_causal=True, need_weights=False)[0]
        expected = reference(x2, symbols2, is_causal=True)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
