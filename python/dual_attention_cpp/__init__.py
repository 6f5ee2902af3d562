"""dual_attention_cpp: the Dual Attention Transformer in C++ (LibTorch), for Python.

A drop-in for the reference package ``dual_attention`` (0.0.7): the same modules, class names,
constructor keywords, forward signatures, returns and state_dict keys, so that code written for it
runs after changing the import. Every class is a ``torch.nn.Module`` that owns its parameters and
composes in Python, with the heavy maths in C++ operators (``torch.ops.dual_attention.*``; see
docs/python.md).
"""

import torch  # noqa: F401  (loads libtorch before the extension)

from . import _C  # noqa: F401
from . import (
    attention,
    attention_utils,
    dual_attention,
    dual_attn_blocks,
    hf,
    language_models,
    model_utils,
    positional_encoding,
    relational_attention,
    seq2seq_models,
    symbol_retrieval,
    tokenizer,
    transformer_blocks,
    vision_models,
)
from .attention import Attention
from .dual_attention import DualAttention
from .dual_attn_blocks import DualAttnDecoderBlock, DualAttnEncoderBlock
from .hf import DualAttnTransformerLM_HFHub, TransformerLM_HFHub
from .language_models import DualAttnTransformerLM, TransformerLM
from .positional_encoding import (
    LearnedPositionalEmbeddings,
    RelativePositionalEncoding,
    SinusoidalPositionalEncoding,
)
from .relational_attention import (
    DisentangledRelationalCrossAttention,
    RelationalAttention,
    RelationalCrossAttention,
)
from .symbol_retrieval import (
    PositionalSymbolRetriever,
    PositionRelativeSymbolRetriever,
    RelationalSymbolicAttention,
    SymbolicAttention,
)
from .seq2seq_models import Seq2SeqDualAttnTransformer, Seq2SeqTransformer
from .transformer_blocks import DecoderBlock, EncoderBlock, FeedForwardBlock, RMSNorm
from .vision_models import VisionDualAttnTransformer, VisionTransformer

__version__ = "0.1.0"

# The modules of the reference package that this one mirrors, and ours beyond them (tokenizer:
# tiktoken's interface); gen_stubs.py writes a stub for each.
_submodules = (
    "attention",
    "relational_attention",
    "dual_attention",
    "symbol_retrieval",
    "positional_encoding",
    "transformer_blocks",
    "dual_attn_blocks",
    "language_models",
    "seq2seq_models",
    "vision_models",
    "attention_utils",
    "model_utils",
    "hf",
    "tokenizer",
)

__all__ = [
    "Attention",
    "RelationalAttention",
    "RelationalCrossAttention",
    "DisentangledRelationalCrossAttention",
    "DualAttention",
    "SymbolicAttention",
    "PositionalSymbolRetriever",
    "PositionRelativeSymbolRetriever",
    "RelationalSymbolicAttention",
    "SinusoidalPositionalEncoding",
    "LearnedPositionalEmbeddings",
    "RelativePositionalEncoding",
    "FeedForwardBlock",
    "RMSNorm",
    "EncoderBlock",
    "DecoderBlock",
    "DualAttnEncoderBlock",
    "DualAttnDecoderBlock",
    "DualAttnTransformerLM",
    "TransformerLM",
    "Seq2SeqTransformer",
    "Seq2SeqDualAttnTransformer",
    "VisionTransformer",
    "VisionDualAttnTransformer",
    "DualAttnTransformerLM_HFHub",
    "TransformerLM_HFHub",
]
