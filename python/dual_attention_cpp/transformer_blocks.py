"""Standard Transformer blocks (the C++ ``transformer_blocks.h``; reference:
``dual_attention.transformer_blocks``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import _C
from ._module import CppModule, _new_module, cpp_forward

__all__ = ["EncoderBlock", "DecoderBlock", "FeedForwardBlock", "RMSNorm", "create_norm"]


class EncoderBlock(CppModule, cpp=_C.EncoderBlock):
    """A Transformer encoder block: self-attention and a feed-forward block, each with a residual
    connection and a norm (pre-norm or post-norm).

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of self-attention heads.
    dff : int
        Hidden width of the feed-forward block (None: its default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward block (an activation name, or 'swiglu').
    norm_first : bool
        Normalise before (pre-norm) or after (post-norm) each sublayer.
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias in the attention output projection and the feed-forward layers. Default True.
    causal : bool, optional
        Causal self-attention. Default False.
    attn_kwargs : dict, optional
        Extra keywords of the self-attention (``Attention``), e.g. ``n_kv_heads``.
    """

    def forward(
        self,
        x: torch.Tensor,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        need_weights: bool = False,
    ) -> torch.Tensor:
        """Applies the block to ``x`` ``[batch, len, d_model]``; ``freqs_cos``/``freqs_sin`` apply
        RoPE; ``need_weights`` selects the explicit attention path (weights are not returned)."""
        return self._cpp_call("forward", x, freqs_cos, freqs_sin, need_weights)


class DecoderBlock(CppModule, cpp=_C.DecoderBlock):
    """A Transformer decoder block: self-attention, cross-attention to a context and a feed-forward
    block, each with a residual connection and a norm.

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of self-attention heads (the cross-attention uses as many, as in the reference).
    n_heads_cross : int
        Number of cross-attention heads (stored; see above).
    dff : int
        Hidden width of the feed-forward block (None: its default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward block.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias in the attention output projections and the feed-forward layers. Default True.
    causal : bool, optional
        Causal self-attention. Default False.
    """

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Applies the block to ``x`` ``[batch, len, d_model]`` attending to ``context``
        ``[batch, len_ctx, d_model]``."""
        return self._cpp_call("forward", x, context)


class FeedForwardBlock(CppModule, cpp=_C.FeedForwardBlock):
    """A two-layer feed-forward block: ``linear2(act(linear1 x))``, or with 'swiglu'
    ``linear2(silu(linear1 x) * linear3 x)``.

    Parameters
    ----------
    embed_dim : int
        Input (and output) dimension.
    dff : int, optional
        Hidden width; None means ``int(2/3 * 4 * embed_dim)`` for 'swiglu', ``4 * embed_dim``
        otherwise.
    activation : str, optional
        Activation name, or 'swiglu'. Default 'relu'.
    use_bias : bool, optional
        Bias in the linear layers. Default False.
    """

    forward = cpp_forward("""Applies the block to ``x`` ``[..., embed_dim]``.""")


class RMSNorm(CppModule, cpp=_C.RMSNorm):
    """Root-mean-square normalisation: ``x / sqrt(mean(x^2) + eps) * weight``, computed in float32.

    Parameters
    ----------
    dim : int
        Normalised (last) dimension.
    eps : float, optional
        Added to the mean square. Default 1e-5.
    """

    forward = cpp_forward("""Normalises ``x`` ``[..., dim]``.""")


def create_norm(d_model: int, norm_type: str) -> nn.Module:
    """The norm called ``norm_type``: 'layernorm' (``nn.LayerNorm(d_model)``), 'rmsnorm'
    (``RMSNorm(d_model)``) or 'none' (``nn.Identity()``); an unknown name raises ValueError."""
    cpp = _C.create_norm(d_model, norm_type)
    return _new_module(cpp, {})
