"""Positional encodings and relative-position embeddings (the C++ ``positional_encoding.h``;
reference: ``dual_attention.positional_encoding``)."""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import _C
from ._module import CppModule
from .attention_utils import _check_sequence_input

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(scale * x + pe[:len])`` for ``x`` ``[batch, len, d_model]``."""
        _check_length(x, self.d_model, self.max_len, "SinusoidalPositionalEncoding")
        scale = math.sqrt(self.d_model) if self.scale else 1.0
        return self.dropout(x * scale + self.pe[: x.size(1)])


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``dropout(scale * x + position_embeddings(arange(len)))`` for ``x``
        ``[batch, len, d_model]``."""
        _check_length(x, self.d_model, self.max_len, "LearnedPositionalEmbeddings")
        scale = math.sqrt(self.d_model) if self.scale else 1.0
        positions = torch.arange(x.size(1), dtype=torch.long, device=x.device)
        return self.dropout(x * scale + self.position_embeddings(positions))


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
        owner = "RelativePositionalEncoding"
        length_k = length_q if length_k is None else length_k
        if length_q < 0:
            raise RuntimeError(f"{owner}: length_q must be >= 0, got {length_q}")
        if length_k < 0:
            raise RuntimeError(f"{owner}: length_k must be >= 0, got {length_k}")
        m, table = self.max_rel_pos, self.rel_pos_embeddings
        offsets = (
            torch.arange(length_k, device=table.device).unsqueeze(0)
            - torch.arange(length_q, device=table.device).unsqueeze(1)
        )  # [lq, lk]: j - i
        return table[offsets.clamp(-m, m) + m]  # [lq, lk, dim]


def _check_length(x: torch.Tensor, d_model: int, max_len: int, owner: str) -> None:
    _check_sequence_input(x, d_model, owner, "x")
    if x.size(1) > max_len:
        raise RuntimeError(f"{owner}: sequence length {x.size(1)} exceeds max_len {max_len}")
