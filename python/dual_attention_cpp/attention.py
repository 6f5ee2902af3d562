"""Multi-head attention with grouped-query heads, RoPE and head budgeting for dual attention
(the C++ ``dual_attention::Attention``; reference: ``dual_attention.attention``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch.nn import functional as F

from . import _C
from ._module import CppModule
from .attention_utils import (
    _check_rope_inputs,
    _check_sequence_input,
    _check_tensor_arguments,
    _resolve_attn_mask,
    apply_rotary_emb,
    repeat_kv,
)

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
        # out = wo(concat_h softmax(q_h k_h^T / sqrt(head_dim) + mask) v_h), with the kv heads
        # shared by n_rep_kv consecutive query heads.
        _check_tensor_arguments(
            "Attention.forward()",
            dict(query=query, key=key, value=value, freqs_cos=freqs_cos, freqs_sin=freqs_sin,
                 attn_mask=attn_mask, is_causal=is_causal, need_weights=need_weights),
            required=("query", "key", "value"), optional=("freqs_cos", "freqs_sin", "attn_mask"),
        )
        owner, h = "Attention", self.n_heads
        key_dim, head_dim, n_kv = self.key_dim, self.head_dim, self.n_kv_heads
        _check_sequence_input(query, self.d_model, owner, "query")
        _check_sequence_input(key, self.d_model, owner, "key")
        _check_sequence_input(value, self.d_model, owner, "value")
        b, lq, lk = query.size(0), query.size(1), key.size(1)
        if key.size(0) != b or value.size(0) != b:
            raise RuntimeError(
                f"{owner}: query, key and value must have the same batch size, got {b}, "
                f"{key.size(0)} and {value.size(0)}"
            )
        if value.size(1) != lk:
            raise RuntimeError(
                f"{owner}: key and value must have the same length, got {lk} and {value.size(1)}"
            )
        rope = _check_rope_inputs(freqs_cos, freqs_sin, lq, key_dim, owner)
        if rope and lq != lk:
            raise RuntimeError(f"{owner}: RoPE needs equal query and key lengths, got {lq} and {lk}")
        # SDPA takes the causal flag itself: the [lq, lk] mask is built only when the scores are.
        mask = None
        if need_weights or attn_mask is not None:
            mask = _resolve_attn_mask(attn_mask, is_causal, lq, lk, query.device, owner)

        q = self.wq(query).view(b, lq, h, key_dim)
        k = self.wk(key).view(b, lk, n_kv, key_dim)
        v = self.wv(value).view(b, lk, n_kv, head_dim)
        if rope:
            q, k = apply_rotary_emb(q, k, freqs_cos, freqs_sin)
        q = q.transpose(1, 2)  # [b, h, lq, key_dim]
        k = repeat_kv(k, self.n_rep_kv).transpose(1, 2)  # [b, h, lk, key_dim]
        v = repeat_kv(v, self.n_rep_kv).transpose(1, 2)  # [b, h, lk, head_dim]

        scores = None
        if not need_weights:
            # softmax(q k^T * scale + mask) v in one fused kernel; the causal flag (rather than a
            # mask) lets it pick its flash kernels.
            p = self.attn_dropout.p if self.training else 0.0
            causal = bool(is_causal) and attn_mask is None
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if causal else mask, dropout_p=p, is_causal=causal,
                scale=self.attn_scale,
            )  # [b, h, lq, head_dim]
        else:
            scores = torch.matmul(q, k.transpose(2, 3)) * self.attn_scale  # [b, h, lq, lk]
            if mask is not None:
                scores = scores.masked_fill(mask.logical_not(), float("-inf"))
            scores = self.attn_dropout(torch.softmax(scores, dim=-1))
            out = torch.matmul(scores, v)  # [b, h, lq, head_dim]
        out = out.transpose(1, 2).contiguous().view(b, lq, h * head_dim)
        return self.resid_dropout(self.wo(out)), scores

