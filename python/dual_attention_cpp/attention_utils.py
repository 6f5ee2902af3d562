"""Helpers shared by the attention mechanisms (the C++ ``attention_utils.h``; reference:
``dual_attention.attention_utils``)."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

from . import _C

__all__ = [
    "repeat_kv",
    "precompute_freqs_cis",
    "apply_rotary_emb",
    "compute_causal_mask",
    "compute_diag_mask",
]


def _device(device: Union[torch.device, str, int, None]) -> torch.device:
    return torch.get_default_device() if device is None else torch.device(device)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Grouped-query attention: ``[b, s, n_kv_heads, d] -> [b, s, n_kv_heads * n_rep, d]``, each
    key/value head repeated ``n_rep`` times consecutively (``torch.repeat_interleave`` on dim 2)."""
    return _C.repeat_kv(x, n_rep)


def precompute_freqs_cis(dim: int, end: int, theta: float = 10000.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """RoPE tables for interleaved pairs: ``freqs[t, i] = t * theta ** (-2i / dim)``, returned as
    ``(cos, sin)``, each ``[end, dim // 2]`` in float32."""
    return _C.precompute_freqs_cis(dim, end, theta)


def apply_rotary_emb(
    xq: torch.Tensor, xk: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotates ``xq`` and ``xk`` (``[b, s, h, d]``) by the angles of ``(freqs_cos, freqs_sin)``
    (``[s, d // 2]``); dims ``2i, 2i + 1`` form one complex number. Returns tensors of the inputs'
    dtypes."""
    return _C.apply_rotary_emb(xq, xk, freqs_cos, freqs_sin)


def compute_causal_mask(size: int, device: Union[torch.device, str, int, None] = None) -> torch.Tensor:
    """Boolean ``[size, size]`` mask, True at ``(i, j)`` when ``j <= i`` (``i`` may attend to ``j``)."""
    return _C.compute_causal_mask(size, _device(device))


def compute_diag_mask(size: int, device: Union[torch.device, str, int, None] = None) -> torch.Tensor:
    """Boolean ``[size, size]`` mask, False on the diagonal and True elsewhere."""
    return _C.compute_diag_mask(size, _device(device))
