"""A LeRobot ``pretrained_model/`` directory -> ``Policy``, without lerobot installed.

Order matters for untrusted input: config.json is validated, the networks are built on
the meta device and compared with the safetensors header, and only then are tensors read
and memory allocated. Every failure is one ``CheckpointError``.
"""

from __future__ import annotations

import json
import os

from parapolicy.checkpoints.files import CheckpointDir
from parapolicy.checkpoints.lerobot.config import ACTION, parse_config
from parapolicy.checkpoints.lerobot.model import build_networks, check_header, expected_weights, materialize
from parapolicy.checkpoints.lerobot.stats import (
    BUFFER_PREFIXES,
    LeRobotNormalizer,
    checked_stats,
    processor_files,
    read_stats,
)
from parapolicy.checkpoints.lerobot.weights import read_safetensors, safetensors_header
from parapolicy.checkpoints.budget import check_fits_file, module_bytes
from parapolicy.checkpoints.limits import MAX_CONFIG_JSON_BYTES
from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.errors import CheckpointError
from parapolicy.policy import GLOBAL, Policy, PolicySpec

MODEL_FILE = "model.safetensors"


def is_lerobot_dir(path: str) -> bool:
    """Has config.json and model.safetensors (whatever they turn out to be: checked when opened)."""
    folder = CheckpointDir(path)
    return folder.has("config.json") and folder.has(MODEL_FILE)


def read_config_json(folder: CheckpointDir) -> dict:
    data = folder.read_bytes("config.json", MAX_CONFIG_JSON_BYTES)
    if data is None:
        raise CheckpointError("no config.json: expected one in a LeRobot pretrained_model dir")
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"cannot read config.json: expected JSON, found {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None


def load_lerobot(path: str, device="cpu", blobs: str | None = None) -> Policy:
    """``blobs``: the Hub cache folder a snapshot's symlinks lead into (files are opened nowhere else)."""
    path = os.fspath(path)
    origin = repr(path)
    folder = CheckpointDir(path, blobs)
    try:
        config = parse_config(read_config_json(folder))
    except CheckpointError as exc:
        raise CheckpointError(f"{origin}: {exc}") from None
    networks = build_networks(config)
    model_file = folder.file(MODEL_FILE)
    if model_file is None:
        raise CheckpointError(f"{origin}: no {MODEL_FILE}: expected one beside config.json")
    header = safetensors_header(model_file, folder.shown(MODEL_FILE))
    stored = {k: v for k, v in header.items() if not k.startswith(BUFFER_PREFIXES)}
    check_header(stored, expected_weights(networks), origin)
    check_fits_file(module_bytes(*networks.modules()), os.path.getsize(model_file), origin)
    tensors = read_safetensors(model_file, folder.shown(MODEL_FILE))
    buffers = {k: v for k, v in tensors.items() if k.startswith(BUFFER_PREFIXES)}
    stats, legacy = read_stats(folder, buffers)
    stats = checked_stats(config, stats, origin)
    materialize(networks, tensors)
    del tensors
    keys = [*config.obs_shapes, ACTION]
    normalizer = LeRobotNormalizer(stats, {k: config.modes.get(k, "IDENTITY") for k in keys}, legacy)
    spec = PolicySpec(
        family="lerobot_diffusion", horizon=config.horizon, n_obs_steps=config.n_obs_steps,
        n_action_steps=config.n_action_steps, action_dim=config.action_dim, obs_shapes=dict(config.obs_shapes),
        cond_mode=GLOBAL, action_start=config.n_obs_steps - 1, num_inference_steps=config.num_inference_steps,
        source={"format": "lerobot", "path": os.path.abspath(path), "weights": "model.safetensors",
                "era": config.era, "stats": "buffers" if legacy else "processor", "config": config},
    )
    try:
        scheduler = build_scheduler(config.scheduler)
        return Policy(spec, networks.model, normalizer, scheduler, networks.obs_encoder).to(device)
    except (ValueError, TypeError) as exc:  # diffusers refusing a combination the ranges allowed
        raise CheckpointError(f"{origin}: the scheduler settings are not usable: {str(exc)[:200]}") from None


__all__ = ["is_lerobot_dir", "load_lerobot", "processor_files"]
