"""dual_attention_cpp has the reference's interface: module layout, class names, constructor and
forward signatures (names, order, defaults), functions, docstrings and current type stubs."""

import importlib
import inspect
import pydoc
import subprocess
import sys

import pytest
import torch

import dual_attention_cpp as dac
from bindings_support import REFERENCE_MODULES, ROOT, assert_close, make_fixtures

CLASSES = sorted(make_fixtures.CLASSES)


def _params(signature):
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


@pytest.mark.parametrize("module", REFERENCE_MODULES)
def test_every_reference_module_has_a_counterpart(module):
    ours = importlib.import_module(f"dual_attention_cpp.{module}")
    reference = importlib.import_module(f"dual_attention.{module}")
    for name in ours.__all__:
        assert hasattr(ours, name)
    public = {n for n, v in vars(reference).items()
              if not n.startswith("_") and getattr(v, "__module__", None) == reference.__name__}
    public -= {"reshape_for_broadcast"}  # a private helper of apply_rotary_emb in the reference
    assert public <= set(ours.__all__) | {"Activation"}


@pytest.mark.parametrize("name", CLASSES)
def test_class_lives_where_the_reference_has_it_and_at_the_top_level(name):
    reference = make_fixtures.CLASSES[name]
    home = reference.__module__.split(".", 1)[1]
    ours = getattr(importlib.import_module(f"dual_attention_cpp.{home}"), name)
    assert ours is getattr(dac, name) and name in dac.__all__
    assert issubclass(ours, torch.nn.Module)


@pytest.mark.parametrize("name", CLASSES)
def test_constructor_signature_is_the_references(name):
    reference = make_fixtures.CLASSES[name]
    assert _params(inspect.signature(getattr(dac, name))) == _params(inspect.signature(reference))


@pytest.mark.parametrize("name", CLASSES)
def test_forward_signature_is_the_references(name):
    ours = _params(inspect.signature(getattr(dac, name).forward))
    reference = _params(inspect.signature(make_fixtures.CLASSES[name].forward))
    if name == "RelationalAttention":  # documented extension: a trailing need_weights=True
        assert ours[-1][0] == "need_weights" and ours[-1][2] is True
        ours = ours[:-1]
    assert ours == reference


@pytest.mark.parametrize("name", CLASSES)
def test_positional_and_keyword_construction_agree(name):
    reference = make_fixtures.CLASSES[name]
    sig = inspect.signature(reference)
    required = [p.name for p in sig.parameters.values() if p.default is inspect.Parameter.empty]
    values = {c.module: c.kwargs for c in make_fixtures.CASES}[name]
    by_keyword = getattr(dac, name)(**values)
    by_position = getattr(dac, name)(*[values[k] for k in required],
                                     **{k: v for k, v in values.items() if k not in required})
    assert by_keyword.cpp_module._kwargs() == by_position.cpp_module._kwargs()
    for key, value in values.items():
        assert by_keyword.cpp_module._kwargs()[key] == (list(value) if isinstance(value, tuple) else value)


def test_functions_match_the_reference():
    from dual_attention import attention_utils as ref_utils
    from dual_attention import model_utils as ref_model_utils
    from dual_attention import transformer_blocks as ref_blocks
    for name in ("repeat_kv", "precompute_freqs_cis", "apply_rotary_emb", "compute_causal_mask",
                 "compute_diag_mask"):
        ours = getattr(dac.attention_utils, name)
        assert _params(inspect.signature(ours)) == _params(inspect.signature(getattr(ref_utils, name)))
    assert _params(inspect.signature(dac.model_utils.get_activation_function)) == _params(
        inspect.signature(ref_model_utils.get_activation_function))
    assert _params(inspect.signature(dac.transformer_blocks.create_norm)) == _params(
        inspect.signature(ref_blocks.create_norm))

    x = torch.randn(2, 6, 3, 8)
    assert torch.equal(dac.attention_utils.repeat_kv(x, 2), ref_utils.repeat_kv(x, 2))
    ours, ref = dac.attention_utils.precompute_freqs_cis(8, 6), ref_utils.precompute_freqs_cis(8, 6)
    for a, b in zip(ours, ref):
        assert_close(a, b)
    q, k = torch.randn(2, 6, 4, 8), torch.randn(2, 6, 2, 8)
    for a, b in zip(dac.attention_utils.apply_rotary_emb(q, k, *ref), ref_utils.apply_rotary_emb(q, k, *ref)):
        assert_close(a, b)
    assert torch.equal(dac.attention_utils.compute_causal_mask(5), ref_utils.compute_causal_mask(5))
    assert torch.equal(dac.attention_utils.compute_diag_mask(5), ref_utils.compute_diag_mask(5))
    for name in dac._C.activation_names():
        act = dac.model_utils.get_activation_function(name)
        assert isinstance(act, torch.nn.Module) and act.name == name
        assert_close(act(x), ref_model_utils.get_activation_function(name)(x))
    for delta, include_self in ((2, True), (2, False), (0, True)):
        ref_cls = make_fixtures.CLASSES["RelationalSymbolicAttention"]
        assert torch.equal(dac.RelationalSymbolicAttention.compute_neighbor_mask(7, delta, include_self),
                           ref_cls.compute_neighbor_mask(7, delta, include_self))
        assert torch.equal(
            dac.RelationalSymbolicAttention.compute_causal_neighbor_mask(7, delta, include_self),
            ref_cls.compute_causal_neighbor_mask(7, delta, include_self))


@pytest.mark.parametrize("name", CLASSES)
def test_help_documents_every_keyword(name):
    cls = getattr(dac, name)
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    assert "Parameters" in cls.__doc__
    for keyword in inspect.signature(cls).parameters:
        assert f"{keyword} :" in cls.__doc__ or f", {keyword} :" in cls.__doc__, keyword
    assert "forward" in text and cls.forward.__doc__


def test_type_stubs_are_current_and_shipped():
    result = subprocess.run([sys.executable, str(ROOT / "python" / "gen_stubs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    package_dir = ROOT / "python" / "dual_attention_cpp"
    assert (package_dir / "py.typed").exists()
    for module in dac._submodules:
        assert (package_dir / f"{module}.pyi").exists()
