"""Dual attention: self-attention heads and relational heads side by side (the C++
``dual_attention::DualAttention``; reference: ``dual_attention.dual_attention``)."""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from . import _C
from ._module import CppModule

__all__ = ["DualAttention"]


class DualAttention(CppModule, cpp=_C.DualAttention):
    """Dual attention: multi-head attention with two kinds of heads, self-attention (sensory
    features) and relational attention (relational features), whose outputs are concatenated
    (self-attention first).

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads_sa : int
        Number of self-attention heads (may be 0).
    n_heads_ra : int
        Number of relational heads (may be 0, not both).
    dropout : float
        Dropout rate.
    sa_kwargs : dict, optional
        Keywords for the self-attention (``Attention``), e.g. ``n_kv_heads``; d_model, n_heads,
        total_n_heads and dropout are set by DualAttention.
    ra_kwargs : dict, optional
        Keywords for the relational module, e.g. ``n_relations``, ``rel_activation``,
        ``symmetric_rels``.
    share_attn_params : bool, optional
        Share the attention query/key projections: self-attention ``wq``/``wk`` are the relational
        ``wq_attn``/``wk_attn`` (needs ``n_heads_sa == n_heads_ra``). Default False.
    ra_type : str, optional
        The relational module: ``'relational_attention'`` (default), or the ablations ``'rca'``
        (RelationalCrossAttention) and ``'disrca'`` (DisentangledRelationalCrossAttention).
    """

    def forward(
        self,
        x: torch.Tensor,
        symbols: Optional[torch.Tensor],
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        need_weights: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[List[torch.Tensor]]]:
        """Computes dual attention.

        Parameters
        ----------
        x : torch.Tensor
            Input ``[batch, len, d_model]``.
        symbols : torch.Tensor
            Symbols for the relational heads (``[batch, len, d_model]``, or ``[len, len, d_model]``
            for position-relative symbols); unused without relational heads.
        attn_mask : torch.Tensor, optional
            Boolean mask ``[len, len]``; True at ``[i, j]`` lets ``i`` attend to ``j``.
        is_causal : bool, optional
            Apply a causal mask (``attn_mask`` must then be None).
        freqs_cos, freqs_sin : torch.Tensor, optional
            RoPE tables; applied to the attention queries/keys of both kinds of heads when given.
        need_weights : bool, optional
            Return the attention scores: the self-attention scores and the relational module's
            extra outputs.

        Returns
        -------
        tuple
            ``(output [batch, len, d_model], sa_scores, ra_scores)``. ``sa_scores`` is
            ``[batch, n_heads_sa, len, len]`` with ``need_weights`` and self-attention heads, else
            None. ``ra_scores`` is None without relational heads; otherwise a list, with
            ``need_weights`` ``[attention scores, relations]`` ('relational_attention'),
            ``[scores]`` ('rca') or ``[attention scores, relation scores]`` ('disrca'), and empty
            without it (the reference always fills it; skipping it lets the relational heads use a
            memory-linear kernel).
        """
        outs, sa_scores, ra_scores = [], None, None
        if self.use_self_attn:
            sa_out, sa_scores = self.self_attention(
                x, x, x, freqs_cos=freqs_cos, freqs_sin=freqs_sin, attn_mask=attn_mask,
                is_causal=is_causal, need_weights=need_weights,
            )
            outs.append(sa_out)  # [b, n, head_dim * n_heads_sa]
        if self.use_rel_attn:
            extra = {}
            if self.ra_type == "relational_attention":
                # Without the weights the relational heads may run a memory-linear kernel; the
                # ablations ('rca', 'disrca') always compute theirs.
                extra["need_weights"] = need_weights
            ra_out, *ra_weights = self.relational_attention(
                x, symbols, freqs_cos=freqs_cos, freqs_sin=freqs_sin, attn_mask=attn_mask,
                is_causal=is_causal, **extra,
            )
            outs.append(ra_out)  # [b, n, head_dim * n_heads_ra]
            ra_scores = list(ra_weights) if need_weights else []
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)  # [b, n, d_model]
        return out, sa_scores, ra_scores
