"""Vision Transformers (the C++ ``vision_models.h``; reference: ``dual_attention.vision_models``)."""

from __future__ import annotations

from . import _C
from ._module import PretrainedModel, cpp_forward
from .language_models import configure_optimizers

__all__ = ["VisionTransformer", "VisionDualAttnTransformer", "configure_optimizers"]


class _VisionModel(PretrainedModel):
    forward = cpp_forward(
        """Class logits ``[batch, num_classes]`` for images ``x`` ``[batch, channels, H, W]``."""
    )

    def get_num_params(self) -> int:
        """Number of parameters."""
        return self._cpp.get_num_params()


class VisionTransformer(_VisionModel, cpp=_C.VisionTransformer):
    """Vision Transformer: patches (LayerNorm, Linear, LayerNorm), a class token, learned positions,
    encoder blocks, pooling and a classifier.

    Parameters
    ----------
    image_shape : Tuple[int]
        Image shape (channels, width, height).
    patch_size : Tuple[int]
        Patch size (width, height).
    num_classes : int
        Number of classes.
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
        Activation of the feed-forward blocks.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias of the attention output projections and feed-forward layers. Default True.
    pool : str, optional
        'cls' (the class token, default) or 'mean'.
    """


class VisionDualAttnTransformer(_VisionModel, cpp=_C.VisionDualAttnTransformer):
    """Vision Dual Attention Transformer: a Vision Transformer whose layers are dual attention
    encoder blocks fed by a symbol retriever.

    Parameters
    ----------
    image_shape : Tuple[int]
        Image shape (channels, width, height).
    patch_size : Tuple[int]
        Patch size (width, height).
    num_classes : int
        Number of classes.
    d_model : int
        Model dimension.
    n_layers : int
        Number of layers.
    n_heads_sa : int
        Self-attention heads of each layer.
    n_heads_ra : int
        Relational heads of each layer.
    dff : int
        Hidden width of the feed-forward blocks (None: their default).
    dropout_rate : float
        Dropout rate.
    activation : str
        Activation of the feed-forward blocks.
    norm_first : bool
        Pre-norm (True) or post-norm (False).
    symbol_retrieval : str
        'symbolic_attention', 'rel_sym_attn', 'positional_symbols' or 'position_relative'.
    symbol_retrieval_kwargs : dict
        Keywords of the symbol retriever.
    ra_type : str, optional
        'relational_attention' (default), 'rca' or 'disrca'.
    ra_kwargs : dict, optional
        Keywords of the relational heads.
    sa_kwargs : dict, optional
        Keywords of the self-attention heads.
    norm_type : str, optional
        'layernorm' (default), 'rmsnorm' or 'none'.
    bias : bool, optional
        Bias of the feed-forward layers. Default True.
    pool : str, optional
        'cls' (default) or 'mean'.
    """
