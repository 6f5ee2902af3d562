"""Forward calls that return intermediate results, for visualization (the reference's
``dual_attention.model_analysis.datlm_utils``, computed by the C++ library's model_analysis.h).

Unlike the reference's, these handle post-norm models (the reference's post-norm branch crashes) and
every symbol retriever (the reference assumes ``SymbolicAttention``); where a retriever has no
attention weights (positional symbols), its entry is None. The attention runs on the materialising
path (``need_weights=True``): memory grows as n^2 per head and relation.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .. import _C
from .._module import CppModule

__all__ = [
    "symbolic_attn_forward_get_weights",
    "block_forward_get_weights",
    "datlm_forward_w_intermediate_results",
    "transformerlm_forward_w_intermediate_results",
]


def _run(module, expected: str, fn, *inputs):
    """``fn(twin, *inputs)`` on the C++ module that computes with `module`'s tensors (its twin),
    after ``module.eval()`` as the reference does; differentiable (see CppModule._call_twin)."""
    if not isinstance(module, CppModule) or type(module).__name__ != expected:
        raise TypeError(f"expected a dual_attention_cpp {expected}, got {type(module).__name__}")
    module.eval()
    return module._call_twin("model analysis", fn, *inputs)


def symbolic_attn_forward_get_weights(mod, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The symbols a symbol retriever gives for ``x`` ``[b, n, d_model]`` and its attention weights
    over the symbol library, ``[b, n_heads, n, n_symbols]`` (None for the positional retrievers,
    which choose symbols by position). Switches ``mod`` to eval mode, as the reference does."""
    if not isinstance(mod, CppModule):
        raise TypeError(f"expected a dual_attention_cpp symbol retriever, got {type(mod).__name__}")
    return _run(mod, type(mod).__name__, _C.symbolic_attn_forward_get_weights, x)


def block_forward_get_weights(mod, x: torch.Tensor, symbols: torch.Tensor,
                              freqs_cos: Optional[torch.Tensor] = None,
                              freqs_sin: Optional[torch.Tensor] = None):
    """A ``DualAttnEncoderBlock``'s forward (pre- or post-norm) that also returns its attention
    weights: ``(x, sa_attn_scores [b, h_sa, n, n] or None, ra_attn_scores [b, h_ra, n, n],
    ra_rels [b, n, n, n_relations])``. Switches ``mod`` to eval mode, as the reference does."""
    return _run(mod, "DualAttnEncoderBlock", _C.block_forward_get_weights, x, symbols, freqs_cos,
                freqs_sin)


def datlm_forward_w_intermediate_results(model, x: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, List[Optional[torch.Tensor]]]]:
    """The forward of a ``DualAttnTransformerLM`` on token ids ``x`` ``[b, n]`` that also returns,
    per layer, the intermediate results: ``(logits [b, n, vocab_size], dict)`` with the keys

    - ``symbol_attn_scores``: ``[b, heads, n, n_symbols]`` (None for positional retrievers);
    - ``sa_attn_scores``: ``[b, n_heads_sa, n, n]`` (None without self-attention heads);
    - ``ra_attn_scores``: ``[b, n_heads_ra, n, n]``;
    - ``ra_rels``: ``[b, n, n, n_relations]`` (``[b, n_heads_ra, n, n]`` relation scores for
      ``ra_type='disrca'``, None for ``'rca'``).

    Each key holds a list with one entry per layer. Switches the model to eval mode, as the
    reference does; gradients flow unless called under ``torch.no_grad()``.
    """
    return _run(model, "DualAttnTransformerLM", _C.datlm_forward_w_intermediate_results, x)


def transformerlm_forward_w_intermediate_results(model, x: torch.Tensor):
    """The same for a ``TransformerLM``: ``(logits, {"attn_scores": [b, n_heads, n, n] per
    layer})``."""
    return _run(model, "TransformerLM", _C.transformerlm_forward_w_intermediate_results, x)
