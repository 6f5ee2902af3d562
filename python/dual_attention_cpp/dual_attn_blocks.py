"""Encoder and decoder blocks built on dual attention (the C++ ``dual_attn_blocks.h``; reference:
``dual_attention.dual_attn_blocks``)."""

from __future__ import annotations

from typing import Optional

import torch

from . import _C
from ._module import CppModule

__all__ = ["DualAttnEncoderBlock", "DualAttnDecoderBlock"]


class DualAttnEncoderBlock(CppModule, cpp=_C.DualAttnEncoderBlock):
    """A dual attention encoder block: a Transformer encoder block whose attention is
    ``DualAttention`` (self-attention and relational heads).

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads_sa : int
        Number of self-attention heads.
    n_heads_ra : int
        Number of relational heads.
    dff : int
        Hidden width of the feed-forward block (None: its default).
    activation : str
        Activation of the feed-forward block (an activation name, or 'swiglu').
    dropout_rate : float
        Dropout rate.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    sa_kwargs : dict, optional
        Keywords of the self-attention heads.
    ra_kwargs : dict, optional
        Keywords of the relational heads.
    ra_type : str, optional
        'relational_attention' (default), 'rca' or 'disrca'.
    share_attn_params : bool, optional
        Share the attention query/key projections of both kinds of heads. Default False.
    bias : bool, optional
        Bias in the feed-forward layers. Default True.
    causal : bool, optional
        Causal attention. Default False.
    """

    def forward(
        self,
        x: torch.Tensor,
        symbols: Optional[torch.Tensor],
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Applies the block to ``x`` ``[batch, len, d_model]`` with the relational heads' symbols;
        ``freqs_cos``/``freqs_sin`` apply RoPE."""
        return self._cpp_call("forward", x, symbols, freqs_cos, freqs_sin)


class DualAttnDecoderBlock(CppModule, cpp=_C.DualAttnDecoderBlock):
    """A dual attention decoder block: dual attention, cross-attention to a context and a
    feed-forward block, each with a residual connection and a norm.

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads_sa : int
        Number of self-attention heads.
    n_heads_ra : int
        Number of relational heads.
    n_heads_cross : int
        Number of cross-attention heads.
    dff : int
        Hidden width of the feed-forward block (None: its default).
    activation : str
        Activation of the feed-forward block.
    dropout_rate : float
        Dropout rate.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    sa_kwargs : dict, optional
        Keywords of the self-attention heads.
    ra_kwargs : dict, optional
        Keywords of the relational heads.
    cross_kwargs : dict, optional
        Keywords of the cross-attention.
    ra_type : str, optional
        'relational_attention' (default), 'rca' or 'disrca'.
    share_attn_params : bool, optional
        Share the attention query/key projections of both kinds of heads. Default False.
    bias : bool, optional
        Bias in the feed-forward layers. Default True.
    causal : bool, optional
        Causal dual attention. Default True.
    """

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, symbols: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """Applies the block to ``x`` ``[batch, len, d_model]`` attending to ``context``, with the
        relational heads' symbols."""
        return self._cpp_call("forward", x, context, symbols)
