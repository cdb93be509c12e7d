"""Normalisation statistics of a LeRobot directory, both layouts, and LeRobot's formulas.

* <= 0.3 (and the 2024 hub format): buffers in ``model.safetensors`` named
  ``normalize_inputs.buffer_<key with . -> _>.<stat>``, ``normalize_targets.buffer_action.*``
  and ``unnormalize_outputs.buffer_action.*``; MIN_MAX is ``(x-min)/(max-min+1e-8)*2-1``.
* >= 0.4: flat ``<key>.<stat>`` tensors in the processor files beside the model;
  MIN_MAX is ``2*(x-min)/denom-1`` with ``denom`` replaced by 1e-8 where it is 0.

Statistics are validated when read: the stats each mode needs, shapes matching the
feature, finite values, a positive scale (an action range of zero is refused: it would
collapse every action onto one point).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from parapolicy.checkpoints.files import CheckpointDir
from parapolicy.checkpoints.lerobot.config import ACTION, LeRobotConfig
from parapolicy.checkpoints.lerobot.weights import read_safetensors
from parapolicy.errors import CheckpointError

EPS = 1e-8
PRE_STATS = "policy_preprocessor_step_3_normalizer_processor.safetensors"
POST_STATS = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"
BUFFER_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
NEEDED = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
          "QUANTILE10": ("q10", "q90")}


def processor_files(folder: CheckpointDir) -> list[tuple[str, str]]:
    """``(name, real path)`` of the >= 0.4 statistics files in ``folder`` (empty for the buffer layout)."""
    named = [(name, folder.file(name)) for name in (PRE_STATS, POST_STATS)]
    found = [(name, real) for name, real in named if real is not None]
    if found:
        return found
    return [(os.path.basename(real), real) for real in folder.glob("*normalizer_processor.safetensors")]


def read_stats(folder: CheckpointDir, buffers: dict) -> tuple[dict, bool]:
    """``({feature: {stat: tensor}}, legacy)``: processor files if present, else model buffers."""
    files = processor_files(folder)
    stats: dict = {}
    if files:
        for name, real in files:
            for key, value in read_safetensors(real, folder.shown(name)).items():
                feature, _, stat = key.rpartition(".")
                stats.setdefault(feature, {})[stat] = value
        return stats, False
    for key, value in buffers.items():
        parts = key.split(".")
        if len(parts) != 3 or not parts[1].startswith("buffer_"):
            raise CheckpointError(f"{folder.path!r}: statistics buffer {key!r}: expected <module>.buffer_<feature>.<stat>")
        stats.setdefault(parts[1][len("buffer_"):], {})[parts[2]] = value
    return stats, True


def checked_stats(config: LeRobotConfig, stats: dict, origin: str) -> dict:
    """The statistics each normalised feature needs, validated; float32, images as (C, 1, 1)."""
    out = {}
    for key, mode in config.modes.items():
        if mode == "IDENTITY":
            continue
        found = stats.get(key) or stats.get(key.replace(".", "_"))  # buffers spell '.' as '_'
        if found is None:
            raise CheckpointError(f"{origin}: no normalisation statistics for {key!r} (mode {mode}); "
                                  f"found statistics for {sorted(stats)[:8]}")
        shape = (config.action_dim,) if key == ACTION else config.obs_shapes[key]
        image = len(shape) == 3
        entry = {}
        for stat in NEEDED[mode]:
            value = found.get(stat)
            if value is None:
                raise CheckpointError(f"{origin}: {key!r} ({mode}) needs statistic {stat!r}, found {sorted(found)}")
            if not value.is_floating_point():
                raise CheckpointError(f"{origin}: {key + '.' + stat!r}: expected floating point, found {value.dtype}")
            value = value.to(torch.float32)
            if image and value.dim() == 1:
                value = value.reshape(-1, 1, 1)  # LeRobot >= 0.6 reshapes flat visual stats the same way
            want = (shape[0], 1, 1) if image else shape
            if tuple(value.shape) != want:
                raise CheckpointError(f"{origin}: {key + '.' + stat!r}: expected shape {want}, found {tuple(value.shape)}")
            if not torch.isfinite(value).all():
                raise CheckpointError(f"{origin}: {key + '.' + stat!r}: expected finite values, found NaN or inf")
            entry[stat] = value.contiguous().clone()
        lo, hi = (entry[s] for s in NEEDED[mode])
        scale = hi if mode == "MEAN_STD" else hi - lo
        if (scale < 0).any() or (key == ACTION and (scale == 0).any()):
            what = "std" if mode == "MEAN_STD" else f"{NEEDED[mode][1]} - {NEEDED[mode][0]}"
            bound = "> 0" if key == ACTION else ">= 0"
            raise CheckpointError(f"{origin}: {key!r} {what}: expected {bound} everywhere, found "
                                  f"{scale.min().item():.3g}")
        out[key] = entry
    return out


class LeRobotNormalizer(nn.Module):
    """LeRobot's per-feature maps to and from [-1, 1], in the formula of the writing version."""

    def __init__(self, stats: dict, modes: dict, legacy: bool):
        super().__init__()
        self.modes = dict(modes)
        self.legacy = legacy
        self.stats = stats

    @property
    def fields(self) -> list[str]:
        return list(self.modes)

    def _pair(self, key, like):
        mode = self.modes[key]
        lo, hi = (self.stats[key][s].to(device=like.device, dtype=torch.float32) for s in NEEDED[mode])
        return mode, lo, hi

    def normalize(self, key, x):
        x = x.to(dtype=torch.float32)
        if self.modes.get(key, "IDENTITY") == "IDENTITY":
            return x
        mode, lo, hi = self._pair(key, x)
        if mode == "MEAN_STD":
            return (x - lo) / (hi + EPS)
        if self.legacy:
            return (x - lo) / (hi - lo + EPS) * 2 - 1
        return 2 * (x - lo) / _denom(lo, hi) - 1

    def unnormalize(self, key, x):
        if self.modes.get(key, "IDENTITY") == "IDENTITY":
            return x
        mode, lo, hi = self._pair(key, x)
        if mode == "MEAN_STD":
            return x * hi + lo
        if self.legacy:
            return (x + 1) / 2 * (hi - lo) + lo
        if mode != "MIN_MAX":  # LeRobot's quantile modes multiply before halving
            return (x + 1) * _denom(lo, hi) / 2 + lo
        return (x + 1) / 2 * _denom(lo, hi) + lo


def _denom(lo, hi):
    denom = hi - lo
    return torch.where(denom == 0, torch.full_like(denom, EPS), denom)
