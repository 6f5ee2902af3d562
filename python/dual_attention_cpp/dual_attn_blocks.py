"""Encoder and decoder blocks built on dual attention (the C++ ``dual_attn_blocks.h``; reference:
``dual_attention.dual_attn_blocks``)."""

from __future__ import annotations

from typing import Optional

import torch

from . import _C
from ._module import CppModule
from .transformer_blocks import _check_sequence

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
        _check_sequence(x, self.d_model, "DualAttnEncoderBlock", "x")
        if self.norm_first:  # x + sublayer(norm(x))
            x = x + self._compute_dual_attn(self.norm1(x), symbols, freqs_cos, freqs_sin)
            return x + self._apply_ff_block(self.norm2(x))  # [b, n, d]
        # norm(x + sublayer(x)), with the reference's dropout between the two sublayers
        x = self.dropout(self.norm1(x + self._compute_dual_attn(x, symbols, freqs_cos, freqs_sin)))
        return self.norm2(x + self._apply_ff_block(x))  # [b, n, d]

    def _compute_dual_attn(
        self,
        x: torch.Tensor,
        symbols: Optional[torch.Tensor],
        freqs_cos: Optional[torch.Tensor],
        freqs_sin: Optional[torch.Tensor],
    ) -> torch.Tensor:
        out, *_ = self.dual_attn(
            x, symbols, need_weights=False, is_causal=self.causal, freqs_cos=freqs_cos,
            freqs_sin=freqs_sin,
        )
        return self.dropout(out)

    def _apply_ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.ff_block(x))


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
        _check_sequence(x, self.d_model, "DualAttnDecoderBlock", "x")
        _check_sequence(context, self.d_model, "DualAttnDecoderBlock", "context")
        # No dropout after the feed-forward block here, as in the reference.
        if self.norm_first:
            x = x + self._compute_dual_attn(self.norm1(x), symbols)
            x = x + self._compute_cross_attn(self.norm2(x), context)
            return x + self.ff_block(self.norm3(x))  # [b, n, d]
        x = self.norm1(x + self._compute_dual_attn(x, symbols))
        x = self.norm2(x + self._compute_cross_attn(x, context))
        return self.norm3(x + self.ff_block(x))  # [b, n, d]

    def _compute_dual_attn(self, x: torch.Tensor, symbols: Optional[torch.Tensor]) -> torch.Tensor:
        out, *_ = self.dual_attn(x, symbols, need_weights=False, is_causal=self.causal)
        return self.dropout(out)

    def _compute_cross_attn(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out = self.cross_attn(
            query=x, key=context, value=context, need_weights=False, is_causal=False
        )[0]
        return self.dropout(out)
