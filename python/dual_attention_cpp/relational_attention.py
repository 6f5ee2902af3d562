"""Relational attention and the relational cross-attention ablations (the C++
``dual_attention::RelationalAttention`` family; reference: ``dual_attention.relational_attention``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C
from ._module import CppModule

__all__ = [
    "RelationalAttention",
    "RelationalCrossAttention",
    "DisentangledRelationalCrossAttention",
]


class RelationalAttention(CppModule, cpp=_C.RelationalAttention):
    """Relational attention (Altabaa & Lafferty 2024).

    Each receiver ``i`` retrieves, per head ``h``, the relations between itself and the senders
    ``j`` tagged with the senders' symbols, aggregated by softmax attention::

        A_i^h = sum_j a^h_ij (r(x_i, x_j) W_r^h + s_j W_s^h)
        a^h   = softmax(<W_q^attn x_i, W_k^attn x_j>_h / sqrt(head_dim))
        r_l   = act(<W_q^rel x_i, W_k^rel x_j>_l / sqrt(rel_proj_dim))

    Supports symmetric relations, position-relative symbols, multi-query / grouped-query attention
    and a head budget for dual attention.

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of attention heads (query heads when ``n_kv_heads`` is set).
    n_relations : int, optional
        Number of relations. Defaults to ``n_heads``.
    dropout : float, optional
        Dropout rate. Default 0.0.
    key_dim : int, optional
        Width of each attention query/key head. Defaults to ``head_dim``.
    n_kv_heads : int, optional
        Number of key/value heads (1: multi-query, a divisor of ``n_heads``: grouped-query,
        None: ``n_heads``, standard multi-head).
    rel_activation : str, optional
        Activation applied to the relations (``model_utils.get_activation_function``).
        Default ``'identity'``.
    rel_proj_dim : int, optional
        Width of each relation's query/key projection. Defaults to
        ``head_dim * n_heads // n_relations``; ``rel_proj_dim * n_relations`` must equal
        ``head_dim * n_heads``.
    add_bias_kv : bool, optional
        Whether the key/value projections have a bias. Default False.
    add_bias_out : bool, optional
        Whether the output projection has a bias. Default False.
    total_n_heads : int, optional
        Total number of heads in dual attention: the output has
        ``(d_model // total_n_heads) * n_heads`` features. Defaults to ``n_heads``.
    symmetric_rels : bool, optional
        Use one projection for both sides of the relations (``wk_rel`` is ``wq_rel``).
        Default False.
    use_relative_positional_symbols : bool, optional
        Symbols are position-relative, of shape ``[len, len, d_model]``. Default False.
    """

    def forward(
        self,
        x: torch.Tensor,
        symbols: torch.Tensor,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        need_weights: bool = True,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
        """Computes relational attention.

        Parameters
        ----------
        x : torch.Tensor
            Input ``[batch, len, d_model]``.
        symbols : torch.Tensor
            Symbols ``[batch, len, d_model]``, or ``[len, len, d_model]`` with
            ``use_relative_positional_symbols``.
        freqs_cos, freqs_sin : torch.Tensor, optional
            RoPE tables ``[len, key_dim // 2]``; applied to the attention queries/keys when given.
        attn_mask : torch.Tensor, optional
            Boolean mask ``[len, len]``; True at ``[i, j]`` lets ``i`` attend to ``j``.
        is_causal : bool, optional
            Apply a causal mask (``attn_mask`` must then be None).
        need_weights : bool, optional
            (Not in the reference, which always returns them.) When False the scores and relations
            are not computed and None is returned in their place, and the output is computed as
            ``implementation`` says: by default without any ``len x len`` tensor, in memory linear
            in ``len`` (forward and backward). Default True.

        Returns
        -------
        tuple
            ``(output [batch, len, head_dim * n_heads], attention scores [batch, n_heads, len, len],
            relations [batch, len, len, n_relations])``.
        """
        return self._cpp_call(
            "forward", x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal, need_weights
        )

    # Not in the reference: how forward(..., need_weights=False) computes the output.

    @property
    def implementation(self) -> str:
        """How ``forward(..., need_weights=False)`` computes the output: ``'auto'`` (the default:
        ``'sdpa'`` on CUDA for identity relations with per-position symbols, ``'materialize'`` for
        short sequences on the CPU, ``'blockwise'`` otherwise), ``'materialize'`` (the reference's
        ``len x len`` tensors), ``'blockwise'`` (query blocks, memory linear in ``len``) or
        ``'sdpa'`` (one scaled_dot_product_attention; identity relations only). All give the same
        result; ``need_weights=True`` always materialises."""
        return self._cpp._get_implementation()

    @implementation.setter
    def implementation(self, value: str) -> None:
        self._cpp._set_implementation(value)

    @property
    def last_implementation(self) -> str:
        """The path the last forward took (``'auto'`` resolved)."""
        return self._cpp._last_implementation()

    @property
    def block_size(self) -> int:
        """The most query rows per block of the ``'blockwise'`` path (default 128)."""
        return self._cpp._get_block_size()

    @block_size.setter
    def block_size(self, value: int) -> None:
        self._cpp._set_block_size(value)


class RelationalCrossAttention(CppModule, cpp=_C.RelationalCrossAttention):
    """Relational cross-attention (RCA; Altabaa et al., ICLR 2024): ``A_i = sum_j act(<W_q x_i,
    W_k x_j> / sqrt(head_dim)) W_v s_j``, an ablation variant for dual attention (ra_type 'rca').

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of heads (query heads when ``n_kv_heads`` is set).
    dropout : float
        Dropout rate.
    n_kv_heads : int, optional
        Number of key/value heads (1: multi-query, a divisor of ``n_heads``: grouped-query,
        None: ``n_heads``).
    activation : str, optional
        Activation applied to the attention scores. With ``'softmax'`` (the default) masked
        positions get -inf before it; with another activation they are zeroed after it.
    add_bias_kv : bool, optional
        Whether the key/value projections have a bias. Default False.
    add_bias_out : bool, optional
        Whether the output projection has a bias. Default False.
    total_n_heads : int, optional
        Total number of heads in dual attention: the output has
        ``(d_model // total_n_heads) * n_heads`` features. Defaults to ``n_heads``.
    use_relative_positional_symbols : bool, optional
        Symbols are position-relative, of shape ``[len, len, d_model]``. Default False.
    """

    def forward(
        self,
        x: torch.Tensor,
        symbols: torch.Tensor,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Computes relational cross-attention of ``x`` over ``symbols``.

        Parameters are as for ``RelationalAttention.forward``. Returns ``(output
        [batch, len, head_dim * n_heads], scores [batch, n_heads, len, len])``.
        """
        return self._cpp_call("forward", x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal)


class DisentangledRelationalCrossAttention(CppModule, cpp=_C.DisentangledRelationalCrossAttention):
    """Disentangled relational cross-attention (ra_type 'disrca'): ``A_i = sum_j a_ij r_ij W_v s_j``
    with ``a = softmax(<W_q^attn x_i, W_k^attn x_j> / sqrt(head_dim))`` and
    ``r = act(<W_q^rel x_i, W_k^rel x_j> / sqrt(head_dim))``; an ablation variant.

    Parameters
    ----------
    d_model : int
        Model dimension.
    n_heads : int
        Number of heads (query heads when ``n_kv_heads`` is set).
    dropout : float
        Dropout rate.
    n_kv_heads : int, optional
        Number of key/value heads (None: ``n_heads``).
    rel_activation : str, optional
        Activation applied to the relations. Default ``'identity'``.
    add_bias_kv : bool, optional
        Whether the key/value projections have a bias. Default False.
    add_bias_out : bool, optional
        Whether the output projection has a bias. Default False.
    total_n_heads : int, optional
        Total number of heads in dual attention. Defaults to ``n_heads``.
    use_relative_positional_symbols : bool, optional
        Symbols are position-relative, of shape ``[len, len, d_model]``. Default False.
    """

    def forward(
        self,
        x: torch.Tensor,
        symbols: torch.Tensor,
        freqs_cos: Optional[torch.Tensor] = None,
        freqs_sin: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Computes disentangled relational cross-attention of ``x`` over ``symbols``.

        Parameters are as for ``RelationalAttention.forward``. Returns ``(output
        [batch, len, head_dim * n_heads], attention scores [batch, n_heads, len, len], relation
        scores [batch, n_heads, len, len])``.
        """
        return self._cpp_call("forward", x, symbols, freqs_cos, freqs_sin, attn_mask, is_causal)
