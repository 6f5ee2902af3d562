"""Encoder-decoder models (the C++ ``seq2seq_models.h``; reference:
``dual_attention.seq2seq_models``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import _C
from ._module import PretrainedModel
from .language_models import configure_optimizers

__all__ = ["Seq2SeqTransformer", "Seq2SeqDualAttnTransformer", "configure_optimizers"]


def _check_sequence(
    t: torch.Tensor, spec: dict, block_size: int, argument: str, block_argument: str, owner: str
) -> None:
    """``x`` or ``y``: token ids ``[b, len]`` in ``[0, vocab_size)`` or vectors ``[b, len, dim]``
    (per the spec), ``1 <= len <= block_size``. Token ids are range-checked in eager mode only (it
    reads the values, which torch.compile and torch.export cannot trace)."""
    shape = list(t.shape)
    if spec["type"] == "token":
        if t.dim() != 2:
            raise RuntimeError(
                f"{owner}: {argument} must be token ids [batch, len], got a tensor of shape {shape}"
            )
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise RuntimeError(
                f"{owner}: {argument} must hold integer token ids, got dtype {t.dtype}"
            )
        if t.numel() > 0 and not torch.compiler.is_compiling():
            lo, hi = torch.stack(torch.aminmax(t)).tolist()
            vocab_size = spec["vocab_size"]
            if lo < 0 or hi >= vocab_size:
                raise RuntimeError(
                    f"{owner}: {argument} holds token ids in [{lo}, {hi}], expected ids in "
                    f"[0, {vocab_size - 1}] (vocab_size {vocab_size})"
                )
    else:
        dim = spec["dim"]
        if t.dim() != 3 or t.shape[2] != dim:
            raise RuntimeError(
                f"{owner}: {argument} must be vectors [batch, len, {dim}], got a tensor of shape "
                f"{shape}"
            )
        if not t.is_floating_point():
            raise RuntimeError(
                f"{owner}: {argument} must be a floating-point tensor, got dtype {t.dtype}"
            )
    if t.shape[1] < 1:
        raise RuntimeError(f"{owner}: {argument} must not be empty, got a tensor of shape {shape}")
    if t.shape[1] > block_size:
        raise RuntimeError(
            f"{owner}: {argument} has length {t.shape[1]}, longer than {block_argument} "
            f"({block_size})"
        )


def _check_targets(
    targets: torch.Tensor, batch: int, length: int, out_dim: int, ignore_index: int, owner: str
) -> None:
    """One integer class id per target position, in ``[0, out_dim)`` or ``ignore_index`` (the
    range in eager mode only)."""
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise RuntimeError(
            f"{owner}: targets must hold integer class ids, got dtype {targets.dtype}"
        )
    if targets.numel() != batch * length:
        raise RuntimeError(
            f"{owner}: targets must hold one class id per target position (batch {batch} x "
            f"length {length}), got shape {list(targets.shape)}"
        )
    if torch.compiler.is_compiling():
        return
    kept = targets[targets != ignore_index]
    if kept.numel() > 0:
        lo, hi = torch.stack(torch.aminmax(kept)).tolist()
        if lo < 0 or hi >= out_dim:
            raise RuntimeError(
                f"{owner}: targets hold class ids in [{lo}, {hi}], expected ids in "
                f"[0, {out_dim - 1}] or loss_ignore_idx ({ignore_index})"
            )


class _Seq2SeqModel(PretrainedModel):
    def forward(
        self, x: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Encodes the source ``x`` and decodes the target ``y`` (token ids ``[batch, len]`` or
        vectors ``[batch, len, dim]``, per input_spec / output_spec).

        Returns ``(logits [batch, len_y, out_dim], loss)`` with ``targets`` (cross-entropy,
        ``loss_ignore_idx`` ignored), or ``(logits of the last position [batch, 1, out_dim], None)``
        without."""
        owner = self._get_name()
        _check_sequence(x, self.input_spec, self.in_block_size, "x", "in_block_size", owner)
        _check_sequence(y, self.output_spec, self.out_block_size, "y", "out_block_size", owner)
        if x.shape[0] != y.shape[0]:
            raise RuntimeError(
                f"{owner}: x and y must have the same batch size, got {x.shape[0]} and {y.shape[0]}"
            )
        layers = self.layers
        x = layers.source_pos_embedder(layers.source_embedder(x))  # [b, n, d]
        y = layers.target_pos_embedder(layers.target_embedder(y))  # [b, m, d]
        if "symbol_retriever" in layers:  # Seq2SeqDualAttnTransformer: one retriever for all
            for block in layers.encoder_blocks:
                x = block(x, layers.symbol_retriever(x))  # [b, n, d]
            for block in layers.decoder_blocks:
                y = block(y, x, symbols=layers.symbol_retriever(y))  # [b, m, d]
        else:
            for block in layers.encoder_blocks:
                x = block(x)  # [b, n, d]
            for block in layers.decoder_blocks:
                y = block(y, x)  # [b, m, d]
        if targets is None:  # the last position only, as the reference
            return layers.final_out(y[:, -1:]), None  # [b, 1, out_dim]
        logits = layers.final_out(y)  # [b, m, out_dim]
        out_dim = logits.shape[-1]
        _check_targets(targets, y.shape[0], y.shape[1], out_dim, self.loss_ignore_idx, owner)
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, out_dim), targets.reshape(-1).long(),
            ignore_index=self.loss_ignore_idx,
        )
        return logits, loss

    def get_num_params(self) -> int:
        """Number of parameters (shared tensors once)."""
        return sum(p.numel() for p in self.parameters())

    def estimate_mfu(self, fwdbwd_per_iter, dt) -> float:
        """A placeholder, as in the reference: returns -1.0."""
        return -1.0


class Seq2SeqTransformer(_Seq2SeqModel, cpp=_C.Seq2SeqTransformer):
    """Encoder-decoder Transformer.

    Parameters
    ----------
    input_spec : dict
        Source format: ``{'type': 'token', 'vocab_size': int}`` or ``{'type': 'vector', 'dim': int}``.
    output_spec : dict
        Target format, as input_spec.
    d_model : int
        Model dimension.
    out_dim : int
        Output dimension (number of classes).
    n_layers_enc : int
        Number of encoder layers.
    n_layers_dec : int
        Number of decoder layers.
    encoder_kwargs : dict
        Keywords of the encoder blocks (``EncoderBlock``).
    decoder_kwargs : dict
        Keywords of the decoder blocks (``DecoderBlock``).
    in_block_size : int
        Longest source.
    out_block_size : int
        Longest target.
    tie_weights : bool, optional
        Registers the output layer under the target embedder as the reference does (which ties
        nothing). Default True.
    loss_ignore_idx : int, optional
        Target value ignored by the loss. Default -1.
    """


class Seq2SeqDualAttnTransformer(_Seq2SeqModel, cpp=_C.Seq2SeqDualAttnTransformer):
    """Encoder-decoder Dual Attention Transformer.

    Parameters
    ----------
    input_spec : dict
        Source format: ``{'type': 'token', 'vocab_size': int}`` or ``{'type': 'vector', 'dim': int}``.
    output_spec : dict
        Target format, as input_spec.
    symbol_retrieval : str
        'symbolic_attention', 'rel_sym_attn', 'positional_symbols' or 'position_relative'.
    symbol_retrieval_kwargs : dict
        Keywords of the symbol retriever.
    d_model : int
        Model dimension.
    out_dim : int
        Output dimension (number of classes).
    n_layers_enc : int
        Number of encoder layers.
    n_layers_dec : int
        Number of decoder layers (the reference builds n_layers_enc decoder layers; so do we).
    encoder_kwargs : dict
        Keywords of the encoder blocks (``DualAttnEncoderBlock``).
    decoder_kwargs : dict
        Keywords of the decoder blocks (``DualAttnDecoderBlock``).
    in_block_size : int
        Longest source.
    out_block_size : int
        Longest target.
    tie_weights : bool, optional
        As for Seq2SeqTransformer. Default True.
    loss_ignore_idx : int, optional
        Target value ignored by the loss. Default -1.
    """
