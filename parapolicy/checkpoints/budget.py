"""What a policy will take in memory, measured against the tensor bytes its file stores.

Checked on meta-device networks before anything is allocated, so weights sharing one
stored tensor, or a tiny file naming huge shapes, cannot multiply what the file holds.
"""

from __future__ import annotations

from parapolicy.checkpoints.limits import MAX_BYTES_PER_STORED_BYTE
from parapolicy.errors import CheckpointError


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
