"""LeRobot DiffusionPolicy ``pretrained_model/`` directories, without lerobot installed.

A directory holds ``config.json`` and ``model.safetensors``; normalisation statistics
live in the model file as buffers (lerobot <= 0.3) or in processor files next to it
(>= 0.4). The UNet is structurally DiffusionPolicy's, so its weights map by renaming
onto ``ConditionalUnet1D``; the image encoder and the normalisation formulas are
LeRobot's own and are reproduced here. Observation keys are LeRobot's feature names
(``observation.state``, ``observation.image``...), each (B, n_obs_steps, ...).
"""

from __future__ import annotations

import glob
import json
import os
import re

import torch
from torch import nn

from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.errors import CheckpointError
from parapolicy.models.unet1d import ConditionalUnet1D
from parapolicy.models.vision import center_crop, make_resnet18
from parapolicy.policy import GLOBAL, Policy, PolicySpec

STATE, ENV = "observation.state", "observation.environment_state"
EPS = 1e-8
_NORM_BUFFER_PREFIXES = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
PRE_STATS = "policy_preprocessor_step_3_normalizer_processor.safetensors"
POST_STATS = "policy_postprocessor_step_0_unnormalizer_processor.safetensors"


def is_lerobot_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(
        os.path.join(path, "model.safetensors")
    )


# ---------------------------------------------------------------------------- key mapping
def lerobot_unet_key_to_dp(key: str) -> str:
    """``conv1``/``conv2`` -> ``blocks.0``/``blocks.1``; bare down/up convs gain ``.conv``."""
    key = key.replace(".conv1.", ".blocks.0.").replace(".conv2.", ".blocks.1.")
    return re.sub(r"^((?:down|up)_modules\.\d+\.2)\.(weight|bias)$", r"\1.conv.\2", key)


def dp_unet_key_to_lerobot(key: str) -> str:
    key = re.sub(r"^((?:down|up)_modules\.\d+\.2)\.conv\.(weight|bias)$", r"\1.\2", key)
    return key.replace(".blocks.0.", ".conv1.").replace(".blocks.1.", ".conv2.")


# ---------------------------------------------------------------------------- networks
class LeRobotSpatialSoftmax(nn.Module):
    """LeRobot's keypoint pooling: softmax attention @ a fixed (H*W, 2) grid."""

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int):
        super().__init__()
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        self.num_kp, self.height, self.width = num_kp, height, width
        xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
        ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("pos_grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float())

    def forward(self, features):
        attention = torch.softmax(self.nets(features).reshape(-1, self.height * self.width), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.num_kp, 2)


class LeRobotRgbEncoder(nn.Module):
    """ResNet18 trunk (``backbone.N``) -> SpatialSoftmax -> Linear -> ReLU, center crop in eval."""

    def __init__(self, image_shape, crop_shape=None, use_group_norm=True, num_kp=32):
        super().__init__()
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else None
        self.backbone = nn.Sequential(*list(make_resnet18(use_group_norm).children())[:-2])
        hw = self.crop_shape or tuple(image_shape[1:])
        fh, fw = (int(hw[0]) + 31) // 32, (int(hw[1]) + 31) // 32
        self.pool = LeRobotSpatialSoftmax(512, fh, fw, num_kp)
        self.out = nn.Linear(num_kp * 2, num_kp * 2)
        self.feature_dim = num_kp * 2

    def forward(self, x):
        x = center_crop(x, self.crop_shape)
        return torch.relu(self.out(torch.flatten(self.pool(self.backbone(x)), start_dim=1)))


class LeRobotObsEncoder(nn.Module):
    """Per-step features [state, camera features in config order, environment state]."""

    def __init__(self, obs_shapes: dict, image_keys, crop_shape, use_group_norm, num_kp, separate_per_camera):
        super().__init__()
        self.obs_shapes = dict(obs_shapes)
        self.image_keys = list(image_keys)
        first = self.obs_shapes[self.image_keys[0]] if self.image_keys else None
        self.separate = bool(separate_per_camera) and len(self.image_keys) > 1
        if not self.image_keys:
            self.rgb_encoder = None
        elif self.separate:
            self.rgb_encoder = nn.ModuleList(
                LeRobotRgbEncoder(first, crop_shape, use_group_norm, num_kp) for _ in self.image_keys
            )
        else:
            self.rgb_encoder = LeRobotRgbEncoder(first, crop_shape, use_group_norm, num_kp)

    def output_dim(self) -> int:
        dim = sum(self.obs_shapes[k][0] for k in (STATE, ENV) if k in self.obs_shapes)
        return dim + 2 * self._num_kp() * len(self.image_keys)

    def _num_kp(self) -> int:
        enc = self.rgb_encoder[0] if isinstance(self.rgb_encoder, nn.ModuleList) else self.rgb_encoder
        return enc.pool.num_kp if enc is not None else 0

    def forward(self, obs: dict) -> torch.Tensor:
        feats = [obs[STATE]] if STATE in obs else []
        for i, key in enumerate(self.image_keys):
            enc = self.rgb_encoder[i] if self.separate else self.rgb_encoder
            feats.append(enc(obs[key]))
        if ENV in obs:
            feats.append(obs[ENV])
        return torch.cat(feats, dim=-1)


class LeRobotNormalizer(nn.Module):
    """LeRobot's MIN_MAX / MEAN_STD / IDENTITY maps (formula of the version that wrote it)."""

    def __init__(self, stats: dict, modes: dict, legacy: bool):
        super().__init__()
        self.modes = dict(modes)
        self.legacy = legacy  # <= 0.3: (x-min)/(max-min+eps)*2-1; >= 0.4: 2*(x-min)/denom-1
        self.stats = {k: {s: v.float() for s, v in d.items()} for k, d in stats.items()}

    @property
    def fields(self) -> list[str]:
        return list(self.modes)

    def _get(self, key, stat, like):
        return self.stats[key][stat].to(device=like.device, dtype=torch.float32)

    def normalize(self, key, x):
        x = x.to(dtype=torch.float32)
        mode = self.modes.get(key, "IDENTITY")
        if mode == "MEAN_STD":
            return (x - self._get(key, "mean", x)) / (self._get(key, "std", x) + EPS)
        if mode == "MIN_MAX":
            lo, hi = self._get(key, "min", x), self._get(key, "max", x)
            if self.legacy:
                return (x - lo) / (hi - lo + EPS) * 2 - 1
            denom = hi - lo
            denom = torch.where(denom == 0, torch.full_like(denom, EPS), denom)
            return 2 * (x - lo) / denom - 1
        return x

    def unnormalize(self, key, x):
        mode = self.modes.get(key, "IDENTITY")
        if mode == "MEAN_STD":
            return x * self._get(key, "std", x) + self._get(key, "mean", x)
        if mode == "MIN_MAX":
            lo, hi = self._get(key, "min", x), self._get(key, "max", x)
            if self.legacy:
                return (x + 1) / 2 * (hi - lo) + lo
            denom = hi - lo
            denom = torch.where(denom == 0, torch.full_like(denom, EPS), denom)
            return (x + 1) / 2 * denom + lo
        return x


# ---------------------------------------------------------------------------- config
def _features(config: dict):
    """(obs shapes in config order, image keys, action dim, normalisation mode per key)."""
    if "input_features" in config:
        inputs, outputs = config["input_features"], config["output_features"]
        mapping = config.get("normalization_mapping") or {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
        shapes = {k: tuple(v["shape"]) for k, v in inputs.items()}
        images = [k for k, v in inputs.items() if v.get("type") == "VISUAL"]
        modes = {k: mapping.get(v.get("type"), "IDENTITY") for k, v in {**inputs, **outputs}.items()}
        action = outputs.get("action")
    elif "input_shapes" in config:  # pre-2025 configs
        shapes = {k: tuple(v) for k, v in config["input_shapes"].items()}
        images = [k for k in shapes if k.startswith("observation.image")]
        modes = {**config.get("input_normalization_modes", {}), **config.get("output_normalization_modes", {})}
        modes = {k: v.upper() for k, v in modes.items()}
        action = {"shape": config["output_shapes"]["action"]}
    else:
        raise CheckpointError("LeRobot config.json has neither input_features nor input_shapes")
    if action is None:
        raise CheckpointError("LeRobot config.json has no 'action' output feature")
    unknown = [k for k in shapes if k not in images and k not in (STATE, ENV)]
    if unknown:
        raise CheckpointError(f"LeRobot inputs {unknown} are not supported (state, environment_state, images)")
    return shapes, images, int(tuple(action["shape"])[0]), modes


def _read_stats(path: str, weights: dict):
    """Stats from the >= 0.4 processor files, else from <= 0.3 buffers in the model file."""
    from safetensors.torch import load_file

    files = [os.path.join(path, PRE_STATS), os.path.join(path, POST_STATS)]
    found = [f for f in files if os.path.isfile(f)] or sorted(glob.glob(os.path.join(path, "*normalizer_processor.safetensors")))
    stats: dict = {}
    if found:
        for f in found:
            for key, value in load_file(f).items():
                feature, _, stat = key.rpartition(".")
                stats.setdefault(feature, {})[stat] = value
        return stats, False
    for key, value in weights.items():
        if key.startswith(_NORM_BUFFER_PREFIXES):
            buffer_name, stat = key.split(".")[1], key.split(".")[2]
            stats.setdefault(buffer_name[len("buffer_"):], {})[stat] = value
    return stats, True


def _stats_for(stats: dict, feature: str):
    """Buffers name features with '.' replaced by '_'; processor files keep the dots."""
    return stats.get(feature) or stats.get(feature.replace(".", "_"))


def load_lerobot(path: str, device="cpu") -> Policy:
    from safetensors.torch import load_file

    try:
        with open(os.path.join(path, "config.json")) as f:
            config = json.load(f)
        weights = load_file(os.path.join(path, "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read LeRobot checkpoint {path!r}: {exc}") from None
    if config.get("type", "diffusion") != "diffusion":
        raise CheckpointError(f"{path!r} holds a LeRobot {config.get('type')!r} policy, not 'diffusion'")
    shapes, images, action_dim, modes = _features(config)
    if config.get("vision_backbone", "resnet18") != "resnet18":
        raise CheckpointError(f"vision_backbone {config.get('vision_backbone')!r} is not supported (resnet18 only)")
    if config.get("resize_shape"):
        raise CheckpointError("LeRobot configs with resize_shape are not supported yet")
    to = int(config.get("n_obs_steps", 2))
    encoder = LeRobotObsEncoder(
        shapes, images, config.get("crop_shape"), config.get("use_group_norm", True),
        int(config.get("spatial_softmax_num_keypoints", 32)), config.get("use_separate_rgb_encoder_per_camera", False),
    )
    model = ConditionalUnet1D(
        input_dim=action_dim,
        global_cond_dim=encoder.output_dim() * to,
        diffusion_step_embed_dim=int(config.get("diffusion_step_embed_dim", 128)),
        down_dims=tuple(config.get("down_dims", (512, 1024, 2048))),
        kernel_size=int(config.get("kernel_size", 5)),
        n_groups=int(config.get("n_groups", 8)),
        cond_predict_scale=bool(config.get("use_film_scale_modulation", True)),
    )
    _load_weights(path, weights, model, encoder)
    stats, legacy = _read_stats(path, weights)
    normalizer_stats = {}
    for key in [*shapes, "action"]:
        if modes.get(key, "IDENTITY") == "IDENTITY":
            continue
        found = _stats_for(stats, key)
        if found is None:
            raise CheckpointError(f"{path!r}: no normalisation statistics for {key!r}")
        normalizer_stats[key] = found
    normalizer = LeRobotNormalizer(normalizer_stats, {k: modes.get(k, "IDENTITY") for k in [*shapes, "action"]}, legacy)
    scheduler = build_scheduler(_scheduler_cfg(config))
    spec = PolicySpec(
        family="lerobot_diffusion", horizon=int(config.get("horizon", 16)), n_obs_steps=to,
        n_action_steps=int(config.get("n_action_steps", 8)), action_dim=action_dim, obs_shapes=shapes,
        cond_mode=GLOBAL, action_start=to - 1, num_inference_steps=config.get("num_inference_steps"),
        source={"format": "lerobot", "path": os.path.abspath(path), "weights": "model.safetensors"},
    )
    return Policy(spec, model, normalizer, scheduler, encoder).to(device)


def _scheduler_cfg(config: dict) -> dict:
    kind = str(config.get("noise_scheduler_type", "DDPM")).upper()
    targets = {"DDPM": "diffusers.DDPMScheduler", "DDIM": "diffusers.DDIMScheduler"}
    if kind not in targets:
        raise CheckpointError(f"LeRobot noise_scheduler_type {kind!r} is not supported (DDPM, DDIM)")
    return {
        "_target_": targets[kind],
        "num_train_timesteps": int(config.get("num_train_timesteps", 100)),
        "beta_start": float(config.get("beta_start", 1e-4)),
        "beta_end": float(config.get("beta_end", 0.02)),
        "beta_schedule": config.get("beta_schedule", "squaredcos_cap_v2"),
        "clip_sample": bool(config.get("clip_sample", True)),
        "clip_sample_range": float(config.get("clip_sample_range", 1.0)),
        "prediction_type": config.get("prediction_type", "epsilon"),
    }


def _load_weights(path, weights, model, encoder) -> None:
    from parapolicy.checkpoints.dp_workspace import load_strict

    unet, rgb, unexpected = {}, {}, []
    for key, value in weights.items():
        if key.startswith("diffusion.unet."):
            unet[lerobot_unet_key_to_dp(key[len("diffusion.unet."):])] = value
        elif key.startswith("diffusion.rgb_encoder."):
            rgb["rgb_encoder." + key[len("diffusion.rgb_encoder."):]] = value
        elif not key.startswith(_NORM_BUFFER_PREFIXES):
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"{path!r}: unexpected weights {unexpected[:5]}")
    load_strict(model, unet, "diffusion.unet.", path)
    load_strict(encoder, rgb, "diffusion.", path)


# ---------------------------------------------------------------------------- export
def export_lerobot(policy: Policy, out_dir: str) -> str:
    """Write ``policy`` as a LeRobot (>= 0.4 layout) DiffusionPolicy directory.

    Supported: LeRobot-loaded policies and DP UNet low-dim policies with global
    conditioning (``obs`` becomes ``observation.state``; DP's affine normaliser becomes
    MIN_MAX statistics, so actions agree to float rounding, not bit for bit).
    """
    from safetensors.torch import save_file

    spec = policy.spec
    if spec.family == "lerobot_diffusion":
        shapes, norm = spec.obs_shapes, policy.normalizer
        stats = {k: {s: v.detach().cpu() for s, v in d.items()} for k, d in norm.stats.items()}
        modes, encoder_sd = dict(norm.modes), policy.obs_encoder.state_dict()
        encoder = policy.obs_encoder
    elif spec.family == "unet_lowdim" and spec.cond_mode == GLOBAL and not spec.pred_action_steps_only:
        if spec.action_start != spec.n_obs_steps - 1:
            raise CheckpointError("LeRobot executes actions from n_obs_steps-1: export needs oa_step_convention=True")
        shapes = {STATE: spec.obs_shapes["obs"]}
        stats = {STATE: _minmax_from_affine(policy.normalizer, "obs"), "action": _minmax_from_affine(policy.normalizer, "action")}
        modes, encoder_sd, encoder = {STATE: "MIN_MAX", "action": "MIN_MAX"}, {}, None
    else:
        raise CheckpointError(f"exporting a {spec.family!r} policy to LeRobot format is not supported yet")
    os.makedirs(out_dir, exist_ok=True)
    model_sd = {"diffusion.unet." + dp_unet_key_to_lerobot(k): v.detach().cpu().contiguous()
                for k, v in policy.model.state_dict().items()}
    model_sd.update({"diffusion." + k: v.detach().cpu().contiguous() for k, v in encoder_sd.items()})
    save_file(model_sd, os.path.join(out_dir, "model.safetensors"))
    pre = {f"{k}.{s}": v.contiguous() for k, d in stats.items() if k != "action" for s, v in d.items()}
    post = {f"action.{s}": v.contiguous() for s, v in stats["action"].items()}
    save_file(pre, os.path.join(out_dir, PRE_STATS))
    save_file(post, os.path.join(out_dir, POST_STATS))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(_lerobot_config(policy, shapes, modes, encoder), f, indent=2)
    return out_dir


def _minmax_from_affine(normalizer, key) -> dict:
    """DP maps x -> x*scale+offset onto [-1, 1]; the equivalent [min, max] per dimension."""
    entry = normalizer.params_dict[key]
    scale, offset = entry["scale"].detach().cpu(), entry["offset"].detach().cpu()
    return {"min": (-1 - offset) / scale, "max": (1 - offset) / scale}


def _lerobot_config(policy: Policy, shapes: dict, modes: dict, encoder) -> dict:
    spec, unet = policy.spec, policy.model
    sched = policy.scheduler.config
    inputs = {k: {"type": "VISUAL" if len(s) == 3 else ("ENV" if k == ENV else "STATE"), "shape": list(s)}
              for k, s in shapes.items()}
    first_rgb = None
    if encoder is not None and encoder.rgb_encoder is not None:
        first_rgb = encoder.rgb_encoder[0] if isinstance(encoder.rgb_encoder, nn.ModuleList) else encoder.rgb_encoder
    return {
        "type": "diffusion",
        "n_obs_steps": spec.n_obs_steps,
        "input_features": inputs,
        "output_features": {"action": {"type": "ACTION", "shape": [spec.action_dim]}},
        "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": modes.get(STATE, "MIN_MAX"),
                                  "ENV": modes.get(ENV, "MIN_MAX"), "ACTION": modes.get("action", "MIN_MAX")},
        "horizon": spec.horizon,
        "n_action_steps": spec.n_action_steps,
        "vision_backbone": "resnet18",
        "crop_shape": list(first_rgb.crop_shape) if first_rgb is not None and first_rgb.crop_shape else None,
        "use_group_norm": True,
        "spatial_softmax_num_keypoints": first_rgb.pool.num_kp if first_rgb is not None else 32,
        "use_separate_rgb_encoder_per_camera": bool(encoder is not None and encoder.separate),
        "down_dims": [m[0].out_channels for m in unet.down_modules],
        "kernel_size": unet.down_modules[0][0].blocks[0].block[0].kernel_size[0],
        "n_groups": unet.down_modules[0][0].blocks[0].block[1].num_groups,
        "diffusion_step_embed_dim": unet.diffusion_step_encoder[0].dim,
        "use_film_scale_modulation": unet.down_modules[0][0].cond_predict_scale,
        "noise_scheduler_type": "DDIM" if type(policy.scheduler).__name__ == "DDIMScheduler" else "DDPM",
        "num_train_timesteps": sched.num_train_timesteps,
        "beta_schedule": sched.beta_schedule,
        "beta_start": sched.beta_start,
        "beta_end": sched.beta_end,
        "prediction_type": sched.prediction_type,
        "clip_sample": sched.clip_sample,
        "clip_sample_range": sched.clip_sample_range,
        "num_inference_steps": spec.num_inference_steps,
    }
