"""Checkpoint formats -> one ``Policy``: hub ids, LeRobot dirs, DP workspace ``.ckpt`` files (``formats.FORMATS``)."""

from __future__ import annotations

import os

from parapolicy.errors import CheckpointError


def load_policy(path, device="cpu", use_ema: bool | None = None, trust_checkpoint: bool = False):
    """Load a DiffusionPolicy checkpoint (DP workspace ``.ckpt`` file, LeRobot directory or Hub id).

    ``use_ema`` defaults to what the checkpoint's cfg says (upstream evaluates EMA weights).
    ``trust_checkpoint=True`` lets the unpickler run code the file names: only for files
    you trust.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise CheckpointError(f"path must be a file or directory path or a hub id (str), got {type(path).__name__}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise CheckpointError(f"path must be a text path, got {type(path).__name__}")
    if type(use_ema) not in (type(None), bool):
        raise CheckpointError(f"use_ema must be true, false or None (the checkpoint's cfg decides), got {use_ema!r}")
    if type(trust_checkpoint) is not bool:
        raise CheckpointError(f"trust_checkpoint must be true or false, got {trust_checkpoint!r}")
    _check_device(device)
    from parapolicy.checkpoints.formats import find_format

    return find_format(path).load(path, device=device, use_ema=use_ema, trust_checkpoint=trust_checkpoint)


def _check_device(device) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:  # ValueError: undecodable bytes
        raise CheckpointError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(f"device {device!r} requested but no CUDA device is available here; use device='cpu'")


__all__ = ["load_policy"]
