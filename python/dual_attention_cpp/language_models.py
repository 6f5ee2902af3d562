"""Decoder-only language models: the Dual Attention Transformer LM and a Transformer LM baseline (the
C++ ``language_models.h``; reference: ``dual_attention.language_models``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from . import _C
from ._module import CppModule, PretrainedModel

__all__ = ["DualAttnTransformerLM", "TransformerLM", "configure_optimizers"]


class _LanguageModel(PretrainedModel):
    def forward(
        self, x: torch.Tensor, targets: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Next-token logits for the token ids ``x`` ``[batch, len]`` (``len <= max_block_size``).

        Returns ``(logits [batch, len, vocab_size], loss)``: the mean cross-entropy against
        ``targets`` ``[batch, len]`` (-1 is ignored), or None without targets.
        """
        return self._cpp_call("forward", x, targets)

    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None
    ) -> torch.Tensor:
        """Appends ``max_new_tokens`` tokens to ``idx`` ``[batch, len]``, each sampled from the
        softmax of the last position's logits divided by ``temperature``, restricted to the
        ``top_k`` largest when given (``top_k=1`` is greedy); the context is cropped to the last
        ``max_block_size`` tokens. Runs without gradients; call ``eval()`` first. Returns
        ``[batch, len + max_new_tokens]``."""
        return self._cpp_call("generate", idx, max_new_tokens, temperature, top_k)

    def get_num_params(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors once); ``non_embedding`` leaves out the positional
        embedding."""
        return self._cpp.get_num_params(non_embedding)

    def estimate_mfu(self, fwdbwd_per_iter, dt) -> int:
        """A placeholder, as in the reference: returns -1."""
        return -1


class DualAttnTransformerLM(_LanguageModel, cpp=_C.DualAttnTransformerLM):
    """Dual Attention Transformer language model: token embedding, a stack of causal
    ``DualAttnEncoderBlock`` layers fed by a symbol retriever, a final norm and an output layer
    tied to the token embedding.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size.
    d_model : int
        Model dimension.
    n_layers : int
        Number of layers.
    n_heads_sa : int
        Self-attention heads of each dual attention layer.
    n_heads_ra : int
        Relational heads of each dual attention layer.
    symbol_retrieval_kwargs : dict
        Keywords of the symbol retriever.
    dff : int
        Hidden width of the feed-forward blocks (None: their default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward blocks (an activation name, or 'swiglu').
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    max_block_size : int
        Longest input (context length).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    sa_kwargs : dict, optional
        Keywords of the self-attention heads.
    ra_kwargs : dict, optional
        Keywords of the relational heads.
    ra_type : str, optional
        'relational_attention' (default), 'rca' or 'disrca'.
    share_attn_params : bool, optional
        Share the attention query/key projections of both kinds of heads. Default False.
    symbol_retrieval : str, optional
        'symbolic_attention' (default), 'positional_symbols' or 'position_relative'.
    symbol_retriever_config : dict, optional
        ``{'shared_symbol_retriever': bool, 'weight_tie_symbol_library': bool}``: one retriever for
        all layers (default), or one per layer, optionally sharing one symbol library.
    pos_enc_type : str, optional
        'pos_emb' (learned positional embedding, default) or 'RoPE'.
    bias : bool, optional
        Stored; unused, as in the reference. Default True.
    """


class TransformerLM(_LanguageModel, cpp=_C.TransformerLM):
    """Transformer language model, the baseline of the Dual Attention Transformer LM.

    Parameters
    ----------
    vocab_size : int
        Vocabulary size.
    d_model : int
        Model dimension.
    n_layers : int
        Number of layers.
    n_heads : int
        Attention heads of each layer.
    dff : int
        Hidden width of the feed-forward blocks (None: their default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward blocks (an activation name, or 'swiglu').
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    max_block_size : int
        Longest input (context length).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias of the attention output projections and feed-forward layers. Default True.
    pos_enc_type : str, optional
        'pos_emb' (default) or 'RoPE'.
    use_flash_attention : bool, optional
        False computes attention on the explicit-weights path. Default True.
    block_kwargs : dict, optional
        Extra keywords of the encoder blocks (e.g. ``attn_kwargs``).
    """


def configure_optimizers(model: nn.Module, weight_decay: float, learning_rate: float, betas, device_type: str):
    """``torch.optim.AdamW`` over the model's trainable parameters in two groups: tensors of
    dimension >= 2 (matmul weights, embeddings) decay by ``weight_decay``, the others do not; fused
    when ``device_type == 'cuda'``. The grouping is the C++ library's; ``model`` must be a module
    of this package."""
    if not isinstance(model, CppModule):
        raise TypeError(
            f"configure_optimizers: model must be a dual_attention_cpp module, got {type(model).__name__}"
        )
    groups = [{"params": params, "weight_decay": decay} for params, decay in _C.optimizer_groups(model.cpp_module, weight_decay)]
    decay, nodecay = groups[0]["params"], groups[1]["params"]
    print(f"num decayed parameter tensors: {len(decay)}, with {sum(p.numel() for p in decay):,} parameters")
    print(f"num non-decayed parameter tensors: {len(nodecay)}, with {sum(p.numel() for p in nodecay):,} parameters")
    use_fused = device_type == "cuda"
    optimizer = torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=use_fused)
    print(f"using fused AdamW: {use_fused}")
    return optimizer
