"""Relational attention and the relational cross-attention ablations (the C++
``dual_attention::RelationalAttention`` family; reference: ``dual_attention.relational_attention``).

Each forward is Python composing the module's children at call time; the attention of
``RelationalAttention`` itself is the C++ operator ``torch.ops.dual_attention.relational_attention``
(include/dual_attention/ops.h). The two ablations are small enough to be written here in torch.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C
from ._module import CppModule
from .attention_utils import (
    _check_rope_inputs,
    _check_sequence_input,
    _check_tensor_arguments,
    _resolve_attn_mask,
    apply_rotary_emb,
)
from .model_utils import _FUNCTIONS as _ACTIVATIONS

__all__ = [
    "RelationalAttention",
    "RelationalCrossAttention",
    "DisentangledRelationalCrossAttention",
]

_IMPLEMENTATIONS = ("auto", "materialize", "blockwise", "sdpa")


def _check_inputs(owner: str, arguments: dict, d_model: int, relative: bool) -> None:
    """The forward's tensors (x and symbols required, the rest optional); x must be
    [b, n, d_model], symbols [b, n, d_model] or, when relative, [n, n, d_model]."""
    optional = ("symbols", "freqs_cos", "freqs_sin", "attn_mask")
    _check_tensor_arguments(f"{owner}.forward()", arguments, required=("x",), optional=optional)
    x, symbols = arguments["x"], arguments["symbols"]
    _check_sequence_input(x, d_model, owner, "x")
    if symbols is None:
        raise RuntimeError(f"{owner}: symbols are required")
    b, n = x.shape[0], x.shape[1]
    if relative:
        if symbols.shape != (n, n, d_model):
            raise RuntimeError(
                f"{owner}: with use_relative_positional_symbols, symbols must be [{n}, {n}, "
                f"{d_model}] (one symbol per pair of positions), got shape {list(symbols.shape)}"
            )
    elif symbols.shape != (b, n, d_model):
        raise RuntimeError(
            f"{owner}: symbols must be [{b}, {n}, {d_model}] like x, got shape "
            f"{list(symbols.shape)}"
        )


def _grouped_scores(q: torch.Tensor, k: torch.Tensor, scale: float) -> torch.Tensor:
    """<q_i, k_j> * scale per query head: q [b, n, h, d], k [b, m, g, d] -> [b, h, n, m]. Query
    head hh reads kv head hh // (h // g); a group's heads share one matmul (keys never repeated)."""
    b, n, h, d = q.shape
    m, g = k.shape[1], k.shape[2]
    grouped = q.reshape(b, n, g, h // g, d).permute(0, 2, 3, 1, 4).reshape(b, g, h // g * n, d)
    return (torch.matmul(grouped, k.permute(0, 2, 3, 1)) * scale).view(b, h, n, m)


def _attend_symbols(scores: torch.Tensor, sv: torch.Tensor, relative: bool) -> torch.Tensor:
    """sum_j scores[b, h, i, j] sv[b, j, g(h)] (sv[i, j, g(h)] when relative): [b, n, h, hd]."""
    b, h, n, m = scores.shape
    g, head_dim = sv.shape[2], sv.shape[3]
    if relative:
        return torch.einsum("bhij,ijhd->bihd", scores, sv.repeat_interleave(h // g, dim=2))
    out = torch.matmul(scores.reshape(b, g, h // g * n, m), sv.transpose(1, 2))  # [b, g, h/g n, hd]
    return out.view(b, h, n, head_dim).transpose(1, 2)


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
        owner = "RelationalAttention"
        relative = self.use_relative_positional_symbols
        arguments = dict(
            x=x, symbols=symbols, freqs_cos=freqs_cos, freqs_sin=freqs_sin, attn_mask=attn_mask,
            is_causal=is_causal, need_weights=need_weights,
        )
        _check_inputs(owner, arguments, self.d_model, relative)
        b, n = x.shape[0], x.shape[1]
        h, g, R = self.n_heads, self.n_kv_heads, self.n_relations
        rope = _check_rope_inputs(freqs_cos, freqs_sin, n, self.key_dim, owner)
        if attn_mask is not None:  # the module's errors, before the operator's
            attn_mask = _resolve_attn_mask(attn_mask, is_causal, n, n, x.device, owner)

        q = self.wq_attn(x).view(b, n, h, self.key_dim)
        k = self.wk_attn(x).view(b, n, g, self.key_dim)
        if rope:
            q, k = apply_rotary_emb(q, k, freqs_cos, freqs_sin)
        q_rel = self.wq_rel(x).view(b, n, R, self.rel_proj_dim)
        # Symmetric relations: wk_rel is wq_rel, so the relation keys are the relation queries.
        if self.wk_rel is self.wq_rel:
            k_rel = q_rel
        else:
            k_rel = self.wk_rel(x).view(b, n, R, self.rel_proj_dim)
        sv = self.wv(symbols)  # W_s s_j: [b, n, g * hd], or W_s s_ij [n, n, g * hd]
        sv = sv.view(sv.shape[0], sv.shape[1], g, self.head_dim)
        dropout_p = self.attn_dropout.p if self.attn_dropout.training else 0.0

        # A_i^h = sum_j a^h_ij (sum_l r_ijl W_r[h, :, l] + s_j W_s^h), in C++ (dual_attention/ops.h)
        heads, scores, relations = torch.ops.dual_attention.relational_attention(
            q, k, q_rel, k_rel, sv, self.wr, attn_mask, is_causal, relative, self.rel_activation,
            dropout_p, need_weights, self._implementation, self._block_size,
        )  # heads [b, n, h, hd]; scores [b, h, n, n] and relations [b, n, n, R] or empty
        if not torch.compiler.is_compiling():
            self._last_implementation = _C.relational_attention_path(
                self._implementation, q.device, q.dtype, b, n, h, R, self.rel_activation, relative,
                attn_mask is not None, need_weights,
            )
        out = self.resid_dropout(self.wo(heads.reshape(b, n, h * self.head_dim)))
        if not need_weights:
            return out, None, None
        return out, scores, relations

    # Not in the reference: how forward(..., need_weights=False) computes the output. Plain
    # attributes of the module (copied and pickled with it), set through these properties.

    def _to_twin(self, cpp) -> None:
        # KV-cache generation and model analysis run the C++ module: the same path settings.
        cpp._set_implementation(self._implementation)
        cpp._set_block_size(self._block_size)

    def _after_build(self) -> None:
        self._implementation = "auto"
        self._block_size = 128
        self._last_implementation = "materialize"

    @property
    def implementation(self) -> str:
        """How ``forward(..., need_weights=False)`` computes the output: ``'auto'`` (the default:
        ``'sdpa'`` on CUDA for identity relations with per-position symbols, ``'materialize'`` for
        short sequences on the CPU, ``'blockwise'`` otherwise), ``'materialize'`` (the reference's
        ``len x len`` tensors), ``'blockwise'`` (query blocks, memory linear in ``len``) or
        ``'sdpa'`` (one scaled_dot_product_attention; identity relations only). All give the same
        result; ``need_weights=True`` always materialises. Under ``torch.compile`` and
        ``torch.export`` the same, except that with dropout in training ``'auto'`` materialises
        (the blockwise path's two operators stay whole in the graph, and its dropout seed would be
        a constant of it)."""
        return self._implementation

    @implementation.setter
    def implementation(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(
                f"RelationalAttention: implementation must be a str, got {type(value).__name__}"
            )
        if value not in _IMPLEMENTATIONS:
            valid = ", ".join(f"'{name}'" for name in _IMPLEMENTATIONS)
            raise ValueError(
                f"RelationalAttention: implementation must be one of {valid}, got '{value}'"
            )
        self._implementation = value

    @property
    def last_implementation(self) -> str:
        """The path the last eager forward took (``'auto'`` resolved); a compiled forward does not
        update it."""
        return self._last_implementation

    @property
    def block_size(self) -> int:
        """The most query rows per block of the ``'blockwise'`` path (default 128)."""
        return self._block_size

    @block_size.setter
    def block_size(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"RelationalAttention: block_size must be an int, got {type(value).__name__}"
            )
        if value <= 0:
            raise ValueError(f"RelationalAttention: block_size must be positive, got {value}")
        self._block_size = value


def _checked_projections(module, owner, wq, wk, x, symbols, freqs_cos, freqs_sin, attn_mask,
                         is_causal):
    """What both cross-attention ablations start with: their inputs checked, the boolean mask
    ([n, n] or None), q = wq(x) [b, n, h, hd] and k = wk(x) [b, n, g, hd] with RoPE when given, and
    sv = W_v s [b, n, g, hd] ([n, n, g, hd] with relative symbols)."""
    arguments = dict(
        x=x, symbols=symbols, freqs_cos=freqs_cos, freqs_sin=freqs_sin, attn_mask=attn_mask,
        is_causal=is_causal,
    )
    _check_inputs(owner, arguments, module.d_model, module.use_relative_positional_symbols)
    b, n = x.shape[0], x.shape[1]
    h, g, hd = module.n_heads, module.n_kv_heads, module.head_dim
    rope = _check_rope_inputs(freqs_cos, freqs_sin, n, hd, owner)
    mask = _resolve_attn_mask(attn_mask, is_causal, n, n, x.device, owner)
    q = wq(x).view(b, n, h, hd)
    k = wk(x).view(b, n, g, hd)
    if rope:
        q, k = apply_rotary_emb(q, k, freqs_cos, freqs_sin)
    sv = module.wv(symbols)  # [b, n, g * hd], or [n, n, g * hd] when relative
    return mask, q, k, sv.view(sv.shape[0], sv.shape[1], g, hd)


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
        mask, q, k, sv = _checked_projections(
            self, "RelationalCrossAttention", self.wq, self.wk, x, symbols, freqs_cos, freqs_sin,
            attn_mask, is_causal,
        )
        b, n, h, hd = x.shape[0], x.shape[1], self.n_heads, self.head_dim
        relative = self.use_relative_positional_symbols

        # A_i = sum_j act(<q_i, k_j> / sqrt(head_dim)) W_v s_j. Softmax masks with -inf before it;
        # another activation is zeroed after it where the mask is False.
        scores = _grouped_scores(q, k, self.attn_scale)  # [b, h, n, n]
        softmax = self.activation == "softmax"
        if softmax and mask is not None:
            scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        scores = _ACTIVATIONS[self.activation](scores)
        if not softmax and mask is not None:
            scores = scores * mask
        scores = self.attn_dropout(scores)
        heads = _attend_symbols(scores, sv, relative)  # [b, n, h, hd]
        return self.resid_dropout(self.wo(heads.reshape(b, n, h * hd))), scores


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
        mask, q, k, sv = _checked_projections(  # RoPE on the attention pair only, as the reference
            self, "DisentangledRelationalCrossAttention", self.wq_attn, self.wk_attn, x, symbols,
            freqs_cos, freqs_sin, attn_mask, is_causal,
        )
        b, n, h, g, hd = x.shape[0], x.shape[1], self.n_heads, self.n_kv_heads, self.head_dim
        relative = self.use_relative_positional_symbols
        q_rel = self.wq_rel(x).view(b, n, h, hd)
        k_rel = self.wk_rel(x).view(b, n, g, hd)

        # A_i = sum_j softmax_j(<q_i, k_j>) act(<qrel_i, krel_j>) W_v s_j, both scaled by
        # 1/sqrt(head_dim). The relation keys are grouped like the attention keys (the reference
        # fails when 1 < n_kv_heads < n_heads; it agrees wherever it runs).
        attn_scores = _grouped_scores(q, k, self.attn_scale)  # [b, h, n, n]
        if mask is not None:
            attn_scores = attn_scores.masked_fill(mask.logical_not(), float("-inf"))
        attn_scores = torch.softmax(attn_scores, dim=-1)
        rel_scores = _grouped_scores(q_rel, k_rel, self.attn_scale)
        rel_scores = _ACTIVATIONS[self.rel_activation](rel_scores)  # [b, h, n, n]
        heads = _attend_symbols(self.attn_dropout(attn_scores * rel_scores), sv, relative)
        out = self.resid_dropout(self.wo(heads.reshape(b, n, h * hd)))  # heads: [b, n, h, hd]
        return out, attn_scores, rel_scores
