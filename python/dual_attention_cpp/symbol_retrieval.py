"""Symbol assignment mechanisms ("symbol retrievers") that give relational attention its symbols
(the C++ ``symbol_retrieval.h``; reference: ``dual_attention.symbol_retrieval``).

The forwards are Python composing the modules' children at call time; the retrieval of
``SymbolicAttention`` is the C++ operator ``torch.ops.dual_attention.symbolic_attention``
(include/dual_attention/ops.h).
"""

from __future__ import annotations

from typing import Union

import torch

from . import _C
from ._module import CppModule
from .attention_utils import _check_sequence_input

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Retrieves symbols for ``x`` ``[batch, len, d_model]``; returns ``[batch, len, d_model]``.

        Dropout applies to the attention weights in training only (the reference applies it in
        eval mode too)."""
        _check_sequence_input(x, self.d_model, "SymbolicAttention", "x")
        # Per head hh: softmax(q_proj(x)^hh F^hh^T * scale) S^hh, F = template_features (keys),
        # S = symbol_library (values), each split into n_heads column blocks.
        dropout_p = self.dropout if self.training else 0.0
        return torch.ops.dual_attention.symbolic_attention(
            self.q_proj(x), self.template_features, self.symbol_library, self.n_heads, dropout_p,
            self.scale,
        )  # [b, n, d_model]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The symbols of positions ``0..len-1`` for ``x`` ``[batch, len, ...]``; returns
        ``[batch, len, symbol_dim]``."""
        owner = "PositionalSymbolRetriever"
        if x is None:
            raise RuntimeError(f"{owner}: x is required")
        if x.dim() != 3:
            raise RuntimeError(
                f"{owner}: x must be [batch, len, width], got a tensor of shape {list(x.shape)}"
            )
        b, n = x.shape[0], x.shape[1]
        if n > self.max_length:
            raise RuntimeError(f"{owner}: sequence length {n} exceeds max_length {self.max_length}")
        positions = torch.arange(n, dtype=torch.long, device=x.device)
        return self.symbol_library(positions).unsqueeze(0).repeat(b, 1, 1)  # [b, n, symbol_dim]


class PositionRelativeSymbolRetriever(CppModule, cpp=_C.PositionRelativeSymbolRetriever):
    """Position-relative symbols: for ``i -> j`` the symbol ``s_ij`` encodes the offset ``j - i``.

    Parameters
    ----------
    symbol_dim : int
        Dimension of the symbols.
    max_rel_pos : int
        Largest offset encoded; longer offsets are clipped to it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Symbols for a sequence of the length of ``x`` (``x.shape[1]``); returns
        ``[len, len, symbol_dim]``."""
        if x is None or x.dim() < 2:
            got = "nothing" if x is None else f"a tensor of shape {list(x.shape)}"
            raise RuntimeError(
                f"PositionRelativeSymbolRetriever: x must be [batch, len, ...], got {got}"
            )
        return self.rel_pos_enc(x.shape[1])  # s_ij encodes j - i: [n, n, symbol_dim]


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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Symbols for ``x`` ``[batch, len, d_model]``; returns ``[batch, len, d_model]``."""
        _check_sequence_input(x, self.d_model, "RelationalSymbolicAttention", "x")
        b, n = x.shape[0], x.shape[1]
        h = self.rel_n_heads
        head_dim = self.d_model // h
        # r[b, i, (j, hh)] = softmax_j(<q_hh(x_i), k_hh(x_nbhd(i, j))> * rel_scale) over the Delta
        # neighbours j of i, then symbols = symbolic_attention(model_dim_proj(r)).
        query = self.q_proj(x).view(b, n, h, head_dim).transpose(1, 2)  # [b, h, n, head_dim]
        key = self.k_proj(x).view(b, n, h, head_dim).transpose(1, 2)  # [b, h, n, head_dim]
        nbhd = self.compute_causal_neighbor_mask if self.causal_nbhd else self.compute_neighbor_mask
        neighbors = nbhd(n, self.nbhd_delta, self.include_self, x.device)  # [n, Delta]
        neighbor_keys = key[:, :, neighbors]  # [b, h, n, Delta, head_dim]
        rels = torch.einsum("bhid,bhijd->bhij", query, neighbor_keys)  # [b, h, n, Delta]
        if self.normalize_rels:
            rels = torch.softmax(rels * self.rel_scale, dim=-1)
        rels = rels.permute(0, 2, 3, 1).reshape(b, n, self.nbhd_rel_dim)  # [b, n, Delta * h]
        return self.symbolic_attention(self.model_dim_proj(rels))

    @staticmethod
    def compute_neighbor_mask(
        n: int, delta: int, include_self: bool = True, device: Union[torch.device, str, None] = None
    ) -> torch.Tensor:
        """Indices of each position's neighbours, ``[n, 2 * delta + 1]`` (``[n, 2 * delta]``
        without self): row ``i`` is ``i - delta .. i + delta``, clamped to ``[0, n - 1]``."""
        _check_neighborhood("compute_neighbor_mask", n, delta)
        device = torch.device("cpu") if device is None else device
        if include_self:
            offsets = torch.arange(-delta, delta + 1, device=device)
        else:
            before = torch.arange(-delta, 0, device=device)
            offsets = torch.cat([before, torch.arange(1, delta + 1, device=device)])
        rows = torch.arange(n, device=device).unsqueeze(1) + offsets.unsqueeze(0)
        return rows.clamp(0, n - 1)  # [n, Delta] (empty when n = 0)

    @staticmethod
    def compute_causal_neighbor_mask(
        n: int, delta: int, include_self: bool = False, device: Union[torch.device, str, None] = None
    ) -> torch.Tensor:
        """Indices of each position's causal neighbours, ``[n, delta + 1]`` (``[n, delta]`` without
        self): row ``i`` is ``i, i - 1, .., i - delta`` (without ``i`` when not include_self),
        clamped to ``[0, n - 1]``."""
        _check_neighborhood("compute_causal_neighbor_mask", n, delta)
        device = torch.device("cpu") if device is None else device
        offsets = torch.arange(0 if include_self else 1, delta + 1, device=device)
        rows = torch.arange(n, device=device).unsqueeze(1) - offsets.unsqueeze(0)
        return rows.clamp(0, n - 1)  # [n, Delta] (empty when n = 0)


def _check_neighborhood(owner: str, n: int, delta: int) -> None:
    if n < 0:
        raise RuntimeError(f"{owner}: n must be >= 0, got {n}")
    if delta < 0:
        raise RuntimeError(f"{owner}: delta must be >= 0, got {delta}")
