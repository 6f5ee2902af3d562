"""Activation functions by name (the C++ ``model_utils.h`` table; reference:
``dual_attention.model_utils``)."""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn
from torch.nn import functional as F

from . import _C

__all__ = ["get_activation_function", "Activation"]


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _softmax_last_dim(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=-1)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# The functions of the C++ table (model_utils.cpp), in torch so that forwards using them compile.
_FUNCTIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "gelu": _gelu_tanh,
    "silu": F.silu,
    "softmax": _softmax_last_dim,
    "identity": _identity,
}
# The C++ table is the one list of names (and its order, for the error message).
_NAMES = tuple(_C.activation_names())
assert set(_NAMES) == set(_FUNCTIONS), f"activation tables differ: C++ {_NAMES}, Python {tuple(_FUNCTIONS)}"


class Activation(nn.Module):
    """An activation function of the library's table, as a module (no parameters)."""

    def __init__(self, name: str) -> None:
        super().__init__()
        if name not in _FUNCTIONS:
            valid = ", ".join(f"'{n}'" for n in _NAMES)
            raise ValueError(f"name '{name}' is not a known activation; expected one of {valid}")
        self.name = name
        self._function = _FUNCTIONS[name]

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
