"""Reading safetensors files from an untrusted directory: header first, then tensors.

``safetensors`` never executes code, but a damaged file raises its own error types and a
header can declare tensors far larger than anything a config allows; both become one
``CheckpointError`` naming the file.
"""

from __future__ import annotations

from parapolicy.errors import CheckpointError


def safetensors_header(path: str, shown: str) -> dict:
    """``{name: (dtype, shape)}`` from the header alone (no tensor data is read); ``shown`` names the file."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: one clear error
        raise CheckpointError(f"cannot read {shown}: expected a safetensors file, found "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None


def read_safetensors(path: str, shown: str) -> dict:
    """All tensors of ``path`` (contiguous, on the CPU); ``shown`` names the file in errors."""
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"cannot read {shown}: expected a safetensors file, found "
                              f"{type(exc).__name__}: {str(exc)[:200]}") from None

