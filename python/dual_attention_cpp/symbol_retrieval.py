"""Symbol assignment mechanisms ("symbol retrievers") that give relational attention its symbols
(the C++ ``symbol_retrieval.h``; reference: ``dual_attention.symbol_retrieval``)."""

from __future__ import annotations

from typing import Union

import torch

from . import _C
from ._module import CppModule, cpp_forward

__all__ = [
    "SymbolicAttention",
    "PositionalSymbolRetriever",
    "PositionRelativeSymbolRetriever",
    "RelationalSymbolicAttention",
]


class SymbolicAttention(CppModule, cpp=_C.SymbolicAttention):
    """Symbolic attention: learns a library of symbols and matching template features, and
    retrieves for each input a symbol by multi-head attention from ``q_proj(x)`` onto the template
    features (keys) and the symbol library (values).

    Parameters
    ----------
    d_model : int
        Model dimension: of the input, the symbols and the template features.
    n_heads : int
        Number of heads of the symbolic attention.
    n_symbols : int
        Number of symbols in the library.
    dropout : float, optional
        Dropout rate on the attention weights. Default 0.0.
    scale : float, optional
        Softmax scale; None means ``1 / sqrt(d_model / n_heads)``.
    trainable_symbols : bool, optional
        Whether the symbol library is trained (requires grad). Default True.
    """

    forward = cpp_forward(
        """Retrieves symbols for ``x`` ``[batch, len, d_model]``; returns ``[batch, len, d_model]``."""
    )


class PositionalSymbolRetriever(CppModule, cpp=_C.PositionalSymbolRetriever):
    """Positional symbols: a learned library with one symbol per position.

    Parameters
    ----------
    symbol_dim : int
        Dimension of the symbols.
    max_length : int
        Number of symbols: the longest sequence it serves.
    sinusoidal : bool, optional
        Accepted and stored; no effect (as in the reference). Default False.
    """

    forward = cpp_forward(
        """The symbols of positions ``0..len-1`` for ``x`` ``[batch, len, ...]``; returns
        ``[batch, len, symbol_dim]``."""
    )


class PositionRelativeSymbolRetriever(CppModule, cpp=_C.PositionRelativeSymbolRetriever):
    """Position-relative symbols: for ``i -> j`` the symbol ``s_ij`` encodes the offset ``j - i``.

    Parameters
    ----------
    symbol_dim : int
        Dimension of the symbols.
    max_rel_pos : int
        Largest offset encoded; longer offsets are clipped to it.
    """

    forward = cpp_forward(
        """Symbols for a sequence of the length of ``x`` (``x.shape[1]``); returns
        ``[len, len, symbol_dim]``."""
    )


class RelationalSymbolicAttention(CppModule, cpp=_C.RelationalSymbolicAttention):
    """Relational symbolic attention: computes each position's relations with its neighbourhood and
    retrieves a symbol for that relation pattern by symbolic attention.

    Parameters
    ----------
    d_model : int
        Model dimension.
    rel_n_heads : int
        Number of relation heads computed with each neighbour.
    symbolic_attn_n_heads : int
        Number of heads of the inner symbolic attention.
    n_symbols : int
        Number of symbols in the library.
    nbhd_delta : int
        Neighbourhood radius: ``[i - delta, i]`` when causal, ``[i - delta, i + delta]`` otherwise.
    causal_nbhd : bool, optional
        Causal neighbourhood. Default True.
    include_self : bool, optional
        Whether a position is its own neighbour. Default False.
    normalize_rels : bool, optional
        Softmax of the relations across the neighbourhood. Default True.
    dropout : float, optional
        Dropout rate of the symbolic attention. Default 0.0.
    rel_scale : float, optional
        Scale of the relations; None means ``(d_model / rel_n_heads) ** -0.5``.
    symbolic_attn_scale : float, optional
        Softmax scale of the symbolic attention (see ``SymbolicAttention``).
    """

    forward = cpp_forward(
        """Symbols for ``x`` ``[batch, len, d_model]``; returns ``[batch, len, d_model]``."""
    )

    @staticmethod
    def compute_neighbor_mask(
        n: int, delta: int, include_self: bool = True, device: Union[torch.device, str, None] = None
    ) -> torch.Tensor:
        """Indices of each position's neighbours, ``[n, 2 * delta + 1]`` (``[n, 2 * delta]``
        without self): row ``i`` is ``i - delta .. i + delta``, clamped to ``[0, n - 1]``."""
        return _C.RelationalSymbolicAttention.compute_neighbor_mask(
            n, delta, include_self, torch.device("cpu") if device is None else torch.device(device)
        )

    @staticmethod
    def compute_causal_neighbor_mask(
        n: int, delta: int, include_self: bool = False, device: Union[torch.device, str, None] = None
    ) -> torch.Tensor:
        """Indices of each position's causal neighbours, ``[n, delta + 1]`` (``[n, delta]`` without
        self): row ``i`` is ``i, i - 1, .., i - delta`` (without ``i`` when not include_self),
        clamped to ``[0, n - 1]``."""
        return _C.RelationalSymbolicAttention.compute_causal_neighbor_mask(
            n, delta, include_self, torch.device("cpu") if device is None else torch.device(device)
        )
