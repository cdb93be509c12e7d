"""Sane bounds and strict type checks for values read from an untrusted checkpoint.

Every size a checkpoint names is checked here before anything is allocated from it, so a
tiny file cannot ask for gigabytes; every check fails with one ``CheckpointError`` naming
the field, what was expected and what was found. Shared by the checkpoint loaders.
"""

from __future__ import annotations

import math

from parapolicy.errors import CheckpointError
from parapolicy.tensor_safety import (  # noqa: F401  (the tensor-level facts, re-exported for the loaders)
    FLOAT_DTYPES_NAMES,
    MAX_FEATURE_DIM,
    MAX_TENSOR_NUMEL,
    check_tensor_safe,
    describe,
    key_path,
)

# generous for every published DiffusionPolicy / LeRobot diffusion policy, far below a DoS
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
# A policy's networks and normalizer may take at most this many bytes per tensor byte the
# checkpoint stores: 2 lets float16 weights widen to float32, while weights that share one
# stored tensor (or a tiny file naming huge shapes) cannot multiply what the file holds.
MAX_BYTES_PER_STORED_BYTE = 2


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
