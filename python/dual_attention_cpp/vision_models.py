"""Vision Transformers (the C++ ``vision_models.h``; reference: ``dual_attention.vision_models``)."""

from __future__ import annotations

import torch
from torch import nn

from . import _C
from ._module import PretrainedModel
from .language_models import configure_optimizers

__all__ = ["VisionTransformer", "VisionDualAttnTransformer", "configure_optimizers"]


class Rearrange(nn.Module):
    """The first layer of ``to_patch_embedding``: einops' ``Rearrange('b c (h p1) (w p2) -> b (h w)
    (p1 p2 c)', p1=patch_height, p2=patch_width)`` (the reference's layer, printed as it prints),
    written with torch operations: images ``[b, c, H, W]`` to patches ``[b, n, p1 * p2 * c]``, row
    by row, each patch's pixels row by row with their channels innermost."""

    pattern = "b c (h p1) (w p2) -> b (h w) (p1 p2 c)"

    def __init__(self, p1: int, p2: int) -> None:
        super().__init__()
        self.p1 = p1
        self.p2 = p2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        h, w = height // self.p1, width // self.p2
        x = x.reshape(b, c, h, self.p1, w, self.p2)
        x = x.permute(0, 2, 4, 3, 5, 1)  # [b, h, w, p1, p2, c]
        return x.reshape(b, h * w, self.p1 * self.p2 * c)

    def extra_repr(self) -> str:
        return f"{self.pattern!r}, p1={self.p1}, p2={self.p2}"


class _VisionModel(PretrainedModel):
    def _after_build(self) -> None:
        # The C++ patch layer is a torch::nn::Functional (a lambda), which has no Python module.
        self.to_patch_embedding[0] = Rearrange(p1=self.patch_height, p2=self.patch_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, num_classes]`` for images ``x`` ``[batch, channels, H, W]``."""
        self._check_image(x)
        h = self.to_patch_embedding(x)  # [b, n, d]
        b, n = h.shape[0], h.shape[1]
        h = torch.cat((self.cls_token.expand(b, 1, -1), h), dim=1)  # [b, n + 1, d]
        h = self.dropout(h + self.pos_embedding[:, : n + 1])
        if "symbol_retriever" in self._modules:  # VisionDualAttnTransformer
            for block in self.encoder_blocks:
                h = block(h, self.symbol_retriever(h))  # [b, n + 1, d]
        else:
            for block in self.encoder_blocks:
                h = block(h)  # [b, n + 1, d]
        h = h[:, 0] if self.pool == "cls" else h.mean(dim=1)  # [b, d]
        return self.final_out(h)  # [b, num_classes]

    def _check_image(self, x: torch.Tensor) -> None:
        # An image the reference can take: [b, channels, H, W] cut into whole patches, at most
        # num_patches of them (the positional embedding's length).
        owner = self._get_name()
        if x.dim() != 4:
            raise RuntimeError(
                f"{owner}: x must be images [batch, channels, height, width], got a tensor of "
                f"shape {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise RuntimeError(
                f"{owner}: x must be a floating-point tensor, got dtype {x.dtype}"
            )
        shape = list(x.shape)
        if x.shape[1] != self.img_channels:
            raise RuntimeError(
                f"{owner}: x has {x.shape[1]} channels (shape {shape}), expected "
                f"{self.img_channels}"
            )
        if x.shape[2] % self.patch_height != 0 or x.shape[3] % self.patch_width != 0:
            raise RuntimeError(
                f"{owner}: x of shape {shape} does not split into patches: its height must be a "
                f"multiple of patch_height ({self.patch_height}) and its width of patch_width "
                f"({self.patch_width})"
            )
        n = (x.shape[2] // self.patch_height) * (x.shape[3] // self.patch_width)
        if n > self.num_patches:
            raise RuntimeError(
                f"{owner}: x of shape {shape} has {n} patches, more than the model's "
                f"{self.num_patches} (image_shape: height {self.img_height}, width "
                f"{self.img_width})"
            )

    def get_num_params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


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
