"""Noise schedulers named by a checkpoint, mapped onto diffusers classes (allow-listed).

Settings are checked before diffusers sees them: sizes (``num_train_timesteps``,
``solver_order``, ``trained_betas``) are bounded, choices come from diffusers' own lists, and
anything else must be a plain scalar, so a cfg cannot make the scheduler allocate or loop
without bound; whatever diffusers still rejects becomes one ``CheckpointError``.
"""

from __future__ import annotations

import math

from parapolicy.checkpoints.fields import Fields
from parapolicy.checkpoints.limits import MAX_TRAIN_TIMESTEPS
from parapolicy.checkpoints.messages import describe, key_path, one_line
from parapolicy.errors import CheckpointError
from parapolicy.scheduler_kinds import SCHEDULER_KINDS

_SCHEDULERS = tuple(SCHEDULER_KINDS.values())
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
_CHOICES = {
    "beta_schedule": BETA_SCHEDULES,
    "prediction_type": ("epsilon", "sample", "v_prediction"),
}


def _check_settings(cfg: Fields, name: str) -> dict:
    out = {}
    for key, value in cfg.cfg.items():
        where = key_path(cfg.name, key)
        if not isinstance(key, str):
            raise CheckpointError(f"{cfg.name} keys must be strings, found {describe(key)}")
        if key == "num_train_timesteps":
            value = cfg.int(key, 1, MAX_TRAIN_TIMESTEPS)
        elif key == "solver_order":
            value = cfg.int(key, 1, 3)
        elif key == "trained_betas" and value is not None:
            if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= MAX_TRAIN_TIMESTEPS \
                    or not all(type(b) in (int, float) and 0 < b < 1 for b in value):
                raise CheckpointError(f"{where} must be a list of betas in (0, 1), found {describe(value)}")
            value = list(value)
        elif key in _CHOICES:
            value = cfg.choice(key, _CHOICES[key])
        elif isinstance(value, float) and not math.isfinite(value):
            raise CheckpointError(f"{where} must be finite, found {value}")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TRAIN_TIMESTEPS:
            raise CheckpointError(f"{where} must be at most {MAX_TRAIN_TIMESTEPS} in size, found {value}")
        elif isinstance(value, str) and len(value) > 64:
            raise CheckpointError(f"{where} must be a short string, found {describe(value)}")
        elif not isinstance(value, (bool, int, float, str, type(None))):
            raise CheckpointError(f"{where} must be a plain value, found {describe(value)}")
        out[key] = value
    return out


def build_scheduler(cfg: dict):
    """Instantiate ``cfg['_target_']`` (e.g. ``diffusers.schedulers.scheduling_ddpm.DDPMScheduler``)."""
    import diffusers

    fields = Fields(cfg, "cfg.policy.noise_scheduler")
    target = fields.raw("_target_", "")
    name = target.rsplit(".", 1)[-1] if isinstance(target, str) else ""
    if not isinstance(target, str) or not target.startswith("diffusers") or name not in _SCHEDULERS:
        raise CheckpointError(f"unsupported noise scheduler {str(target)[:120]!r}; supported: {', '.join(_SCHEDULERS)}")
    settings = _check_settings(Fields({k: v for k, v in fields.cfg.items() if k != "_target_"}, fields.name), name)
    try:
        return getattr(diffusers, name)(**settings)
    except Exception as exc:  # unknown keywords, NotImplementedError for a schedule, ...
        raise CheckpointError(f"cannot build {name} from the checkpoint's settings: {one_line(exc)}") from None
