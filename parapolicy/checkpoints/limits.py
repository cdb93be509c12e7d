"""Sane bounds and strict type checks for values read from an untrusted checkpoint.

Every size a checkpoint names is checked here before anything is allocated from it, so a
tiny file cannot ask for gigabytes; every check fails with one ``CheckpointError`` naming
the field, what was expected and what was found. Shared by the checkpoint loaders.
"""

from __future__ import annotations

import math
import re

from parapolicy.errors import CheckpointError

# generous for every published DiffusionPolicy / LeRobot diffusion policy, far below a DoS
MAX_FEATURE_DIM = 65_536  # obs / action / condition feature sizes
MAX_CHANNELS = 16_384  # UNet down_dims, step embedding, transformer n_emb
MAX_LEVELS = 8  # len(down_dims)
MAX_KERNEL = 63
MAX_LAYERS = 64
MAX_HEADS = 256
MAX_HORIZON = 4_096
MAX_OBS_STEPS = 1_024
MAX_TRAIN_TIMESTEPS = 10_000  # DDPM's own 1000 with room; the schedule's tables grow with it
MAX_INFERENCE_STEPS = 1_000  # network calls of one sequential chunk; building the step rule is quadratic in it
MAX_IMAGE_SIDE = 4_096
MAX_IMAGE_CHANNELS = 16
MAX_OBS_KEYS = 64
MAX_TENSOR_NUMEL = 1 << 31
FLOAT_DTYPES_NAMES = ("float16", "bfloat16", "float32", "float64")
# A policy's networks and normalizer may take at most this many bytes per tensor byte the
# checkpoint stores: 2 lets float16 weights widen to float32, while weights that share one
# stored tensor (or a tiny file naming huge shapes) cannot multiply what the file holds.
MAX_BYTES_PER_STORED_BYTE = 2


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


def head(items, n: int = 5) -> str:
    """The first ``n`` items joined, and how many more."""
    items = list(items)
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def quoted(names, n: int = 5) -> str:
    """Names read from a file, each shown as its repr (a terminal escape stays visible text)."""
    return head([repr(name) for name in names], n)


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (torch and omegaconf add multi-line context)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(name: str, value, lo: int, hi: int) -> int:
    """An integer (or integral float, as ``${eval:...}`` can produce) within [lo, hi]."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if type(value) is not int or not lo <= value <= hi:
        raise CheckpointError(f"{name} must be an integer in [{lo}, {hi}], found {describe(value)}")
    return value


def check_bool(name: str, value) -> bool:
    if type(value) is not bool:
        raise CheckpointError(f"{name} must be true or false, found {describe(value)}")
    return value


def check_float(name: str, value, lo: float, hi: float) -> float:
    if type(value) not in (int, float) or not lo <= value <= hi:
        raise CheckpointError(f"{name} must be a number in [{lo}, {hi}], found {describe(value)}")
    return float(value)


def check_int_list(name: str, value, min_len: int, max_len: int, lo: int, hi: int) -> list[int]:
    if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len:
        raise CheckpointError(f"{name} must be a list of {min_len} to {max_len} integers, found {describe(value)}")
    return [check_int(f"{name}[{i}]", v, lo, hi) for i, v in enumerate(value)]


def check_dict(name: str, value) -> dict:
    if not isinstance(value, dict):
        raise CheckpointError(f"{name} must be a mapping, found {describe(value)}")
    return value


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


def stored_bytes(tensors) -> int:
    """Bytes the file holds for ``tensors``: each distinct storage counted once."""
    import torch

    storages = {}
    for tensor in tensors:
        storage = torch.Tensor.untyped_storage(tensor)
        storages[torch.UntypedStorage.data_ptr(storage)] = torch.UntypedStorage.nbytes(storage)
    return sum(storages.values())


def module_bytes(*modules) -> int:
    """Bytes the parameters and buffers of (meta-device) modules will take once built."""
    return sum(t.numel() * t.element_size() for m in modules if m is not None
               for t in (*m.parameters(), *m.buffers()))


def check_fits_file(needed: int, stored: int, origin: str) -> None:
    """The policy may need at most ``MAX_BYTES_PER_STORED_BYTE`` bytes per tensor byte the file stores."""
    if needed > MAX_BYTES_PER_STORED_BYTE * max(stored, 1):
        raise CheckpointError(
            f"{origin}: the policy needs {needed} bytes of weights but the file stores {stored} tensor bytes; "
            f"expected at most {MAX_BYTES_PER_STORED_BYTE}x what is stored (weights sharing one stored tensor?)"
        )


def _float_dtypes():
    import torch

    return tuple(getattr(torch, n) for n in FLOAT_DTYPES_NAMES)


_REQUIRED = object()


class Fields:
    """Typed, bounded reads from one cfg mapping; ``name`` prefixes every error (``cfg.policy``)."""

    def __init__(self, cfg, name: str):
        self.cfg, self.name = check_dict(name, cfg), name

    def _get(self, key, default):
        if key in self.cfg:
            return self.cfg[key]
        if default is _REQUIRED:
            raise CheckpointError(f"{self.name} lacks {key!r}")
        return default

    def int(self, key, lo, hi, default=_REQUIRED) -> int:
        return check_int(key_path(self.name, key), self._get(key, default), lo, hi)

    def opt_int(self, key, lo, hi, default=None):
        value = self._get(key, default)
        return None if value is None else check_int(key_path(self.name, key), value, lo, hi)

    def bool(self, key, default=_REQUIRED) -> bool:
        return check_bool(key_path(self.name, key), self._get(key, default))

    def float(self, key, lo, hi, default=_REQUIRED) -> float:
        return check_float(key_path(self.name, key), self._get(key, default), lo, hi)

    def int_list(self, key, min_len, max_len, lo, hi, default=_REQUIRED) -> list:
        return check_int_list(key_path(self.name, key), self._get(key, default), min_len, max_len, lo, hi)

    def dict(self, key, default=_REQUIRED) -> "Fields":
        return Fields(self._get(key, default), key_path(self.name, key))

    def raw(self, key, default=_REQUIRED):
        return self._get(key, default)
