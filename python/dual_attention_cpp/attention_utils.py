"""Helpers shared by the attention mechanisms (the C++ ``attention_utils.h``; reference:
``dual_attention.attention_utils``).

Written with torch operations, so that the modules' forwards can call them under ``torch.compile``
and ``torch.export``; they compute what the C++ functions of the same names compute, and raise
``RuntimeError`` with the C++ messages.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "repeat_kv",
    "precompute_freqs_cis",
    "apply_rotary_emb",
    "compute_causal_mask",
    "compute_diag_mask",
]


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``[b, s, n_kv_heads, d] -> [b, s, n_kv_heads * n_rep, d]``, each
    key/value head repeated ``n_rep`` times consecutively (``torch.repeat_interleave`` on dim 2)."""
    if x.dim() != 4:
        raise RuntimeError(
            f"repeat_kv: x must be [batch, len, n_kv_heads, head_dim], got shape {list(x.shape)}"
        )
    if n_rep < 1:
        raise RuntimeError(f"repeat_kv: n_rep must be >= 1, got {n_rep}")
    if n_rep == 1:
        return x
    b, s, h, d = x.shape
    return x.unsqueeze(3).expand(b, s, h, n_rep, d).reshape(b, s, h * n_rep, d)


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for interleaved pairs: ``freqs[t, i] = t * theta ** (-2i / dim)``, returned as
    ``(cos, sin)``, each ``[end, dim // 2]`` in float32."""
    if dim <= 0 or dim % 2 != 0:
        raise RuntimeError(f"precompute_freqs_cis: dim must be a positive even number, got {dim}")
    if end < 0:
        raise RuntimeError(f"precompute_freqs_cis: end must be >= 0, got {end}")
    # theta^(-2i/dim), computed as the reference does: 1 / theta ** (arange(0, dim, 2) / dim).
    freqs = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.outer(torch.arange(end, dtype=torch.float32), freqs)  # [end, dim / 2]
    return torch.cos(angles), torch.sin(angles)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotates ``xq`` and ``xk`` (``[b, s, h, d]``) by the angles of ``(freqs_cos, freqs_sin)``:
    ``[s, d // 2]``, or ``[b, s, d // 2]`` for angles that differ per row (left-padded batches);
    dims ``2i, 2i + 1`` form one complex number. Computed in float32 (float64 for float64 inputs)
    and returned in the inputs' dtypes."""
    if xq.dim() != 4 or xk.dim() != 4:
        raise RuntimeError(
            "apply_rotary_emb: xq and xk must be [batch, len, heads, dim], got shapes "
            f"{list(xq.shape)} and {list(xk.shape)}"
        )
    if xq.size(-1) % 2 != 0:
        raise RuntimeError(f"apply_rotary_emb: the last dim must be even, got {xq.size(-1)}")
    if freqs_cos.dim() not in (2, 3):
        raise RuntimeError(
            "apply_rotary_emb: freqs_cos/freqs_sin must be [len, dim / 2] or [batch, len, dim / 2], "
            f"got {list(freqs_cos.shape)}"
        )
    compute = torch.float64 if xq.dtype == torch.float64 else torch.float32
    per_row = freqs_cos.dim() == 3
    # [len, d/2] -> [1, len, 1, d/2]; per-row angles [b, len, d/2] -> [b, len, 1, d/2]
    cos = freqs_cos.to(compute).unsqueeze(-2)
    sin = freqs_sin.to(compute).unsqueeze(-2)
    if not per_row:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)

    def rotate(x: torch.Tensor) -> torch.Tensor:
        rows = not per_row or cos.size(0) == x.size(0)
        if cos.size(1) != x.size(1) or 2 * cos.size(3) != x.size(3) or not rows:
            raise RuntimeError(
                f"apply_rotary_emb: freqs_cos/freqs_sin must be [{x.size(1)}, {x.size(3) // 2}] (or "
                f"[{x.size(0)}, {x.size(1)}, {x.size(3) // 2}]), got {list(freqs_cos.shape)}"
            )
        re, im = x.to(compute).unflatten(-1, (-1, 2)).unbind(-1)  # [b, s, h, d/2] each
        out = torch.stack((re * cos - im * sin, re * sin + im * cos), dim=-1).flatten(3)
        return out.to(x.dtype)

    return rotate(xq), rotate(xk)


def compute_causal_mask(size: int, device: Union[torch.device, str, int, None] = None) -> torch.Tensor:
    """Boolean ``[size, size]`` mask, True at ``(i, j)`` when ``j <= i`` (``i`` may attend to ``j``)."""
    return torch.ones(size, size, dtype=torch.bool, device=device).tril()


def compute_diag_mask(size: int, device: Union[torch.device, str, int, None] = None) -> torch.Tensor:
    """Boolean ``[size, size]`` mask, False on the diagonal and True elsewhere."""
    return torch.eye(size, dtype=torch.bool, device=device).logical_not()


# ---- argument checks of the attention forwards (the C++ detail:: helpers, with their messages) ----


def _check_tensor_arguments(
    where: str, arguments: Dict[str, Any], required: Sequence[str], optional: Sequence[str] = ()
) -> None:
    """The arguments named in ``required`` must be tensors, those in ``optional`` tensors or None.
    The TypeError lists the type of every argument (as pybind11 did when forwards ran in C++)."""
    for name in (*required, *optional):
        value = arguments[name]
        if isinstance(value, torch.Tensor) or (value is None and name in optional):
            continue
        got = ", ".join(
            f"Tensor{list(a.shape)} {a.dtype}" if isinstance(a, torch.Tensor) else type(a).__name__
            for a in arguments.values()
        )
        expected = "a tensor or None" if name in optional else "a tensor"
        raise TypeError(
            f"{where} got incompatible arguments ({got}); {name} must be {expected}, got "
            f"{type(value).__name__}"
        )


def _check_sequence_input(x: torch.Tensor, width: int, owner: str, argument: str) -> None:
    """``x`` must be ``[batch, len, width]``; ``argument`` names it in the error."""
    if x is None:
        raise RuntimeError(f"{owner}: {argument} is required")
    if x.dim() != 3:
        raise RuntimeError(
            f"{owner}: {argument} must be [batch, len, {width}], got a tensor of shape {list(x.shape)}"
        )
    if x.size(2) != width:
        raise RuntimeError(f"{owner}: {argument} must have last dim {width}, got shape {list(x.shape)}")


def _check_rope_inputs(
    freqs_cos: Optional[torch.Tensor],
    freqs_sin: Optional[torch.Tensor],
    length: int,
    rotary_dim: int,
    owner: str,
) -> bool:
    """RoPE arguments: both or neither, each ``[length, rotary_dim // 2]``. True when RoPE applies."""
    if (freqs_cos is None) != (freqs_sin is None):
        raise RuntimeError(f"{owner}: freqs_cos and freqs_sin must be given together")
    if freqs_cos is None:
        return False
    if rotary_dim % 2 != 0:
        raise RuntimeError(f"{owner}: RoPE needs an even key dim, got {rotary_dim}")
    for f in (freqs_cos, freqs_sin):
        if f.dim() != 2 or f.size(0) != length or f.size(1) != rotary_dim // 2:
            raise RuntimeError(
                f"{owner}: freqs_cos and freqs_sin must be [{length}, {rotary_dim // 2}], got "
                f"{list(f.shape)}"
            )
    return True


def _resolve_attn_mask(
    attn_mask: Optional[torch.Tensor],
    is_causal: bool,
    q_len: int,
    k_len: int,
    device: torch.device,
    owner: str,
) -> Optional[torch.Tensor]:
    """The boolean mask to apply (``[q_len, k_len]``, True = may attend), or None for no mask:
    ``attn_mask`` checked, or the causal mask (top-left aligned, as scaled_dot_product_attention's
    when ``q_len != k_len``) for ``is_causal``."""
    if attn_mask is not None:
        if is_causal:
            raise RuntimeError(
                f"{owner}: attn_mask and is_causal=true were both given; pass one of them "
                "(is_causal builds the causal mask itself)"
            )
        if attn_mask.dtype != torch.bool:
            raise RuntimeError(
                f"{owner}: attn_mask must be a boolean tensor (True = may attend), got dtype "
                f"{attn_mask.dtype}"
            )
        if attn_mask.dim() != 2 or attn_mask.size(0) != q_len or attn_mask.size(1) != k_len:
            raise RuntimeError(
                f"{owner}: attn_mask must have shape [{q_len}, {k_len}], got {list(attn_mask.shape)}"
            )
        return attn_mask.to(device)
    if is_causal:
        return torch.ones(q_len, k_len, dtype=torch.bool, device=device).tril()
    return None
