"""Multi-head attention with grouped-query heads, RoPE and head budgeting for dual attention
(the C++ ``dual_attention::Attention``; reference: ``dual_attention.attention``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C
from ._module import CppModule

__all__ = ["Attention"]


class Attention(CppModule, cpp=_C.Attention):
    """Multi-head attention with multi-query / grouped-query heads and rotary positional embeddings.

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of heads (query heads when ``n_kv_heads`` is set).
    dropout : float
        Dropout rate (attention scores and output).
    key_dim : int, optional
        Width of each query/key head. Defaults to ``d_model // total_n_heads``.
    n_kv_heads : int, optional
        Number of key/value heads, shared among the query heads: 1 is multi-query attention, a
        divisor of ``n_heads`` grouped-query attention, ``n_heads`` (the default, None) standard
        multi-head attention.
    add_bias_kv : bool, optional
        Whether the key/value projections have a bias. Default False.
    add_bias_out : bool, optional
        Whether the output projection has a bias. Default False.
    total_n_heads : int, optional
        Total number of heads when used inside dual attention: each head has width
        ``d_model // total_n_heads``, so the output has ``(d_model // total_n_heads) * n_heads``
        features and the concatenation of both kinds of heads has ``d_model``. Defaults to
        ``n_heads`` (output width ``d_model``).
    """

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Attends from ``query`` to ``key``/``value``.

        Parameters
        ----------
        query : torch.Tensor
            Query sequence ``[batch, len_q, d_model]``.
        key, value : torch.Tensor
            Context sequences ``[batch, len_k, d_model]``.
        freqs_cos, freqs_sin : torch.Tensor, optional
            RoPE tables ``[len_q, key_dim // 2]`` (``attention_utils.precompute_freqs_cis``); RoPE
            is applied when given (self-attention only).
        attn_mask : torch.Tensor, optional
            Boolean mask ``[len_q, len_k]``; True at ``[i, j]`` lets ``i`` attend to ``j``.
        is_causal : bool, optional
            Apply a causal mask (``attn_mask`` must then be None).
        need_weights : bool, optional
            Also return the attention scores (computed explicitly rather than by the fused kernel).

        Returns
        -------
        tuple
            ``(output [batch, len_q, head_dim * n_heads], scores [batch, n_heads, len_q, len_k] or
            None)``.
        """
        return self._cpp_call(
            "forward", query, key, value, freqs_cos, freqs_sin, attn_mask, is_causal, need_weights
        )
