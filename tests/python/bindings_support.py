"""Shared by the tests of the Python bindings (tests/python/test_bindings_*.py): the reference
package (with its 0.0.7 import bug patched, by loading the fixture generator), our package, and an
explicit comparison."""

import importlib.util
import pkgutil
from pathlib import Path

import torch

import dual_attention_cpp as ours  # noqa: F401  (fails here, loudly, when the package is not built)

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "make_fixtures", ROOT / "tests" / "fixtures" / "make_fixtures.py")
make_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_fixtures)  # also patches dual_attention.relational_attention

import dual_attention  # noqa: E402  (the reference)
import dual_attention.attention_utils  # noqa: E402,F401
import dual_attention.model_utils  # noqa: E402,F401

# GPT-2's pre-tokenizer pattern as tiktoken's "gpt2" encoding has it (given to tiktoken.Encoding as
# the oracle's pat_str).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# The tolerance of every comparison with the reference: the largest difference relative to the
# largest magnitude of the reference tensor.
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}

# The modules of the reference (its subpackage model_analysis, visualisation apps, is not mirrored).
REFERENCE_MODULES = tuple(
    m.name for m in pkgutil.iter_modules(dual_attention.__path__) if not m.ispkg)


def reference_class(name):
    return make_fixtures.CLASSES[name]


def our_class(name):
    return getattr(ours, name)


def assert_close(actual, expected, rtol=None, what="", scale=None):
    """max |actual - expected| <= rtol * max |expected| (rtol by dtype unless given). `scale`
    replaces max |expected| where a tensor belongs to a larger whole (a parameter's gradient is
    measured against the largest gradient of the module: some are zero up to rounding)."""
    assert isinstance(actual, torch.Tensor), f"{what}: got {type(actual).__name__}, not a tensor"
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    if rtol is None:
        rtol = RTOL.get(expected.dtype, 0.0)
    if expected.numel() == 0:
        return
    if not expected.is_floating_point():
        assert torch.equal(actual, expected), f"{what}: values differ"
        return
    a, e = actual.detach(), expected.detach()
    finite = torch.isfinite(e)
    assert torch.equal(finite, torch.isfinite(a)), f"{what}: non-finite entries differ"
    if scale is None:
        scale = e[finite].abs().max().item() if finite.any() else 0.0
    err = (a[finite] - e[finite]).abs().max().item() if finite.any() else 0.0
    assert err <= rtol * max(scale, 1e-30), (
        f"{what}: max abs difference {err:.3e} > {rtol:g} * max |expected| {scale:.3e}")


def flatten(value, prefix="output"):
    """{path: tensor} of a (nested) tuple/list output; None elements are left out."""
    out = {}
    if isinstance(value, torch.Tensor):
        out[prefix] = value
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}.{i}"))
    elif value is not None:
        raise TypeError(f"{prefix}: unexpected {type(value).__name__}")
    return out


def copy_reference_into(ref_module, our_module):
    """Loads the reference's state_dict into ours (strict) and puts both in the same mode."""
    our_module.load_state_dict(ref_module.state_dict(), strict=True)
    our_module.train(ref_module.training)
