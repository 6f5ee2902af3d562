"""The mirror: a ``torch.nn.Module`` that owns a C++ module and shares its tensors.

Each class of the package (``Attention``, ``DualAttention``, ...) is a ``CppModule``: constructing it
builds the LibTorch module from the keywords (the C++ Options hold the defaults) and then mirrors the
C++ module tree in Python. Every C++ submodule gets a Python child (one object where C++ registers one
module under two names), and the children's ``_parameters`` / ``_buffers`` hold the very tensors the
C++ module computes with (the same TensorImpl; parameters are re-classed to ``nn.Parameter`` in place).
So everything ``nn.Module`` does by walking its tree (parameters(), state_dict(), load_state_dict(),
zero_grad(), optimizers, nesting in a Python module) acts on what the C++ forward uses. Three things
need care, and are handled here:

- conversions (``.to()``, ``.double()``, ``.cuda()``, ...) change each tensor's data in place
  (``tensor.data = converted``), whatever the ``torch.__future__`` flags say, so that C++ keeps using
  the same tensors;
- ``load_state_dict`` copies in place (with ``assign=True`` the module's tensors take the given tensors'
  data, dtype and device instead of being replaced);
- the training flags are copied to the C++ modules before each forward when any changed.

Replacing a mirrored parameter, buffer or submodule by another object is an error: the C++ module
could not see the new one. See docs/python.md for the design.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import os
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from torch import nn

from . import _C

__all__ = ["CppModule", "PretrainedModel", "cpp_forward"]

# pybind11 class of a C++ module -> the Python class that mirrors it.
_MIRROR_CLASSES: Dict[type, type] = {}

# Instance attributes the mirror manages itself (never copied as user state).
_MIRROR_STATE = frozenset(
    {"_cpp", "_tree", "_mirrored", "_cpp_attr_names", "training"}
)


class _Tree:
    """What the mirrors of one C++ module tree share: the (mirror, C++ module) pairs in preorder and
    whether a training flag changed since the C++ modules last saw them."""

    __slots__ = ("pairs", "dirty")

    def __init__(self) -> None:
        self.pairs: list = []
        self.dirty = False

    def sync_training(self) -> None:
        # C++ train(on) is recursive; visiting parents before children leaves each module with
        # its own Python flag.
        for mirror, cpp in self.pairs:
            if cpp._is_training() != mirror.training:
                cpp._set_training(mirror.training)
        self.dirty = False


def _as_parameter(tensor: torch.Tensor) -> torch.Tensor:
    # The C++ module's tensor itself becomes an nn.Parameter: no copy, one TensorImpl.
    if type(tensor) is torch.Tensor:
        tensor.__class__ = nn.Parameter
    return tensor


@contextlib.contextmanager
def _no_swap_on_conversion():
    # torch.utils.swap_tensors cannot swap a tensor C++ also holds; in-place paths are used instead.
    saved = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(False)
    try:
        yield
    finally:
        torch.__future__.set_swap_module_params_on_conversion(saved)


def _mirror(module: "CppModule", cpp: Any, tree: _Tree, seen: Dict[int, "CppModule"]) -> None:
    """Makes `module` (created without __init__) the mirror of `cpp`, recursively."""
    nn.Module.__init__(module)
    d = module.__dict__
    d["_cpp"] = cpp
    d["_tree"] = tree
    d["training"] = cpp._is_training()
    tree.pairs.append((module, cpp))
    seen[cpp._id()] = module

    attrs = cpp._attrs() if hasattr(cpp, "_attrs") else {}  # a C++ module type not bound: none
    for name, value in attrs.items():
        d[name] = value
    for name, tensor in cpp._named_parameters():
        module._parameters[name] = _as_parameter(tensor)
    for name in type(module)._optional_parameters:
        module._parameters.setdefault(name, None)
    for name, tensor in cpp._named_buffers():
        module._buffers[name] = tensor
    # What the reference registers with persistent=False (RoPE tables): not in the state_dict.
    module._non_persistent_buffers_set.update(cpp._non_persistent_buffers())
    for name, child in cpp._named_children():
        mirror = seen.get(child._id())
        if mirror is None:
            cls = _MIRROR_CLASSES.get(type(child), CppModule)
            mirror = cls.__new__(cls)
            _mirror(mirror, child, tree, seen)
        module._modules[name] = mirror
    mirrored = frozenset(module._parameters) | frozenset(module._buffers) | frozenset(module._modules)
    d["_mirrored"] = mirrored
    # A keyword named like a submodule (SinusoidalPositionalEncoding's dropout) is the submodule, as
    # in the reference.
    for name in mirrored:
        d.pop(name, None)
    d["_cpp_attr_names"] = tuple(name for name in attrs if name not in mirrored)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"Tensor{list(value.shape)} {value.dtype}"
    return type(value).__name__


def _init_from_cpp(module: "CppModule", cpp: Any) -> None:
    _mirror(module, cpp, _Tree(), {})


def _signature_from_keywords(cpp_class: Any) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    params += [
        inspect.Parameter(name, kind, default=default, annotation=annotation)
        for name, default, annotation in cpp_class._keywords()
    ]
    return inspect.Signature(params, return_annotation=None)


def _rebuild(cls: type, kwargs: dict, tensors: dict, training: dict, extra: dict) -> "CppModule":
    """Unpickles / deep-copies a module built from keywords (see CppModule.__reduce_ex__)."""
    module = cls.__new__(cls)
    _init_from_cpp(module, cls._cpp_class(kwargs))
    own = dict(module.named_parameters(remove_duplicate=False))
    own.update(module.named_buffers(remove_duplicate=False))
    with torch.no_grad():
        for name, tensor in tensors.items():
            target = own[name]
            target.data = tensor.detach()
            if isinstance(tensor, nn.Parameter):
                target.requires_grad_(tensor.requires_grad)
    for name, sub in module.named_modules(remove_duplicate=False):
        if name in training:
            sub.training = training[name]
    py_params, py_buffers, py_modules, attributes = extra
    module._parameters.update(py_params)
    module._buffers.update(py_buffers)
    module._modules.update(py_modules)
    module.__dict__.update(attributes)
    return module


class CppModule(nn.Module):
    """Base of every class of the package: an ``nn.Module`` mirroring a C++ (LibTorch) module.

    Subclasses name their C++ class with ``class Attention(CppModule, cpp=_C.Attention)``; classes
    whose C++ class is built from keywords get an ``__init__`` with the reference's signature (names,
    order and defaults come from the C++ Options).
    """

    _cpp_class: Any = None
    # Parameters the torch.nn counterpart keeps as None when absent (nn.Linear's bias).
    _optional_parameters: Tuple[str, ...] = ()

    def __init_subclass__(cls, cpp: Any = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        forward = cls.__dict__.get("forward")
        if getattr(forward, "_from_cpp_forward", False):
            # Made by cpp_forward (one function per class): named as if written in the class.
            forward.__qualname__ = f"{cls.__qualname__}.forward"
            forward.__module__ = cls.__module__
        if cpp is None:
            return
        cls._cpp_class = cpp
        _MIRROR_CLASSES[cpp] = cls
        if "__init__" in cls.__dict__:
            return
        if hasattr(cpp, "_keywords"):
            signature = _signature_from_keywords(cpp)

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                bound = signature.bind(self, *args, **kwargs)
                arguments = dict(bound.arguments)
                del arguments["self"]
                _init_from_cpp(self, cpp(arguments))

            __init__.__signature__ = signature  # type: ignore[attr-defined]
        else:

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise TypeError(
                    f"{type(self).__name__} mirrors a submodule of a C++ module and is not built "
                    "directly; use torch.nn." + type(self).__name__ + " for a standalone module"
                )

        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = cls.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]

    # ---- calling the C++ module ----

    def _cpp_call(self, method: str, *args: Any) -> Any:
        """Calls a method of the C++ module after copying changed training flags to C++."""
        tree = self._tree
        if tree.dirty:
            tree.sync_training()
        try:
            return getattr(self._cpp, method)(*args)
        except TypeError as error:
            # pybind11 lists every argument's value (whole tensors); name their types instead.
            text = str(error)
            if "incompatible function arguments" not in text:
                raise
            supported = text.split("\n\nInvoked with")[0].split("\n", 1)[-1].strip()
            got = ", ".join(_describe(a) for a in args)
            raise TypeError(
                f"{self._get_name()}.{method}() got incompatible arguments ({got}); {supported}"
            ) from None

    @property
    def cpp_module(self) -> Any:
        """The bound C++ module (LibTorch) this module mirrors."""
        return self._cpp

    def _get_name(self) -> str:
        if type(self) is CppModule:
            return self._cpp._type_name().split("::")[-1].removesuffix("Impl")
        return super()._get_name()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self._get_name()} runs inside its parent's C++ forward and has no Python forward"
        )

    # ---- keeping Python and C++ on the same tensors ----

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "training":
            object.__setattr__(self, name, value)
            tree = self.__dict__.get("_tree")
            if tree is not None:
                tree.dirty = True
            return
        mirrored = self.__dict__.get("_mirrored")
        if mirrored is not None and name in mirrored:
            current = self._parameters.get(name, self._buffers.get(name, self._modules.get(name)))
            if value is current:
                return
            self._refuse_replacement(name)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        mirrored = self.__dict__.get("_mirrored")
        if mirrored is not None and name in mirrored:
            self._refuse_replacement(name)
        super().__delattr__(name)

    def _refuse_replacement(self, name: str) -> None:
        raise AttributeError(
            f"cannot replace or delete '{name}' of {self._get_name()}: it is shared with the C++ "
            "module, which would not see a new object. Change it in place instead (e.g. "
            f"`with torch.no_grad(): module.{name}.copy_(value)`), or use load_state_dict()."
        )

    def register_parameter(self, name: str, param: Any) -> None:
        if name in self.__dict__.get("_mirrored", ()):
            self._refuse_replacement(name)
        super().register_parameter(name, param)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        if name in self.__dict__.get("_mirrored", ()):
            self._refuse_replacement(name)
        super().register_buffer(name, tensor, persistent)

    def add_module(self, name: str, module: Any) -> None:
        if name in self.__dict__.get("_mirrored", ()):
            self._refuse_replacement(name)
        super().add_module(name, module)

    def register_module(self, name: str, module: Any) -> None:
        self.add_module(name, module)

    def _apply(self, fn, recurse: bool = True):
        if recurse:
            for module in self.children():
                module._apply(fn)
        mirrored = self._mirrored
        for key, param in self._parameters.items():
            if param is None:
                continue
            with torch.no_grad():
                applied = fn(param)
            if not torch._has_compatible_shallow_copy_type(param, applied):
                if key in mirrored:
                    raise RuntimeError(
                        f"{self._get_name()}.{key}: cannot convert a tensor shared with the C++ "
                        f"module from {param.device}/{param.dtype} to {applied.device}/"
                        f"{applied.dtype} in place"
                    )
                self._parameters[key] = nn.Parameter(applied, param.requires_grad)
                continue
            # In place, as nn.Module does by default: C++ holds this very tensor.
            param.data = applied
            grad = param.grad
            if grad is not None:
                with torch.no_grad():
                    grad_applied = fn(grad)
                if torch._has_compatible_shallow_copy_type(grad, grad_applied):
                    grad.data = grad_applied
                else:
                    param.grad = grad_applied.requires_grad_(grad.requires_grad)
        for key, buf in self._buffers.items():
            if buf is None:
                continue
            with torch.no_grad():
                applied = fn(buf)
            if key in mirrored:
                if not torch._has_compatible_shallow_copy_type(buf, applied):
                    raise RuntimeError(
                        f"{self._get_name()}.{key}: cannot convert a buffer shared with the C++ "
                        f"module to {applied.device}/{applied.dtype} in place"
                    )
                buf.data = applied
            else:
                self._buffers[key] = applied
        return self

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        assign = local_metadata.get("assign_to_params_buffers", False)
        metadata = dict(local_metadata, assign_to_params_buffers=False)
        # Copies into the existing tensors (checks shapes, reports missing/unexpected keys).
        with _no_swap_on_conversion():
            super()._load_from_state_dict(
                state_dict, prefix, metadata, strict, missing_keys, unexpected_keys, error_msgs
            )
        if assign:
            # assign=True: take the given tensors' data, dtype and device, keeping the tensor objects.
            persistent = {
                k: v for k, v in self._buffers.items() if k not in self._non_persistent_buffers_set
            }
            with torch.no_grad():
                for name, tensor in list(self._parameters.items()) + list(persistent.items()):
                    key = prefix + name
                    if tensor is None or key not in state_dict:
                        continue
                    value = state_dict[key]
                    if isinstance(value, torch.Tensor) and value.shape == tensor.shape:
                        tensor.data = value.detach()

    # ---- hooks on submodules ----

    def _warn_if_inside_cpp(self, what: str) -> None:
        if self._tree.pairs[0][0] is not self:
            warnings.warn(
                f"{what} registered on {self._get_name()}, a submodule of a C++ module: its parent "
                "runs it inside C++, so the hook fires only when this submodule is called directly",
                stacklevel=3,
            )

    def register_forward_hook(self, hook, *args, **kwargs):
        self._warn_if_inside_cpp("a forward hook")
        return super().register_forward_hook(hook, *args, **kwargs)

    def register_forward_pre_hook(self, hook, *args, **kwargs):
        self._warn_if_inside_cpp("a forward pre-hook")
        return super().register_forward_pre_hook(hook, *args, **kwargs)

    def register_full_backward_hook(self, hook, *args, **kwargs):
        self._warn_if_inside_cpp("a backward hook")
        return super().register_full_backward_hook(hook, *args, **kwargs)

    def register_full_backward_pre_hook(self, hook, *args, **kwargs):
        self._warn_if_inside_cpp("a backward pre-hook")
        return super().register_full_backward_pre_hook(hook, *args, **kwargs)

    # ---- copy and pickle ----

    def _python_only_state(self) -> tuple:
        mirrored = self._mirrored
        params = {k: v for k, v in self._parameters.items() if k not in mirrored}
        buffers = {k: v for k, v in self._buffers.items() if k not in mirrored}
        modules = {k: v for k, v in self._modules.items() if k not in mirrored}
        skip = _MIRROR_STATE | set(self._cpp_attr_names) | {"_parameters", "_buffers", "_modules"}
        skip |= {"_non_persistent_buffers_set"}
        attributes = {k: v for k, v in self.__dict__.items() if k not in skip}
        return params, buffers, modules, attributes

    def __reduce_ex__(self, protocol):
        if not hasattr(self._cpp, "_kwargs"):
            raise TypeError(
                f"cannot pickle {self._get_name()}: it is part of a C++ module and is not built "
                "from keywords; pickle the module that contains it (copy.deepcopy works)"
            )
        tensors = dict(self.named_parameters(remove_duplicate=False))
        tensors.update(self.named_buffers(remove_duplicate=False))
        training = {name: m.training for name, m in self.named_modules(remove_duplicate=False)}
        args = (type(self), self._cpp._kwargs(), tensors, training, self._python_only_state())
        return _rebuild, args

    def __deepcopy__(self, memo):
        if hasattr(self._cpp, "_kwargs"):
            fn, args = self.__reduce_ex__(4)
            result = fn(*copy.deepcopy(args, memo))
        else:
            # A LibTorch building block (Linear, ...): its C++ clone copies everything it holds.
            result = type(self).__new__(type(self))
            _init_from_cpp(result, self._cpp._clone())
            for (_, old), (_, new) in zip(
                self.named_parameters(remove_duplicate=False),
                result.named_parameters(remove_duplicate=False),
            ):
                new.requires_grad_(old.requires_grad)
            for (_, old), (_, new) in zip(
                self.named_modules(remove_duplicate=False), result.named_modules(remove_duplicate=False)
            ):
                new.training = old.training
        memo[id(self)] = result
        return result


def cpp_forward(doc: str) -> Callable[..., torch.Tensor]:
    """A ``forward(self, x)`` that runs the C++ module's forward on the one tensor ``x``, with the
    docstring `doc`: ``forward = cpp_forward("...")`` in a class body."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._cpp_call("forward", x)

    forward.__doc__ = doc
    forward._from_cpp_forward = True  # type: ignore[attr-defined]
    return forward


class PretrainedModel(CppModule):
    """A model with checkpoints in the layout of huggingface_hub's PyTorchModelHubMixin (the
    reference's ``hf`` classes and the published models): ``config.json`` (the constructor
    keywords) and ``model.safetensors``, read and written by the C++ library."""

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        *,
        force_download: bool = False,
        token: Union[str, bool, None] = None,
        cache_dir: Union[str, os.PathLike, None] = None,
        local_files_only: bool = False,
        revision: Optional[str] = None,
        dtype: Optional[torch.dtype] = None,
        device: Union[torch.device, str, None] = None,
        map_location: Union[torch.device, str, None] = None,
        max_parameter_bytes: Optional[int] = None,
    ):
        """Loads a model saved by ``save_pretrained`` (ours or the reference's mixin), in eval
        mode, from a folder or from a Hub repository.

        Parameters
        ----------
        pretrained_model_name_or_path : str or os.PathLike
            A folder holding ``config.json`` and ``model.safetensors``, or a Hub repository id
            (``"awni00/DAT-sa8-ra8-ns1024-sh8-nkvh4-343M"``), downloaded by the C++ Hub client into
            huggingface_hub's cache (HF_HUB_CACHE, HF_HOME, HF_ENDPOINT, HF_HUB_OFFLINE and HF_TOKEN
            apply), so that either library reuses what the other fetched.
        force_download, token, cache_dir, local_files_only, revision
            As huggingface_hub's ``from_pretrained``: download again; the token (a string; True:
            the saved one, as by default; False: none); the cache folder; never use the network;
            a branch, tag or commit hash (default ``main``). They matter for repository ids only.
        dtype : torch.dtype, optional
            Floating-point dtype of the model; by default the checkpoint's.
        device, map_location : torch.device or str, optional
            Where the model is placed (``map_location`` is the mixin's name for it); default CPU.
        max_parameter_bytes : int, optional
            The largest model ``config.json`` may ask for, in bytes of parameters as first built
            (float32); default 16 GiB. The size is estimated from the config before anything is
            allocated, so an absurd config raises ``RuntimeError`` instead of exhausting memory.

        The weights are ``model.safetensors``, or else ``pytorch_model.bin`` (``torch.save``'s zip
        format, read by LibTorch: tensors only; no pickled code runs), as the mixin falls back.
        """
        if token is True:
            token = None  # the saved token: the client's default
        elif token is False:
            token = ""  # an empty token sends none
        elif token is not None and not isinstance(token, str):
            raise TypeError(f"token must be a str, a bool or None, got {type(token).__name__}")
        where = device if device is not None else map_location
        cpp = cls._cpp_class._from_pretrained(
            os.fspath(pretrained_model_name_or_path),
            dtype,
            None if where is None else torch.device(where),
            revision,
            token,
            None if cache_dir is None else os.fspath(cache_dir),
            bool(local_files_only),
            bool(force_download),
            None if max_parameter_bytes is None else int(max_parameter_bytes),
        )
        model = cls.__new__(cls)
        _init_from_cpp(model, cpp)
        return model

    def save_pretrained(self, save_directory: str, *, push_to_hub: bool = False) -> None:
        """Writes ``config.json`` and ``model.safetensors`` into ``save_directory`` (created if
        needed), as the reference's mixin does; the reference loads them."""
        if push_to_hub:
            raise NotImplementedError("push_to_hub is not supported; upload the folder instead")
        self._cpp.save_pretrained(str(save_directory))


# ---- mirrors of the LibTorch modules ours are built from ----
# They subclass their torch.nn counterparts, so isinstance(m, nn.Linear) holds and their repr reads
# the same; their forward runs the C++ module.


class _LibTorchModule(CppModule):
    # The forward of the modules that compute (the containers below have none of their own).
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._cpp_call("forward", input)


def _refuse_structure_change(self, *args, **kwargs):
    raise TypeError(
        f"{type(self).__name__} mirrors a container of a C++ module; its entries cannot change"
    )


class Linear(_LibTorchModule, nn.Linear, cpp=_C.Linear):
    _optional_parameters = ("bias",)


class Dropout(_LibTorchModule, nn.Dropout, cpp=_C.Dropout):
    pass


class LayerNorm(_LibTorchModule, nn.LayerNorm, cpp=_C.LayerNorm):
    _optional_parameters = ("weight", "bias")


class Embedding(_LibTorchModule, nn.Embedding, cpp=_C.Embedding):
    pass


class Identity(_LibTorchModule, nn.Identity, cpp=_C.Identity):
    pass


class ModuleList(CppModule, nn.ModuleList, cpp=_C.ModuleList):
    append = extend = insert = pop = __setitem__ = __delitem__ = __iadd__ = _refuse_structure_change


class ModuleDict(CppModule, nn.ModuleDict, cpp=_C.ModuleDict):
    update = pop = clear = __setitem__ = __delitem__ = _refuse_structure_change


class Sequential(CppModule, nn.Sequential, cpp=_C.Sequential):
    append = extend = insert = pop = __setitem__ = __delitem__ = __iadd__ = _refuse_structure_change

    forward = nn.Sequential.forward
