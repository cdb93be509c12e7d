"""The checkpoints shipped inside the package, by name, so examples run as pasted anywhere.

    policy = parapolicy.load_policy(parapolicy.shipped_checkpoint("pusht_keypoints"))

A shipped file ``<name>_unet.ckpt`` is known as ``<name>``; its card ``<name>_unet.md`` sits
beside it (how it was made, its measured score).
"""

from __future__ import annotations

import os

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "checkpoints")


def shipped_checkpoints() -> dict:
    """{name: path} of every checkpoint shipped in the package."""
    files = sorted(f for f in os.listdir(ASSETS_DIR) if f.endswith(".ckpt"))
    return {f[: -len(".ckpt")].removesuffix("_unet"): os.path.join(ASSETS_DIR, f) for f in files}


def shipped_checkpoint(name: str = "pusht_keypoints") -> str:
    """The path of a shipped checkpoint: ``"pusht_keypoints"`` (PushT, upstream's keypoint
    observation) or ``"toy_reach"`` (a tiny task for quick checks)."""
    from parapolicy.errors import CheckpointError

    known = shipped_checkpoints()
    path = known.get(str(name).removesuffix(".ckpt").removesuffix("_unet"))
    if path is None:
        raise CheckpointError(f"no shipped checkpoint named {name!r}; shipped: {', '.join(known)}")
    return path
