"""Forward calls of the seq2seq and vision models that return intermediate results (not in the
reference, whose ``model_analysis`` covers the language model only; computed by the C++
library's model_analysis.h, as ``datlm_utils``).

Each returns the model's output and a dict holding one list entry per block under each key. The
attention runs on the materialising path: memory grows as n^2 per head and relation. Each call
switches the model to eval mode, as the reference's ``datlm_utils`` does; gradients flow unless
called under ``torch.no_grad()``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from .. import _C
from .datlm_utils import _run

__all__ = [
    "seq2seq_forward_w_intermediate_results",
    "seq2seq_dat_forward_w_intermediate_results",
    "vit_forward_w_intermediate_results",
    "vidat_forward_w_intermediate_results",
]

Results = Dict[str, List[Optional[torch.Tensor]]]


def seq2seq_forward_w_intermediate_results(model, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Results]:
    """A ``Seq2SeqTransformer``'s forward on source ``x`` and target ``y`` (token ids ``[b, len]``
    or vectors ``[b, len, dim]``, as ``input_spec`` / ``output_spec`` say): ``(logits
    [b, m, out_dim], dict)`` with the keys

    - ``encoder_attn_scores``: ``[b, n_heads, n, n]`` per encoder block;
    - ``decoder_self_attn_scores``: ``[b, n_heads, m, m]`` per decoder block;
    - ``decoder_cross_attn_scores``: ``[b, n_heads, m, n]`` per decoder block.
    """
    return _run(model, "Seq2SeqTransformer", _C.seq2seq_forward_w_intermediate_results, x, y)


def seq2seq_dat_forward_w_intermediate_results(model, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, Results]:
    """A ``Seq2SeqDualAttnTransformer``'s forward: ``(logits [b, m, out_dim], dict)`` with the keys
    of ``datlm_forward_w_intermediate_results`` prefixed ``encoder_`` (per encoder block, over the
    source) and ``decoder_`` (per decoder block, over the target): ``*_symbol_attn_scores``,
    ``*_sa_attn_scores``, ``*_ra_attn_scores``, ``*_ra_rels``; and ``decoder_cross_attn_scores``
    ``[b, n_heads, m, n]``. The model's one symbol retriever serves every block, as in its forward.
    """
    return _run(model, "Seq2SeqDualAttnTransformer", _C.seq2seq_dat_forward_w_intermediate_results,
                x, y)


def vit_forward_w_intermediate_results(model, x: torch.Tensor) -> Tuple[torch.Tensor, Results]:
    """A ``VisionTransformer``'s forward on images ``x`` ``[b, channels, H, W]``: ``(logits
    [b, num_classes], {"attn_scores": [b, n_heads, n, n] per block})``, where the sequence is the
    class token followed by the ``n - 1`` patches."""
    return _run(model, "VisionTransformer", _C.vit_forward_w_intermediate_results, x)


def vidat_forward_w_intermediate_results(model, x: torch.Tensor) -> Tuple[torch.Tensor, Results]:
    """A ``VisionDualAttnTransformer``'s forward: ``(logits [b, num_classes], dict)`` with the four
    keys of ``datlm_forward_w_intermediate_results`` (over the class token and the patches)."""
    return _run(model, "VisionDualAttnTransformer", _C.vidat_forward_w_intermediate_results, x)
