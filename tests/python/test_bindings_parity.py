"""Every class of dual_attention_cpp computes what the reference computes.

For each configuration of the parity fixture generator (tests/fixtures/make_fixtures.py: 18 classes,
~100 configurations, float32 and float64), the reference module and ours are built with the same
keywords, the reference's state_dict is loaded into ours with strict=True, and the same forward call
must give equal outputs, and a random cotangent of output 0 equal gradients for the floating inputs
and every parameter (max difference <= 1e-5, float64 1e-10, relative to the largest magnitude: of
the tensor, or for parameter gradients of all the module's parameter gradients).
"""

import pytest
import torch

from bindings_support import (
    assert_close,
    copy_reference_into,
    flatten,
    make_fixtures,
    our_class,
    reference_class,
)

CASES = {make_fixtures.fixture_name(c, dtype): (c, dtype) for c, dtype, _ in make_fixtures.all_fixtures()}


def _run(module, inputs, case, signature):
    return make_fixtures.run_forward(module, inputs, case.args, signature)


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_and_gradients_match_the_reference(name):
    case, dtype = CASES[name]
    ref_cls, our_cls = reference_class(case.module), our_class(case.module)
    signature = make_fixtures.forward_signature(ref_cls)

    torch.manual_seed(make_fixtures.case_seed(case.name))
    ref = ref_cls(**case.kwargs)
    make_fixtures.redraw_trivial_parameters(ref)
    ref.eval().to(dtype)
    mine = our_cls(**case.kwargs).to(dtype)
    copy_reference_into(ref, mine)
    assert list(mine.state_dict()) == list(ref.state_dict())

    inputs = make_fixtures.draw_inputs(case, signature, dtype)
    grad_names = [
        k for k, t in inputs.items()
        if t.is_floating_point() and k not in make_fixtures.CONSTANT_INPUTS
        and not (case.self_attention and k in ("key", "value"))
    ]
    ref_inputs, my_inputs = dict(inputs), dict(inputs)
    make_fixtures.prepare_for_grad(case, ref_inputs, grad_names)
    make_fixtures.prepare_for_grad(case, my_inputs, grad_names)

    ref_out = _run(ref, ref_inputs, case, signature)
    my_out = _run(mine, my_inputs, case, signature)

    if case.module == "DualAttention" and not case.args.get("need_weights", False):
        # Documented difference: without need_weights ra_scores is an empty list (or None without
        # relational heads, as in the reference).
        assert my_out[2] == ([] if mine.use_rel_attn else None)
        ref_out = ref_out[:2]
        my_out = my_out[:2]
    assert type(my_out) is type(ref_out)
    ref_flat, my_flat = flatten(ref_out), flatten(my_out)
    assert list(my_flat) == list(ref_flat)
    for key in ref_flat:
        assert_close(my_flat[key], ref_flat[key], what=key)

    out0 = ref_out if isinstance(ref_out, torch.Tensor) else ref_out[0]
    my0 = my_out if isinstance(my_out, torch.Tensor) else my_out[0]
    if not out0.requires_grad:
        assert not my0.requires_grad
        return
    cotangent = torch.randn(out0.shape, dtype=dtype)
    out0.backward(cotangent)
    my0.backward(cotangent)
    for k in grad_names:
        if ref_inputs[k].grad is None:  # an input used only for its shape, or unused
            assert my_inputs[k].grad is None or not my_inputs[k].grad.any(), k
        else:
            assert_close(my_inputs[k].grad, ref_inputs[k].grad, what=f"grad of input {k}")
    my_params = dict(mine.named_parameters())
    ref_params = dict(ref.named_parameters())
    assert list(my_params) == list(ref_params)
    expected = {k: p.grad if p.grad is not None else torch.zeros_like(p) for k, p in ref_params.items()}
    scale = max((g.abs().max().item() for g in expected.values()), default=0.0)
    for k, p in my_params.items():
        got = p.grad if p.grad is not None else torch.zeros_like(p)
        assert_close(got, expected[k], what=f"grad of parameter {k}", scale=scale)
