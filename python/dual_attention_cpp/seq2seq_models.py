"""Encoder-decoder models (the C++ ``seq2seq_models.h``; reference:
``dual_attention.seq2seq_models``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _C
from ._module import PretrainedModel
from .language_models import configure_optimizers

__all__ = ["Seq2SeqTransformer", "Seq2SeqDualAttnTransformer", "configure_optimizers"]


class _Seq2SeqModel(PretrainedModel):
    def forward(
        self, x: torch.Tensor, y: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Encodes the source ``x`` and decodes the target ``y`` (token ids ``[batch, len]`` or
        vectors ``[batch, len, dim]``, per input_spec / output_spec).

        Returns ``(logits [batch, len_y, out_dim], loss)`` with ``targets`` (cross-entropy,
        ``loss_ignore_idx`` ignored), or ``(logits of the last position [batch, 1, out_dim], None)``
        without."""
        return self._cpp_call("forward", x, y, targets)

    def get_num_params(self) -> int:
        """Number of parameters (shared tensors once)."""
        return self._cpp.get_num_params()

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
