"""Hugging Face Hub ids (``lerobot/diffusion_pusht``) -> a local LeRobot directory.

Resolution goes through ``huggingface_hub.snapshot_download`` and its cache, so a
checkpoint downloaded once is reused, ``HF_HUB_CACHE`` picks the cache and
``HF_HUB_OFFLINE=1`` works for cached ids. Only the files a LeRobot DiffusionPolicy needs
are fetched (config, weights, processor files), never code.
"""

from __future__ import annotations

import os
import re

from parapolicy.errors import CheckpointError

HUB_FILES = ["config.json", "model.safetensors", "policy_preprocessor*", "policy_postprocessor*"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}(@[\w./-]{1,200})?$")


def looks_like_hub_id(path: str) -> bool:
    """``owner/name`` (optionally ``@revision``) that is not a local path or a checkpoint file name."""
    return (bool(_REPO_ID.match(path)) and not os.path.exists(path)
            and not path.lower().endswith((".ckpt", ".pt", ".pth", ".pkl")))


def resolve_hub_id(repo: str) -> str:
    """Local snapshot directory of ``repo`` (``owner/name[@revision]``), downloading if allowed."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo_id, _, revision = repo.partition("@")
    offline = _offline()
    try:
        # environment read per call (huggingface_hub reads it once, at import)
        return snapshot_download(repo_id, revision=revision or None, allow_patterns=HUB_FILES,
                                 cache_dir=os.environ.get("HF_HUB_CACHE") or None, local_files_only=offline)
    except LocalEntryNotFoundError:
        how = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise CheckpointError(f"hub id {repo!r}: expected a cached snapshot in {_cache_dir()} ({how}), "
                              "found none; download it once online or pass a local path") from None
    except (RepositoryNotFoundError, HFValidationError) as exc:
        raise CheckpointError(f"hub id {repo!r}: expected an existing Hub model repo, found "
                              f"{type(exc).__name__}") from None
    except Exception as exc:  # noqa: BLE001 - network and HTTP errors: one clear error
        raise CheckpointError(f"hub id {repo!r}: download failed: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''}") from None


def _offline() -> bool:
    from huggingface_hub import constants

    value = os.environ.get("HF_HUB_OFFLINE")
    return constants.HF_HUB_OFFLINE if value is None else value.upper() in ("1", "ON", "YES", "TRUE")


def _cache_dir() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_CACHE") or str(constants.HF_HUB_CACHE)
