"""The bottom floor of untrusted-input checks: is this object a real tensor the file stores in full?

Every layer that touches tensors from a file (checkpoint loaders, the normalizer) asks this
one module, which imports only the error types, so models need nothing from ``checkpoints``.
Geometry is read through ``torch.Tensor``'s own methods, never through instance attributes.
"""

from __future__ import annotations

import math
import re

from parapolicy.errors import CheckpointError

MAX_FEATURE_DIM = 65_536  # obs / action / condition feature sizes
MAX_TENSOR_NUMEL = 1 << 31
FLOAT_DTYPES_NAMES = ("float16", "bfloat16", "float32", "float64")


def describe(value) -> str:
    """``'abc' (str)``: a value and its type, cut short, for error messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_path(base: str, key) -> str:
    """``base.key`` for a plain key, ``base['odd key']`` (repr, escapes visible) for any other."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{base}[{key}]"
    return f"{base}.{key}" if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else f"{base}[{key!r}]"


def check_tensor_safe(name: str, tensor, float_only: bool = True):
    """A real, non-overlapping tensor of bounded size (and a float dtype when ``float_only``).

    Refuses expanded (stride-0) or overlapping views: they let a few bytes in the file stand
    for a huge tensor that any copy or clone would materialise. Only exact ``torch.Tensor`` /
    ``Parameter`` objects pass, and their geometry is read through ``torch.Tensor``'s own
    methods, so attributes a pickle attached to the instance (a fake ``stride``) are never asked.
    """
    import torch

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter):
        raise CheckpointError(f"{name} must be a tensor, found {describe(tensor)}")
    if tensor.layout != torch.strided or tensor.is_quantized or tensor.device.type != "cpu":
        raise CheckpointError(f"{name} must be a plain dense CPU tensor, found {tensor.layout} on {tensor.device}")
    if float_only and tensor.dtype not in _float_dtypes():
        raise CheckpointError(f"{name} must be a float tensor, found dtype {str(tensor.dtype).replace('torch.', '')}")
    shape, strides = tuple(torch.Tensor.size(tensor)), tuple(torch.Tensor.stride(tensor))
    numel = math.prod(shape)
    if numel > MAX_TENSOR_NUMEL:
        raise CheckpointError(f"{name} has {numel} elements; at most {MAX_TENSOR_NUMEL} are allowed")
    storage = torch.Tensor.untyped_storage(tensor)
    end = (torch.Tensor.storage_offset(tensor) + _extent(shape, strides)) * torch.Tensor.element_size(tensor)
    if _overlaps(shape, strides) or (numel and end > torch.UntypedStorage.nbytes(storage)):
        raise CheckpointError(
            f"{name} is an expanded/overlapping view (shape {shape}, stride {strides}): "
            "expected a tensor stored in full"
        )
    return tensor


def _extent(shape, strides) -> int:
    """Elements from a tensor's first to its last element in storage, inclusive."""
    if any(size == 0 for size in shape):
        return 0
    return 1 + sum((size - 1) * stride for size, stride in zip(shape, strides))


def _overlaps(shape, strides) -> bool:
    """Whether two indices of the view may share an element: each stride (smallest first)
    must step past everything the smaller ones reach, as in a (permuted) slice of a real tensor."""
    reach = 0
    for size, stride in sorted((d for d in zip(shape, strides) if d[0] > 1), key=lambda d: d[1]):
        if stride <= reach:
            return True
        reach += (size - 1) * stride
    return False


def _float_dtypes():
    import torch

    return tuple(getattr(torch, n) for n in FLOAT_DTYPES_NAMES)
