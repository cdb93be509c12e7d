"""The checkpoint formats ``load_policy`` reads, as one table of format objects.

Each format says whether a path is one of its checkpoints (``matches``) and reads it into a
``Policy`` (``load``). ``load_policy`` asks them in table order and the first that matches
loads, so adding a format is adding one object to ``FORMATS``. Order matters: a string is a
hub id only when it cannot be a local path, and a workspace file is whatever exists and is
not a directory, so it comes last. The loaders are imported when used: choosing a format
needs nothing heavier than ``os``.
"""

from __future__ import annotations

import os
from typing import Protocol

from parapolicy.checkpoints.hub import local_path_reason, resolve_hub_id
from parapolicy.errors import CheckpointError


class CheckpointFormat(Protocol):
    name: str  # how errors name the format
    needs: str  # what a checkpoint of this format consists of
    reads_directories: bool

    def matches(self, path: str) -> bool: ...

    def load(self, path: str, device, use_ema: bool | None, trust_checkpoint: bool): ...


class HubId:
    """``lerobot/diffusion_pusht``: a LeRobot dir from the Hugging Face cache (downloaded if allowed)."""

    name, needs, reads_directories = "hub id", "owner/name[@revision] with no local folder named owner", False

    def matches(self, path: str) -> bool:
        return local_path_reason(path) is None

    def load(self, path, device, use_ema, trust_checkpoint):
        from parapolicy.checkpoints.lerobot import load_lerobot

        snapshot, blobs = resolve_hub_id(path)
        return load_lerobot(snapshot, device=device, blobs=blobs)


class LeRobotDir:
    """A LeRobot ``pretrained_model/`` directory of any release."""

    name, needs, reads_directories = "LeRobot pretrained_model dir", "config.json + model.safetensors", True

    def matches(self, path: str) -> bool:
        from parapolicy.checkpoints.lerobot import is_lerobot_dir

        return os.path.isdir(path) and is_lerobot_dir(path)

    def load(self, path, device, use_ema, trust_checkpoint):
        from parapolicy.checkpoints.lerobot import load_lerobot

        return load_lerobot(path, device=device)


class DpWorkspaceFile:
    """An upstream DiffusionPolicy workspace ``.ckpt`` file (whatever the file turns out to be: checked when read)."""

    name, needs, reads_directories = "DiffusionPolicy workspace file", "a torch.save zip of cfg + state_dicts", False

    def matches(self, path: str) -> bool:
        return os.path.lexists(path) and not os.path.isdir(path)

    def load(self, path, device, use_ema, trust_checkpoint):
        from parapolicy.checkpoints.dp_workspace import load_dp_workspace

        return load_dp_workspace(path, device=device, use_ema=use_ema, trust_checkpoint=trust_checkpoint)


HUB_ID, LEROBOT_DIR, DP_WORKSPACE = HubId(), LeRobotDir(), DpWorkspaceFile()
FORMATS: tuple[CheckpointFormat, ...] = (HUB_ID, LEROBOT_DIR, DP_WORKSPACE)


def find_format(path: str) -> CheckpointFormat:
    """The first format in ``FORMATS`` that reads ``path``; else one error naming what was found."""
    for checkpoint_format in FORMATS:
        if checkpoint_format.matches(path):
            return checkpoint_format
    raise _no_format(path)


def _no_format(path: str) -> CheckpointError:
    if not os.path.lexists(path):
        return CheckpointError(f"no checkpoint file at {path!r} (read as a local path: {local_path_reason(path)}; "
                               f"a {HUB_ID.name} is {HUB_ID.needs})")
    if os.path.isdir(path):
        wanted = " or ".join(f"{f.name} (needs {f.needs})" for f in FORMATS if f.reads_directories)
        return CheckpointError(f"{path!r} is a directory but not a {wanted}")
    wanted = "; ".join(f"{f.name} ({f.needs})" for f in FORMATS)
    return CheckpointError(f"{path!r} is a file of none of the checkpoint formats: expected {wanted}")
