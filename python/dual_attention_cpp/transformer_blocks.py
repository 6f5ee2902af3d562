"""Standard Transformer blocks (the C++ ``transformer_blocks.h``; reference:
``dual_attention.transformer_blocks``)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from . import _C
from ._module import CppModule, _new_module
from .model_utils import get_activation_function

__all__ = ["EncoderBlock", "DecoderBlock", "FeedForwardBlock", "RMSNorm", "create_norm"]


def _check_sequence(x: torch.Tensor, width: int, owner: str, argument: str) -> None:
    # A block's sequence input: [batch, len, width] (a check on shapes only: free under compile).
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or x.shape[2] != width:
        got = f"a tensor of shape {list(x.shape)}" if isinstance(x, torch.Tensor) else repr(x)
        raise RuntimeError(f"{owner}: {argument} must be [batch, len, {width}], got {got}")


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
        _check_sequence(x, self.d_model, "EncoderBlock", "x")
        if self.norm_first:  # x + sublayer(norm(x))
            x = x + self._compute_self_attn(self.norm1(x), freqs_cos, freqs_sin, need_weights)
            return x + self._apply_ff_block(self.norm2(x))  # [b, n, d]
        # norm(x + sublayer(x)), with the reference's dropout between the two sublayers
        y = self._compute_self_attn(x, freqs_cos, freqs_sin, need_weights)
        x = self.dropout(self.norm1(x + y))
        return self.norm2(x + self._apply_ff_block(x))  # [b, n, d]

    def _compute_self_attn(
        self,
        x: torch.Tensor,
        freqs_cos: Optional[torch.Tensor],
        freqs_sin: Optional[torch.Tensor],
        need_weights: bool,
    ) -> torch.Tensor:
        out, _ = self.self_attn(
            query=x, key=x, value=x, is_causal=self.causal, need_weights=need_weights,
            attn_mask=None, freqs_cos=freqs_cos, freqs_sin=freqs_sin,
        )
        return self.dropout(out)

    def _apply_ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.ff_block(x))


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
        _check_sequence(x, self.d_model, "DecoderBlock", "x")
        _check_sequence(context, self.d_model, "DecoderBlock", "context")
        if context.shape[0] != x.shape[0]:
            raise RuntimeError(
                "DecoderBlock: x and context must have the same batch size, got "
                f"{x.shape[0]} and {context.shape[0]}"
            )
        # No dropout after the feed-forward block here, as in the reference.
        if self.norm_first:
            x = x + self._compute_self_attn(self.norm1(x))
            x = x + self._compute_cross_attn(self.norm2(x), context)
            return x + self.ff_block(self.norm3(x))  # [b, n, d]
        x = self.norm1(x + self._compute_self_attn(x))
        x = self.norm2(x + self._compute_cross_attn(x, context))
        return self.norm3(x + self.ff_block(x))  # [b, n, d]

    def _compute_self_attn(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.self_attn(
            query=x, key=x, value=x, is_causal=self.causal, attn_mask=None, need_weights=False,
            freqs_cos=None, freqs_sin=None,
        )
        return self.dropout(out)

    def _compute_cross_attn(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        out, _ = self.cross_attn(
            query=x, key=context, value=context, is_causal=False, attn_mask=None,
            need_weights=False, freqs_cos=None, freqs_sin=None,
        )
        return self.dropout(out)


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

    def _after_build(self) -> None:
        # The activation function, kept where the reference keeps it (``activation_``) but not as a
        # submodule: the C++ module has none, and the printed tree reads as the reference's
        # without its activation lines.
        if self.activation != "swiglu":
            self.__dict__["activation_"] = get_activation_function(self.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Applies the block to ``x`` ``[..., embed_dim]``."""
        if x.dim() < 1 or x.shape[-1] != self.embed_dim:
            raise RuntimeError(
                f"FeedForwardBlock: x must be [..., {self.embed_dim}], got a tensor of shape "
                f"{list(x.shape)}"
            )
        if self.activation == "swiglu":  # linear2(silu(linear1 x) * linear3 x)
            return self.linear2(nn.functional.silu(self.linear1(x)) * self.linear3(x))
        return self.linear2(self.activation_(self.linear1(x)))  # [..., embed_dim]


class RMSNorm(CppModule, cpp=_C.RMSNorm):
    """Root-mean-square normalisation: ``x / sqrt(mean(x^2) + eps) * weight``, computed in float32.

    Parameters
    ----------
    dim : int
        Normalised (last) dimension.
    eps : float, optional
        Added to the mean square. Default 1e-5.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalises ``x`` ``[..., dim]``."""
        if x.dim() < 1 or x.shape[-1] != self.dim:
            raise RuntimeError(
                f"RMSNorm: x must be [..., {self.dim}], got a tensor of shape {list(x.shape)}"
            )
        # x / sqrt(mean(x^2) + eps) in float32, as the reference (float64 stays float64 rather than
        # losing precision), back to x's dtype, then scaled.
        xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def create_norm(d_model: int, norm_type: str) -> nn.Module:
    """The norm called ``norm_type``: 'layernorm' (``nn.LayerNorm(d_model)``), 'rmsnorm'
    (``RMSNorm(d_model)``) or 'none' (``nn.Identity()``); an unknown name raises ValueError."""
    cpp = _C.create_norm(d_model, norm_type)
    return _new_module(cpp, {})
