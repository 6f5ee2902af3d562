"""Activation functions by name (the C++ ``model_utils.h`` table; reference:
``dual_attention.model_utils``)."""

from __future__ import annotations

import torch
from torch import nn

from . import _C

__all__ = ["get_activation_function", "Activation"]


class Activation(nn.Module):
    """An activation function of the library's table, as a module (no parameters)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._function = _C.ActivationFunction(name)
        self.name = name

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._function(input)

    def extra_repr(self) -> str:
        return repr(self.name)

    def __reduce__(self):
        return (Activation, (self.name,))


def get_activation_function(name: str) -> Activation:
    """The activation function called ``name``: one of 'relu', 'sigmoid', 'tanh', 'gelu' (tanh
    approximation), 'silu', 'softmax' (last dim), 'identity'. Returns a callable module; an unknown
    name raises ValueError listing the valid names."""
    return Activation(name)
