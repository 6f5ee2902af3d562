"""The base of every class of the package: a plain ``torch.nn.Module`` built by the C++ library.

Constructing ``RelationalAttention(d_model=64, n_heads=4)`` asks the C++ module of that name to check
the keywords (its Options hold the reference's defaults and the error messages) and to initialise the
parameters, then builds the same tree in Python: our classes for our modules, and real ``torch.nn``
modules (``nn.Linear``, ``nn.Embedding``, ``nn.LayerNorm``, ``nn.Dropout``, ``nn.ModuleList`` ...)
for LibTorch's, under the reference's names. From then on the Python tree is an ordinary
``nn.Module`` tree that owns its parameters: each forward is written in Python (the reference's
composition) and calls the C++ operators ``torch.ops.dual_attention.*`` for the heavy maths
(relational attention, symbolic attention) with the tensors the modules hold *at call time*. So
anything that replaces a parameter or a submodule, or computes a weight at call time
(``functional_call``, FSDP, LoRA-style wrappers, parametrizations, pruning, dynamic quantization,
``torch.compile``, ``torch.export``), works as it does on the reference.

The C++ module stays beside the tree as its *twin*, sharing its tensors, for the work that runs in
C++ end to end: KV-cache generation, the model-analysis forwards, ``save_pretrained``. Before each
such call the twin is re-pointed at the tensors the Python tree holds then; a tree the user altered
(a replaced or wrapped submodule, a parametrization, a hook, sharded parameters) cannot be mirrored
in C++, and those calls either fall back to Python or say why they cannot run. See docs/python.md.
"""

from __future__ import annotations

import inspect
import os
import weakref
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import _C

__all__ = ["CppModule", "PretrainedModel"]

# pybind11 class of one of our C++ modules -> the Python class built for it.
_PYTHON_CLASSES: Dict[type, type] = {}

# pybind11 class of a LibTorch module -> the torch.nn class built for it, and the parameters that
# torch.nn class keeps as None when absent.
_TORCH_NN_CLASSES: Dict[type, Tuple[type, Tuple[str, ...]]] = {
    _C.Linear: (nn.Linear, ("bias",)),
    _C.Dropout: (nn.Dropout, ()),
    _C.LayerNorm: (nn.LayerNorm, ("weight", "bias")),
    _C.Embedding: (nn.Embedding, ()),
    _C.Identity: (nn.Identity, ()),
    _C.ModuleList: (nn.ModuleList, ()),
    _C.ModuleDict: (nn.ModuleDict, ()),
    _C.Sequential: (nn.Sequential, ()),
}



def _own(tensor: torch.Tensor, seen: Dict[Any, Any], parameter: bool) -> torch.Tensor:
    """The Python tree's tensor for a C++ tensor: a tensor of its own (so that nothing outside
    Python holds it, as torch.utils.swap_tensors requires) on the same storage (no copy; the twin
    starts out computing with it). A C++ tensor registered under two names gives one object."""
    key = ("tensor", tensor._cdata)
    own = seen.get(key)
    if own is None:
        own = tensor.detach()
        if parameter:
            own = nn.Parameter(own, requires_grad=tensor.requires_grad)
        seen[key] = own
    return own


def _build(module: nn.Module, cpp: Any, optional: Tuple[str, ...], seen: Dict[Any, Any]) -> None:
    """Makes `module` (created without __init__) the Python counterpart of `cpp`, recursively."""
    nn.Module.__init__(module)
    d = module.__dict__
    d["training"] = cpp._is_training()
    seen[cpp._id()] = module
    attrs = cpp._attrs() if hasattr(cpp, "_attrs") else {}
    d.update(attrs)
    for name, tensor in cpp._named_parameters():
        module._parameters[name] = _own(tensor, seen, parameter=True)
    for name in optional:
        module._parameters.setdefault(name, None)
    for name, tensor in cpp._named_buffers():
        module._buffers[name] = _own(tensor, seen, parameter=False)
    # What the reference registers with persistent=False (the language models' RoPE tables): not in
    # the state_dict.
    if hasattr(cpp, "_non_persistent_buffers"):
        module._non_persistent_buffers_set.update(cpp._non_persistent_buffers())
    for name, child in cpp._named_children():
        built = seen.get(child._id())  # one object where C++ registers one module twice
        if built is None:
            built = _new_module(child, seen)
        module._modules[name] = built
    # A keyword named like a submodule (SinusoidalPositionalEncoding's dropout) is the submodule, as
    # in the reference.
    for name in list(module._parameters) + list(module._buffers) + list(module._modules):
        d.pop(name, None)


def _new_module(cpp: Any, seen: Dict[Any, Any]) -> nn.Module:
    if type(cpp) in _TORCH_NN_CLASSES:
        cls, optional = _TORCH_NN_CLASSES[type(cpp)]
    elif type(cpp) in _PYTHON_CLASSES:
        cls = _PYTHON_CLASSES[type(cpp)]
        optional = cls._optional_parameters
    else:
        # A LibTorch module without a Python class of its own (ViT's torch::nn::Functional): its
        # parent's _after_build puts the Python module in its place.
        cls, optional = _NotBuilt, ()
    module = cls.__new__(cls)
    _build(module, cpp, optional, seen)
    if isinstance(module, CppModule):
        module._after_build()
    elif cls is _NotBuilt:
        module.__dict__["_cpp_type"] = cpp._type_name()
    return module


class _NotBuilt(nn.Module):
    def forward(self, *args: Any) -> Any:
        raise NotImplementedError(f"{self.__dict__.get('_cpp_type')} has no Python counterpart")


def _init_from_cpp(module: "CppModule", cpp: Any) -> None:
    """Builds `module`, the root of a tree, from the C++ module `cpp`, which becomes its twin."""
    _build(module, cpp, type(module)._optional_parameters, {})
    module.__dict__["_cpp"] = cpp
    module.__dict__["_cpp_kwargs"] = cpp._kwargs() if hasattr(cpp, "_kwargs") else None
    module._after_build()
    module.__dict__["_cpp_structure"] = _structure(module)
    _stamp_root(module)


def _stamp_root(root: "CppModule") -> None:
    # Each submodule of ours finds its C++ module through the root (weakly: no cycle to collect).
    ref = weakref.ref(root)
    for name, sub in root.named_modules(remove_duplicate=False):
        if isinstance(sub, CppModule) and sub is not root:
            sub.__dict__["_twin_root"] = (ref, name)


def _structure(module: nn.Module) -> List[Tuple[str, type]]:
    return [(name, type(m)) for name, m in module.named_modules(remove_duplicate=False)]


def _signature_from_keywords(cpp_class: Any) -> inspect.Signature:
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("self", kind)]
    params += [
        inspect.Parameter(name, kind, default=default, annotation=annotation)
        for name, default, annotation in cpp_class._keywords()
    ]
    return inspect.Signature(params, return_annotation=None)


def _cpp_tree(cpp: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The C++ module's tensors and modules by their dotted names (shared ones under each name)."""
    tensors: Dict[str, Any] = {}
    modules: Dict[str, Any] = {}

    def visit(module: Any, prefix: str) -> None:
        modules[prefix.rstrip(".")] = module
        for name, tensor in list(module._named_parameters()) + list(module._named_buffers()):
            tensors[prefix + name] = tensor
        for name, child in module._named_children():
            visit(child, f"{prefix}{name}.")

    visit(cpp, "")
    return tensors, modules


def _tie_groups(named: List[Tuple[str, Any]]) -> List[Tuple[str, ...]]:
    groups: Dict[int, List[str]] = {}
    for name, tensor in named:
        groups.setdefault(id(tensor), []).append(name)
    return sorted(tuple(g) for g in groups.values() if len(g) > 1)


class CppModule(nn.Module):
    """Base of every class of the package: an ``nn.Module`` whose keywords, checks, initial
    parameters and tree come from its C++ module (its twin), and whose forward is Python.

    Subclasses name their C++ class with ``class Attention(CppModule, cpp=_C.Attention)``; classes
    whose C++ class is built from keywords get an ``__init__`` with the reference's signature (names,
    order and defaults come from the C++ Options).
    """

    _cpp_class: Any = None
    # Parameters the class keeps as None when absent (as nn.Linear keeps its bias).
    _optional_parameters: Tuple[str, ...] = ()

    def __init_subclass__(cls, cpp: Any = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cpp is None:
            return
        cls._cpp_class = cpp
        _PYTHON_CLASSES[cpp] = cls
        if "__init__" in cls.__dict__:
            return
        if hasattr(cpp, "_keywords"):
            signature = _signature_from_keywords(cpp)

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                bound = signature.bind(self, *args, **kwargs)
                arguments = dict(bound.arguments)
                del arguments["self"]
                _init_from_cpp(self, cpp(arguments))
                device = torch.get_default_device()
                if device.type != "cpu":
                    # Built under `with torch.device(...)` (meta for deferred initialisation, or an
                    # accelerator), as the reference would be: C++ builds on the CPU; the tree moves
                    # there, and the twin is dropped (rebuilt when next needed).
                    self.to(device)
                    self._drop_twin()

            __init__.__signature__ = signature  # type: ignore[attr-defined]
        else:

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise TypeError(
                    f"{type(self).__name__} is a part of another module and is not built directly"
                )

        __init__.__qualname__ = f"{cls.__qualname__}.__init__"
        __init__.__doc__ = cls.__doc__
        cls.__init__ = __init__  # type: ignore[method-assign]

    def _after_build(self) -> None:
        """Called once the Python tree below this module is built (fix-ups of a class's own)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self._get_name()} has no forward of its own")

    def __prepare_scriptable__(self) -> "CppModule":
        # torch.jit.script calls this on every module before compiling it.
        raise RuntimeError(
            f"{self._get_name()}: TorchScript (torch.jit.script / torch.jit.trace export) is not "
            "supported by dual_attention_cpp; use torch.compile or torch.export instead"
        )

    # ---- the C++ twin ----

    def _twin_problem(self) -> Optional[str]:
        """Why the C++ twin cannot stand for this tree now (None: it can)."""
        built = self.__dict__.get("_cpp_structure")
        if built is None:
            return f"{self._get_name()} is a submodule; call this on the module it belongs to"
        now = _structure(self)
        if now != built:
            was = dict(built)
            for name, cls in now:
                if name not in was:
                    return f"'{name}' ({cls.__name__}) was added to the module tree"
                if was[name] is not cls:
                    return f"'{name}' is a {cls.__name__}, not the {was[name].__name__} it was built with"
            missing = sorted(set(was) - {name for name, _ in now})
            return f"'{missing[0]}' was removed from the module tree"
        for name, module in self.named_modules():
            if module._forward_hooks or module._forward_pre_hooks:
                return f"'{name or self._get_name()}' has a forward hook"
            if parametrize.is_parametrized(module):
                return f"'{name}' has a parametrization"
        tensors, _ = self._cpp_names()
        named = list(self.named_parameters(remove_duplicate=False))
        named += list(self.named_buffers(remove_duplicate=False))
        if sorted(name for name, _ in named) != sorted(tensors):
            extra = sorted({n for n, _ in named} ^ set(tensors))
            return f"its parameters and buffers were renamed or replaced ('{extra[0]}')"
        for name, tensor in named:
            if type(tensor) not in (torch.Tensor, nn.Parameter):
                return f"'{name}' is a {type(tensor).__name__}, not a plain tensor"
            if tensor.is_meta:
                return f"'{name}' is on the meta device"
        if _tie_groups(named) != _tie_groups(list(tensors.items())):
            return "its shared (tied) parameters differ from the ones it was built with"
        return None

    def _drop_twin(self) -> None:
        self.__dict__.pop("_cpp", None)
        self.__dict__.pop("_cpp_names_cache", None)

    def _to_twin(self, cpp: Any) -> None:
        """Copies settings of this module that are not tensors or flags to its C++ module."""

    def _cpp_names(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        cpp = self.__dict__.get("_cpp")
        if cpp is None:
            kwargs = self.__dict__.get("_cpp_kwargs")
            if kwargs is None:
                raise RuntimeError(f"{self._get_name()} cannot rebuild its C++ module")
            cpp = type(self)._cpp_class(kwargs)
            self.__dict__["_cpp"] = cpp
            self.__dict__.pop("_cpp_names_cache", None)
        cached = self.__dict__.get("_cpp_names_cache")
        if cached is None or cached[0] is not cpp:
            cached = (cpp, _cpp_tree(cpp))
            self.__dict__["_cpp_names_cache"] = cached
        return cached[1]

    def _twin(self, purpose: str, required: bool = True) -> Any:
        """The C++ module computing with the tensors this tree holds now, with its training flags.

        For a submodule, the C++ submodule of its root's twin. Returns None (``required=False``) or
        raises RuntimeError naming what was altered when the tree no longer matches the C++ module
        (see the module docstring)."""
        if "_cpp_structure" not in self.__dict__:
            ref, path = self.__dict__.get("_twin_root", (None, ""))
            root = ref() if ref is not None else None
            if root is None or dict(root.named_modules(remove_duplicate=False)).get(path) is not self:
                if not required:
                    return None
                raise RuntimeError(
                    f"{purpose} runs the C++ {self._get_name()}, which this module no longer has: it "
                    "was taken out of the model it was built in; call it on that model's submodule"
                )
            if root._twin(purpose, required) is None:
                return None
            return root._cpp_names()[1][path]
        problem = self._twin_problem()
        if problem is not None:
            if not required:
                return None
            raise RuntimeError(
                f"{purpose} runs the C++ {self._get_name()}, which cannot stand for this module: "
                f"{problem}"
            )
        tensors, modules = self._cpp_names()
        with torch.no_grad():
            for name, tensor in list(self.named_parameters(remove_duplicate=False)) + list(
                self.named_buffers(remove_duplicate=False)
            ):
                target = tensors[name]
                if target is not tensor:
                    target.data = tensor.detach()  # shares the storage: no copy
                    target.requires_grad_(tensor.requires_grad)
        for name, module in self.named_modules(remove_duplicate=False):
            cpp = modules[name]
            if cpp._is_training() != module.training:
                cpp._set_training(module.training)
            if isinstance(module, CppModule):
                module._to_twin(cpp)
        return self.__dict__["_cpp"]

    def _twin_tensors(self) -> Dict[str, Any]:
        """The twin's tensors by this module's own names (after ``_twin``)."""
        if "_cpp_structure" in self.__dict__:
            return self._cpp_names()[0]
        ref, path = self.__dict__["_twin_root"]
        prefix = path + "."
        return {k[len(prefix):]: v for k, v in ref()._cpp_names()[0].items() if k.startswith(prefix)}

    def _call_twin(self, purpose: str, fn: Any, *inputs: Any) -> Any:
        """``fn(twin, *inputs)``, differentiable: gradients reach this module's parameters (and the
        tensor inputs) as if Python had computed it. ``fn`` returns tensors in tuples, lists and
        dicts (None allowed)."""
        cpp = self._twin(purpose)
        params = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        tensor_inputs = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        if not torch.is_grad_enabled() or not (params or tensor_inputs):
            return fn(cpp, *inputs)
        twins = self._twin_tensors()
        leaves = [twins[n] for n, _ in params]
        flat, spec = _TwinCall.run(fn, cpp, inputs, leaves, [p for _, p in params])
        return torch.utils._pytree.tree_unflatten(flat, spec)

    @property
    def cpp_module(self) -> Any:
        """The C++ (LibTorch) module, computing with this module's tensors (see ``_twin``)."""
        return self._twin("cpp_module")

    # ---- copy and pickle: the twin stays behind, and is rebuilt when next needed ----

    def __getstate__(self) -> Dict[str, Any]:
        state = nn.Module.__getstate__(self) if hasattr(nn.Module, "__getstate__") else self.__dict__
        state = dict(state)
        state.pop("_cpp", None)
        state.pop("_cpp_names_cache", None)
        state.pop("_twin_root", None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        if "_cpp_structure" in self.__dict__:
            _stamp_root(self)


class _TwinCall(torch.autograd.Function):
    """Runs a C++ computation on the twin's tensors (which share storage with the Python
    parameters but are autograd leaves of their own) and routes its gradients to the Python
    parameters and to the tensor inputs."""

    @staticmethod
    def run(fn, cpp, inputs, leaves, params):
        box: Dict[str, Any] = {}
        positions = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor)]
        tensors = [inputs[i] for i in positions]
        flat = _TwinCall.apply(fn, cpp, inputs, positions, leaves, box, *tensors, *params)
        return list(flat), box["spec"]

    @staticmethod
    def forward(ctx, fn, cpp, inputs, positions, leaves, box, *tensors_and_params):
        args = list(inputs)
        detached = []
        for i, t in zip(positions, tensors_and_params[: len(positions)]):
            args[i] = t.detach().requires_grad_(t.requires_grad)
            detached.append(args[i])
        with torch.enable_grad():
            out = fn(cpp, *args)
        flat, box["spec"] = torch.utils._pytree.tree_flatten(out)
        ctx.graph = (flat, leaves, detached)
        return tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in flat)

    @staticmethod
    def backward(ctx, *grads):
        flat, leaves, detached = ctx.graph
        outs, grad_outs = [], []
        for t, g in zip(flat, grads):
            if isinstance(t, torch.Tensor) and t.requires_grad and g is not None:
                outs.append(t)
                grad_outs.append(g)
        wanted = list(leaves) + [d for d in detached if d.requires_grad]
        if outs:
            found = torch.autograd.grad(outs, wanted, grad_outs, allow_unused=True)
        else:
            found = (None,) * len(wanted)
        rest = iter(found[len(leaves):])
        input_grads = [next(rest) if d.requires_grad else None for d in detached]
        return (None,) * 6 + tuple(input_grads) + tuple(found[: len(leaves)])


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
        self._twin("save_pretrained").save_pretrained(str(save_directory))

