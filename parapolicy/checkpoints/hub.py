"""Hugging Face Hub ids (``lerobot/diffusion_pusht``) -> a local LeRobot directory.

Resolution goes through ``huggingface_hub.snapshot_download`` and its cache, so a
checkpoint downloaded once is reused, ``HF_HUB_CACHE`` picks the cache and
``HF_HUB_OFFLINE=1`` works for cached ids. Only the files a LeRobot DiffusionPolicy needs
are fetched (config, weights, processor files), never code.

A string becomes a hub id only when it cannot be a local path: ``owner/name[@revision]``
with no ``..``, not starting with ``.``, ``/`` or ``~``, one ``/`` before the revision, and
no local ``owner`` folder; anything else is a local path (and a missing one says why it was
read as one). The revision is checked before huggingface_hub sees it (its cache reads
``refs/<revision>``), and the snapshot it resolves to must lie inside the cache.
"""

from __future__ import annotations

import os
import re

from parapolicy.errors import CheckpointError

HUB_FILES = ["config.json", "model.safetensors", "policy_preprocessor*", "policy_postprocessor*"]
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9_])?"  # a Hub owner or repo name
_REPO_ID = re.compile(rf"({_NAME})/({_NAME})(?:@([\w.-]{{1,100}}(?:/[\w.-]{{1,100}}){{0,3}}))?")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".pkl")


def local_path_reason(path: str) -> str | None:
    """Why ``path`` is read as a local path, or None when it is a hub id."""
    if path.startswith((".", "/", "~")):
        return f"it starts with {path[0]!r}"
    if os.path.lexists(path):
        return "it exists here"
    if path.split("@", 1)[0].count("/") > 1:  # owner/name@refs/pr/1 is one id
        return "it has more than one '/'"
    if path.lower().endswith(_CHECKPOINT_SUFFIXES):
        return "it names a checkpoint file"
    owner = path.split("/", 1)[0]
    if "/" in path and os.path.isdir(owner):
        return f"its first part {owner!r} is a local directory"
    if ".." in path:
        return "a hub id has no '..'"
    match = _REPO_ID.fullmatch(path)
    if not match or "--" in match.group(1) + match.group(2):
        return "it is not of the form owner/name[@revision]"
    return None


def looks_like_hub_id(path: str) -> bool:
    """``owner/name`` (optionally ``@revision``) that cannot be a local path or a checkpoint file name."""
    return local_path_reason(path) is None


def resolve_hub_id(repo: str) -> tuple[str, str]:
    """``(snapshot directory, blobs directory)`` of ``repo`` (``owner/name[@revision]``), downloading if allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    reason = local_path_reason(repo)
    if reason is not None:
        raise CheckpointError(f"{repo!r} is not a hub id: {reason}")
    repo_id, _, revision = repo.partition("@")
    offline = _offline()
    cache = _cache_dir()
    try:
        # environment read per call (huggingface_hub reads it once, at import)
        snapshot = snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILES, cache_dir=cache,
                                     local_files_only=offline)
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise CheckpointError(f"hub id {repo!r}: expected a cached snapshot in {cache} ({how}), "
                              "found none; download it once online or pass a local path") from None
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise CheckpointError(f"hub id {repo!r}: expected an existing Hub model repo, found "
                              f"{type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors: one clear error
        raise CheckpointError(f"hub id {repo!r}: download failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    storage = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    snapshots = os.path.realpath(os.path.join(storage, "snapshots"))
    real = os.path.realpath(snapshot)
    if os.path.dirname(real) != snapshots:
        raise CheckpointError(f"hub id {repo!r}: its cached snapshot resolves to {real!r}, expected a folder in "
                              f"{snapshots!r} (damaged or altered cache refs)")
    return real, os.path.join(storage, "blobs")


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.upper() in ("1", "ON", "YES", "TRUE")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or str(constants.HF_HUB_CACHE)
