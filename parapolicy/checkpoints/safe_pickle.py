"""Unpickling DiffusionPolicy checkpoints without running code from the file.

Upstream writes ``torch.save(payload, f, pickle_module=dill)``; on torch >= 2.6 a plain
``torch.load`` refuses it (weights_only), and ``weights_only=False`` would execute any
callable the file names. This module is a ``pickle_module`` for ``torch.load`` whose
``find_class`` resolves only the globals a DP payload needs: omegaconf containers and
nodes, ``typing.Any``, ``collections``, dill's ``_load_type`` for builtin data types
(answered here, so dill need not be installed), numpy scalars/arrays, and torch's tensor
rebuild functions. Anything else is refused with the global's name.

The allowed callables cannot be asked for memory the file does not hold: dill's type lookup
never answers ``bytes``/``bytearray``/``range``, ``bytearray`` and ``_codecs.encode`` accept
only the argument shapes pickle itself writes, and numpy arrays are rebuilt only through
numpy's own ``_reconstruct(ndarray, (0,), ...)`` form (the array's data then comes from the
file). Tensors and parameters are rebuilt without backward hooks and parameters without
attributes of their own (torch would restore any attribute the file names, e.g. a fake
``stride``), and quantized or numpy-backed rebuilds, which allocate from a size in the
pickle, are not offered. Expanded tensors are refused later, by the loaders
(``tensor_safety.check_tensor_safe``).
"""

from __future__ import annotations

import builtins
import collections
import pickle
import types
import typing

from parapolicy.errors import UntrustedCheckpointError

_SAFE_BUILTIN_TYPES = {
    name: getattr(builtins, name)
    for name in ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str", "bool", "slice",
                 "object")
}
_SAFE_BUILTIN_TYPES["NoneType"] = type(None)


def _load_type(name: str):
    """Stand-in for ``dill._dill._load_type``, limited to plain data types."""
    try:
        return _SAFE_BUILTIN_TYPES[name]
    except KeyError:
        raise UntrustedCheckpointError(
            f"checkpoint asks dill for type {name!r}, which is not a plain data type; "
            "pass trust_checkpoint=True only if you trust this file"
        ) from None


def _refuse(what: str):
    raise UntrustedCheckpointError(f"checkpoint asks for {what}, which a DiffusionPolicy checkpoint never does")


def _bytearray(*args):
    """``bytearray`` as pickle writes it: from (text, encoding) or bytes, never from a size."""
    if args and not isinstance(args[0], (str, bytes)):
        _refuse(f"bytearray({type(args[0]).__name__})")
    return bytearray(*args)


def _codecs_encode(text, encoding="utf-8", *rest):
    """``_codecs.encode(text, 'latin1')``: how protocol 2 pickles bytes; no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        _refuse(f"_codecs.encode with {type(text).__name__} and codec {str(encoding)[:20]!r}")
    return text.encode("latin1")


_NDARRAY = object()  # stands for numpy.ndarray: only _reconstruct may use it


def _numpy_reconstruct(subtype, shape, dtype):
    """numpy's own pickle form, ``_reconstruct(ndarray, (0,), b'b')``; the data comes with __setstate__."""
    from numpy import ndarray

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        _refuse(f"a numpy array built as {type(subtype).__name__} of shape {str(shape)[:40]}")
    return _reconstruct(ndarray, (0,), dtype)


def _no_hooks(hooks, what: str) -> None:
    if type(hooks) not in (dict, collections.OrderedDict) or hooks:
        _refuse(f"a {what} with backward hooks ({type(hooks).__name__})")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch's ``_rebuild_tensor_v2`` for a tensor with no hooks."""
    from torch._utils import _rebuild_tensor_v2 as rebuild

    _no_hooks(backward_hooks, "tensor")
    return rebuild(storage, storage_offset, size, stride, requires_grad, collections.OrderedDict(), metadata)


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """A ``Parameter`` around a plain tensor: no hooks and no restored attributes (``state``)."""
    import torch

    _no_hooks(backward_hooks, "parameter")
    if type(data) is not torch.Tensor:
        _refuse(f"a parameter around a {type(data).__name__}")
    parts = state if type(state) is tuple and len(state) == 2 else (state,)  # (__dict__, slots) or __dict__
    if not all(part is None or (type(part) is dict and not part) for part in parts):
        _refuse("a parameter with attributes of its own (torch.save writes none for a weight)")
    return torch.nn.Parameter(data, requires_grad)


def _omegaconf_globals() -> dict:
    from omegaconf import base, dictconfig, listconfig, nodes

    allowed = {
        ("omegaconf.dictconfig", "DictConfig"): dictconfig.DictConfig,
        ("omegaconf.listconfig", "ListConfig"): listconfig.ListConfig,
        ("omegaconf.base", "ContainerMetadata"): base.ContainerMetadata,
        ("omegaconf.base", "Metadata"): base.Metadata,
    }
    for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "BytesNode", "PathNode"):
        if hasattr(nodes, name):
            allowed[("omegaconf.nodes", name)] = getattr(nodes, name)
    if hasattr(base, "UnionNode"):
        allowed[("omegaconf.base", "UnionNode")] = base.UnionNode
    return allowed


def _torch_globals() -> dict:
    import torch
    import torch._utils as tu

    allowed = {("torch", "Size"): torch.Size, ("torch", "device"): torch.device, ("torch", "dtype"): torch.dtype,
               ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
               ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
               ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
               ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter}
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            allowed[("torch", name)] = getattr(torch, name)
    return allowed


def _numpy_globals() -> dict:
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    allowed = {("numpy", "dtype"): np.dtype, ("numpy", "ndarray"): _NDARRAY}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "scalar")] = multiarray.scalar
        allowed[(mod, "_reconstruct")] = _numpy_reconstruct
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    return allowed


def _allowed_globals() -> dict:
    allowed = {
        ("typing", "Any"): typing.Any,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "defaultdict"): collections.defaultdict,
        ("_codecs", "encode"): _codecs_encode,  # bytes under pickle protocol 2
        ("dill._dill", "_load_type"): _load_type,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): _bytearray,
    }
    for make in (_omegaconf_globals, _torch_globals, _numpy_globals):
        allowed.update(make())
    return allowed


class AllowListUnpickler(pickle.Unpickler):
    _allowed: dict | None = None

    def find_class(self, module, name):
        allowed = AllowListUnpickler._allowed
        if allowed is None:
            allowed = AllowListUnpickler._allowed = _allowed_globals()
        try:
            return allowed[(module, name)]
        except KeyError:
            raise UntrustedCheckpointError(
                f"checkpoint references {module}.{name}, which a DiffusionPolicy checkpoint does not need; "
                "refusing to run it. Pass trust_checkpoint=True only if you trust this file"
            ) from None


def _load(file, **kwargs):
    return AllowListUnpickler(file, **kwargs).load()


def _loads(data, **kwargs):
    import io

    return _load(io.BytesIO(data), **kwargs)


# what torch.load expects of a pickle_module
allow_list_pickle = types.SimpleNamespace(
    __name__="parapolicy_allow_list_pickle", Unpickler=AllowListUnpickler, load=_load, loads=_loads
)
