"""LeRobot ``config.json`` of every release era -> one validated ``LeRobotConfig``.

Two schemas exist on disk:

* ``"hub-2024"`` (LeRobot before the Jan-2025 "Simplify configs" change, e.g. the hub's
  ``lerobot/diffusion_pusht``): the dataclass written by ``PyTorchModelHubMixin``, no
  ``type`` key, ``input_shapes`` / ``output_shapes`` and per-key lower-case
  ``input_normalization_modes`` / ``output_normalization_modes``.
* ``"features"`` (0.2 and later, written by draccus): ``type``, ``input_features`` /
  ``output_features`` with a feature type each, and ``normalization_mapping`` from feature
  type to mode; a type missing from the mapping (ENV by default) is left unnormalised.

Every field is read through a typed accessor with a range, so a type-confused or absurd
file fails here, before any tensor is allocated, with one ``CheckpointError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parapolicy.checkpoints.fields import CONFIG_JSON_CHECKS, Fields
from parapolicy.checkpoints.limits import (
    LEROBOT_LIMITS as LIMITS,
    MAX_CAMERAS,
    MAX_INFERENCE_STEPS,
    MAX_KEYPOINTS,
    MAX_TRAIN_TIMESTEPS,
)
from parapolicy.checkpoints.schedulers import BETA_SCHEDULES
from parapolicy.errors import CheckpointError
from parapolicy.scheduler_kinds import LEROBOT_SCHEDULER_KINDS, SCHEDULER_KINDS

STATE, ENV, ACTION = "observation.state", "observation.environment_state", "action"
MODES = ("IDENTITY", "MEAN_STD", "MIN_MAX", "QUANTILES", "QUANTILE10")
SCHEDULERS = tuple(kind.upper() for kind in LEROBOT_SCHEDULER_KINDS)  # noise_scheduler_type's spelling


@dataclass(frozen=True)
class LeRobotConfig:
    """What a LeRobot DiffusionPolicy needs at inference, validated."""

    era: str  # "hub-2024" or "features"
    n_obs_steps: int
    horizon: int
    n_action_steps: int
    obs_shapes: dict  # input key -> shape of one step, in config order
    image_keys: tuple
    action_dim: int
    modes: dict  # key -> one of MODES (inputs and "action")
    crop_shape: tuple | None
    use_group_norm: bool
    num_keypoints: int
    separate_rgb_encoders: bool
    down_dims: tuple
    kernel_size: int
    n_groups: int
    diffusion_step_embed_dim: int
    use_film_scale_modulation: bool
    scheduler: dict  # diffusers constructor settings, with "_target_"
    num_inference_steps: int  # null in the file means num_train_timesteps, as LeRobot does


def parse_config(config) -> LeRobotConfig:
    """Validate a decoded ``config.json`` of any LeRobot era."""
    if not isinstance(config, dict):
        raise CheckpointError(f"LeRobot config.json must hold a JSON object, found {type(config).__name__}")
    kind = config.get("type", "diffusion")
    if kind != "diffusion":
        raise CheckpointError(f"config.json holds a LeRobot {kind!r} policy, expected 'diffusion'")
    _check_unsupported(config)
    r = Fields(config, "config.json", CONFIG_JSON_CHECKS)
    if "input_features" in config:
        era, shapes, action_dim, modes = "features", *_features_era(r)
    elif "input_shapes" in config:
        era, shapes, action_dim, modes = "hub-2024", *_hub_2024_era(r)
    else:
        raise CheckpointError("LeRobot config.json has neither 'input_features' (0.2+) nor 'input_shapes' (2024)")
    images = tuple(k for k, s in shapes.items() if len(s) == 3)
    _check_inputs(shapes, images)
    n_obs = r.int("n_obs_steps", 1, LIMITS.obs_steps, 2)
    horizon = r.int("horizon", 1, LIMITS.horizon)
    n_action = r.int("n_action_steps", 1, LIMITS.horizon)
    if n_action > horizon - n_obs + 1:
        raise CheckpointError(f"config.json n_action_steps={n_action}: expected at most horizon - n_obs_steps + 1 "
                              f"= {horizon - n_obs + 1} (horizon {horizon}, n_obs_steps {n_obs})")
    crop = _crop(r, shapes, images)
    down = tuple(r.int_list("down_dims", 1, LIMITS.levels, 1, LIMITS.channels, (512, 1024, 2048)))
    n_groups = r.int("n_groups", 1, LIMITS.channels, 8)
    for dim in (*down, down[0]):
        if dim % n_groups or dim % 8:
            raise CheckpointError(f"config.json down_dims {list(down)}: expected channels divisible by "
                                  f"n_groups={n_groups} and by 8 (GroupNorm), found {dim}")
    if horizon % 2 ** len(down):
        raise CheckpointError(f"config.json horizon={horizon}: expected a multiple of 2**len(down_dims) "
                              f"= {2 ** len(down)} (down_dims {list(down)})")
    kernel = r.int("kernel_size", 1, LIMITS.kernel, 5)
    if kernel % 2 == 0:
        raise CheckpointError(f"config.json kernel_size: expected an odd number, found {kernel}")
    scheduler, steps = _scheduler(r)
    return LeRobotConfig(
        era=era, n_obs_steps=n_obs, horizon=horizon, n_action_steps=n_action, obs_shapes=shapes,
        image_keys=images, action_dim=action_dim, modes=modes, crop_shape=crop,
        use_group_norm=r.bool("use_group_norm", True),
        num_keypoints=r.int("spatial_softmax_num_keypoints", 1, MAX_KEYPOINTS, 32),
        separate_rgb_encoders=r.bool("use_separate_rgb_encoder_per_camera", False),
        down_dims=down, kernel_size=kernel, n_groups=n_groups,
        diffusion_step_embed_dim=_even(r.int("diffusion_step_embed_dim", 4, LIMITS.step_embed_dim, 128)),
        use_film_scale_modulation=r.bool("use_film_scale_modulation", True),
        scheduler=scheduler, num_inference_steps=steps,
    )


def _check_unsupported(config: dict) -> None:
    """Fields LeRobot uses at inference that parapolicy does not reproduce: named, not ignored."""
    reasons = []
    if config.get("vision_backbone", "resnet18") != "resnet18":
        reasons.append(f"vision_backbone={config.get('vision_backbone')!r} (resnet18 only)")
    if config.get("resize_shape") is not None:
        reasons.append(f"resize_shape={config.get('resize_shape')!r} (no resize supported)")
    if config.get("use_peft", False) is not False:
        reasons.append("use_peft=true (PEFT adapters are not applied)")
    if reasons:
        raise CheckpointError(f"LeRobot config.json uses unsupported settings: {'; '.join(reasons)}")


def _shape(r: Fields, name: str, value) -> tuple:
    """One feature shape: (D,) for vectors, (C, H, W) for images."""
    if isinstance(value, (list, tuple)) and len(value) == 3:
        shape = tuple(r.checks.int_list(r.where(name), value, 3, 3, 1, LIMITS.image_side))
        if shape[0] != 3:
            raise CheckpointError(f"config.json {name}: expected a (3, H, W) RGB image shape, found {list(shape)}")
        return shape
    return tuple(r.checks.int_list(r.where(name), value, 1, 1, 1, LIMITS.vector_dim))


def _features_era(r: Fields):
    inputs, outputs = r.dict("input_features").cfg, r.dict("output_features").cfg
    mapping = r.dict("normalization_mapping", {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}).cfg
    for ftype, mode in mapping.items():
        if mode not in MODES:
            raise CheckpointError(f"config.json normalization_mapping[{ftype!r}]: expected one of {list(MODES)}, "
                                  f"found {mode!r:.60}")
    shapes, modes, action_dim = {}, {}, None
    for group, features in (("input_features", inputs), ("output_features", outputs)):
        for key, feature in features.items():
            where = f"{group}[{key!r}]"
            if not isinstance(feature, dict) or not isinstance(feature.get("type"), str):
                raise CheckpointError(f"config.json {where}: expected {{'type': ..., 'shape': [...]}}, "
                                      f"found {feature!r:.60}")
            shape = _shape(r, f"{where}.shape", feature.get("shape"))
            modes[key] = mapping.get(feature["type"], "IDENTITY")
            if group == "output_features":
                if key != ACTION:
                    raise CheckpointError(f"config.json output_features: expected only 'action', found {key!r}")
                if len(shape) != 1:
                    raise CheckpointError(f"config.json {where}.shape: expected (action_dim,), found {list(shape)}")
                action_dim = shape[0]
                continue
            expected = {"VISUAL": 3, "STATE": 1, "ENV": 1}.get(feature["type"])
            if expected is None or len(shape) != expected:
                raise CheckpointError(f"config.json {where}: expected type VISUAL (3-d shape) or STATE/ENV (1-d), "
                                      f"found type {feature['type']!r:.20} with shape {list(shape)}")
            shapes[key] = shape
    if action_dim is None:
        raise CheckpointError("config.json output_features: expected an 'action' feature, found none")
    return shapes, action_dim, modes


def _hub_2024_era(r: Fields):
    raw_in, raw_out = r.dict("input_shapes").cfg, r.dict("output_shapes").cfg
    shapes = {key: _shape(r, f"input_shapes[{key!r}]", value) for key, value in raw_in.items()}
    if ACTION not in raw_out or len(raw_out) != 1:
        raise CheckpointError(f"config.json output_shapes: expected only 'action', found {list(raw_out)[:5]}")
    action = r.checks.int_list(r.where("output_shapes['action']"), raw_out[ACTION], 1, 1, 1, LIMITS.vector_dim)
    modes = {}
    for group in ("input_normalization_modes", "output_normalization_modes"):
        for key, mode in r.dict(group, {}).cfg.items():
            if mode not in ("mean_std", "min_max"):
                raise CheckpointError(f"config.json {group}[{key!r}]: expected 'mean_std' or 'min_max', "
                                      f"found {mode!r:.60}")
            if key not in shapes and key != ACTION:
                raise CheckpointError(f"config.json {group}: {key!r} is not one of the inputs {list(shapes)}")
            modes[key] = mode.upper()
    return shapes, action[0], modes


def _check_inputs(shapes: dict, images: tuple) -> None:
    """LeRobot's DiffusionPolicy: observation.state plus images and/or environment state."""
    known = {STATE, ENV, *images}
    unknown = [k for k in shapes if k not in known]
    bad_images = [k for k in images if not k.startswith("observation.image")]
    if unknown or bad_images or STATE not in shapes:
        raise CheckpointError(f"LeRobot inputs {list(shapes)}: expected {STATE!r} plus optional 'observation.image*' "
                              f"cameras and/or {ENV!r}")
    if len(images) > MAX_CAMERAS:
        raise CheckpointError(f"LeRobot inputs: expected at most {MAX_CAMERAS} cameras, found {len(images)}")
    if len({shapes[k] for k in images}) > 1:
        raise CheckpointError(f"LeRobot cameras {list(images)}: expected one image shape, found "
                              f"{[list(shapes[k]) for k in images]}")


def _crop(r: Fields, shapes: dict, images: tuple):
    if not images:
        return None
    crop = r.raw("crop_shape")  # required with cameras: its default changed in 0.4.4
    if crop is None:
        return None
    crop = tuple(r.checks.int_list(r.where("crop_shape"), crop, 2, 2, 1, LIMITS.image_side))
    _, h, w = shapes[images[0]]
    if crop[0] > h or crop[1] > w:
        raise CheckpointError(f"config.json crop_shape {list(crop)}: expected to fit in the images ({h}, {w})")
    return crop


def _even(dim: int) -> int:
    if dim % 2:
        raise CheckpointError(f"config.json diffusion_step_embed_dim: expected an even number, found {dim}")
    return dim


def _scheduler(r: Fields):
    kind = r.choice("noise_scheduler_type", SCHEDULERS, "DDPM")
    train_steps = r.int("num_train_timesteps", 1, MAX_TRAIN_TIMESTEPS, 100)
    beta_start = r.float("beta_start", 0.0, 1.0, 1e-4)
    beta_end = r.float("beta_end", 0.0, 1.0, 0.02)
    if not 0 < beta_start <= beta_end < 1:
        raise CheckpointError(f"config.json betas: expected 0 < beta_start <= beta_end < 1, found "
                              f"{beta_start}, {beta_end}")
    settings = {
        "_target_": f"diffusers.{SCHEDULER_KINDS[kind.lower()]}",
        "num_train_timesteps": train_steps,
        "beta_start": beta_start,
        "beta_end": beta_end,
        "beta_schedule": r.choice("beta_schedule", BETA_SCHEDULES, "squaredcos_cap_v2"),
        "clip_sample": r.bool("clip_sample", True),
        "clip_sample_range": r.float("clip_sample_range", 1e-6, 1e6, 1.0),
        "prediction_type": r.choice("prediction_type", ("epsilon", "sample"), "epsilon"),
    }
    if r.cfg.get("num_inference_steps") is None:
        steps = train_steps
        if steps > MAX_INFERENCE_STEPS:
            raise CheckpointError(f"config.json num_inference_steps: null means num_train_timesteps={train_steps}; "
                                  f"expected at most {MAX_INFERENCE_STEPS} steps (state num_inference_steps)")
    else:
        steps = r.int("num_inference_steps", 1, min(train_steps, MAX_INFERENCE_STEPS))
    return settings, steps
