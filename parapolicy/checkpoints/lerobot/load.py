"""A LeRobot ``pretrained_model/`` directory -> ``Policy``, without lerobot installed.

Order matters for untrusted input: config.json is validated, the networks are built on
the meta device and compared with the safetensors header, and only then are tensors read
and memory allocated. Every failure is one ``CheckpointError``.
"""

from __future__ import annotations

import json
import os

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
from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.errors import CheckpointError
from parapolicy.policy import GLOBAL, Policy, PolicySpec

MAX_CONFIG_BYTES = 1 << 20  # a LeRobot config.json is a few kB


def is_lerobot_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
        os.path.join(path, "model.safetensors")
    )


def read_config_json(path: str) -> dict:
    file = os.path.join(path, "config.json")
    try:
        size = os.path.getsize(file)
        if size <= MAX_CONFIG_BYTES:
            with open(file, encoding="utf-8") as f:
                return json.load(f)
    except (OSError, ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"cannot read config.json: expected JSON, found {type(exc).__name__}: "
                              f"{str(exc)[:200]}") from None
    raise CheckpointError(f"config.json: expected under {MAX_CONFIG_BYTES} bytes, found {size}")


def load_lerobot(path: str, device="cpu") -> Policy:
    path = os.fspath(path)
    origin = repr(path)
    try:
        config = parse_config(read_config_json(path))
    except CheckpointError as exc:
        raise CheckpointError(f"{origin}: {exc}") from None
    encoder, unet = build_networks(config)
    model_file = os.path.join(path, "model.safetensors")
    header = safetensors_header(model_file)
    networks = {k: v for k, v in header.items() if not k.startswith(BUFFER_PREFIXES)}
    check_header(networks, expected_weights(encoder, unet), origin)
    tensors = read_safetensors(model_file)
    buffers = {k: v for k, v in tensors.items() if k.startswith(BUFFER_PREFIXES)}
    stats, legacy = read_stats(path, buffers)
    stats = checked_stats(config, stats, origin)
    materialize(encoder, unet, tensors)
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
        return Policy(spec, unet, normalizer, build_scheduler(config.scheduler), encoder).to(device)
    except (ValueError, TypeError) as exc:  # diffusers refusing a combination the ranges allowed
        raise CheckpointError(f"{origin}: the scheduler settings are not usable: {str(exc)[:200]}") from None


__all__ = ["is_lerobot_dir", "load_lerobot", "processor_files"]
