"""Positional encodings and relative-position embeddings (the C++ ``positional_encoding.h``;
reference: ``dual_attention.positional_encoding``)."""

from __future__ import annotations

from typing import Optional

import torch

from . import _C
from ._module import CppModule, cpp_forward

__all__ = [
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbeddings",
    "RelativePositionalEncoding",
]


class SinusoidalPositionalEncoding(CppModule, cpp=_C.SinusoidalPositionalEncoding):
    """Adds a fixed sinusoidal positional encoding (the persistent buffer ``pe``) to its input.

    Parameters
    ----------
    d_model : int
        Model dimension (even).
    scale : bool, optional
        Multiply the input by ``sqrt(d_model)`` before adding the encoding. Default True.
    dropout : float, optional
        Dropout rate. Default 0.1.
    max_len : int, optional
        Longest sequence encoded. Default 2048.
    """

    forward = cpp_forward(
        """``dropout(scale * x + pe[:len])`` for ``x`` ``[batch, len, d_model]``."""
    )


class LearnedPositionalEmbeddings(CppModule, cpp=_C.LearnedPositionalEmbeddings):
    """Adds a learned positional embedding to its input.

    Parameters
    ----------
    d_model : int
        Model dimension.
    scale : bool, optional
        Multiply the input by ``sqrt(d_model)`` before adding the embedding. Default True.
    dropout : float, optional
        Dropout rate. Default 0.1.
    max_len : int, optional
        Longest sequence embedded. Default 2048.
    """

    forward = cpp_forward(
        """``dropout(scale * x + position_embeddings(arange(len)))`` for ``x``
        ``[batch, len, d_model]``."""
    )


class RelativePositionalEncoding(CppModule, cpp=_C.RelativePositionalEncoding):
    """Relative-position embeddings: entry ``[i, j]`` embeds the offset ``j - i``.

    Parameters
    ----------
    dim : int
        Dimension of the embeddings.
    max_rel_pos : int
        Largest offset in either direction; longer offsets are clipped to it.
    """

    def forward(self, length_q: int, length_k: Optional[int] = None) -> torch.Tensor:
        """Embeddings ``[length_q, length_k, dim]`` (``length_k`` defaults to ``length_q``)."""
        return self._cpp_call("forward", length_q, length_k)
