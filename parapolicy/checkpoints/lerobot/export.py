"""Write a policy as a LeRobot DiffusionPolicy directory in the layout of a chosen release.

Layouts (``era``):

* ``"hub-2024"``: config.json as ``PyTorchModelHubMixin`` wrote LeRobot's dataclass before
  2025 (sorted keys, no ``type``, ``input_shapes``, lower-case per-key modes); stats buffers.
* ``"0.3"``: draccus config with ``type``, features and ``normalization_mapping``; stats buffers.
* ``"0.4"``, ``"0.5"``, ``"0.6"``: the same schema with each release's fields; stats in the
  processor files beside ``policy_preprocessor.json`` / ``policy_postprocessor.json``.

Inference fields come from the policy; training and hub fields get LeRobot's defaults.
Exportable: LeRobot-loaded policies, and DP UNet low-dim policies with global conditioning
(``obs`` becomes ``observation.state``; DP's affine normaliser becomes MIN_MAX statistics,
so actions agree to float rounding, not bit for bit).
"""

from __future__ import annotations

import json
import os

from parapolicy.checkpoints.lerobot.config import ACTION, ENV, STATE, LeRobotConfig
from parapolicy.checkpoints.lerobot.model import ENCODER, UNET, dp_unet_key_to_lerobot
from parapolicy.checkpoints.lerobot.stats import POST_STATS, PRE_STATS
from parapolicy.errors import CheckpointError
from parapolicy.policy import GLOBAL, Policy

ERAS = ("hub-2024", "0.3", "0.4", "0.5", "0.6")
_BASE = {  # PreTrainedConfig fields after n_obs_steps, per era (draccus writes base fields first)
    "0.3": ["device", "use_amp", "push_to_hub", "repo_id", "private", "tags", "license"],
    "0.4": ["device", "use_amp", "push_to_hub", "repo_id", "private", "tags", "license", "pretrained_path"],
    "0.5": ["device", "use_amp", "use_peft", "push_to_hub", "repo_id", "private", "tags", "license",
            "pretrained_path"],
    "0.6": ["device", "use_amp", "use_peft", "push_to_hub", "repo_id", "private", "tags", "license",
            "pretrained_path", "pretrained_revision"],
}
_VISION = ["vision_backbone", "crop_shape", "crop_is_random", "pretrained_backbone_weights", "use_group_norm",
           "spatial_softmax_num_keypoints", "use_separate_rgb_encoder_per_camera"]
_UNET = ["down_dims", "kernel_size", "n_groups", "diffusion_step_embed_dim", "use_film_scale_modulation"]
_NOISE = ["noise_scheduler_type", "num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
          "prediction_type", "clip_sample", "clip_sample_range", "num_inference_steps"]
_TRAIN = ["do_mask_loss_for_padding", "optimizer_lr", "optimizer_betas", "optimizer_eps", "optimizer_weight_decay",
          "scheduler_name", "scheduler_warmup_steps"]
DEFAULT_MAPPING = {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
DEFAULTS = {
    "device": "cpu", "use_amp": False, "use_peft": False, "push_to_hub": True, "repo_id": None, "private": None,
    "tags": None, "license": None, "pretrained_path": None, "pretrained_revision": None, "drop_n_last_frames": 7,
    "vision_backbone": "resnet18", "resize_shape": None, "crop_ratio": 1.0, "crop_is_random": True,
    "pretrained_backbone_weights": None, "compile_model": False, "compile_mode": "reduce-overhead",
    "gradient_checkpointing": False, "do_mask_loss_for_padding": False, "optimizer_lr": 1e-4,
    "optimizer_betas": [0.95, 0.999], "optimizer_eps": 1e-8, "optimizer_weight_decay": 1e-6,
    "scheduler_name": "cosine", "scheduler_warmup_steps": 500,
}


def config_fields(era: str) -> list[str]:
    """config.json keys in the order the release writes them."""
    if era == "hub-2024":
        return sorted(["n_obs_steps", "horizon", "n_action_steps", "input_shapes", "output_shapes",
                       "input_normalization_modes", "output_normalization_modes", *_VISION, *_UNET, *_NOISE,
                       "do_mask_loss_for_padding"])
    if era not in _BASE:
        raise CheckpointError(f"unknown LeRobot layout {era!r}; expected one of {list(ERAS)}")
    head = ["type", "n_obs_steps"] + (["normalization_mapping"] if era == "0.3" else [])
    head += ["input_features", "output_features", *_BASE[era], "horizon", "n_action_steps"]
    head += [] if era == "0.3" else ["normalization_mapping"]
    vision = list(_VISION)
    if era in ("0.5", "0.6"):  # 0.4.4 added resize_shape and crop_ratio after vision_backbone
        vision[1:1] = ["resize_shape", "crop_ratio"]
    unet = _UNET + (["gradient_checkpointing"] if era == "0.6" else [])
    noise = _NOISE + (["compile_model", "compile_mode"] if era in ("0.5", "0.6") else [])
    return head + ["drop_n_last_frames", *vision, *unet, *noise, *_TRAIN]


def export_lerobot(policy: Policy, out_dir: str, era: str = "0.4") -> str:
    """Write ``policy`` to ``out_dir`` as a LeRobot directory of release ``era``; returns ``out_dir``."""
    from safetensors.torch import save_file

    fields = config_fields(era)
    config, stats, encoder_sd = _exportable(policy)
    os.makedirs(out_dir, exist_ok=True)
    tensors = {UNET + dp_unet_key_to_lerobot(k): v for k, v in policy.model.state_dict().items()}
    tensors.update({ENCODER + k: v for k, v in encoder_sd.items()})
    values = _config_values(config, era)
    if era in ("hub-2024", "0.3"):
        for key, entry in stats.items():
            for stat, value in entry.items():
                name = key.replace(".", "_")
                if key == ACTION:
                    tensors[f"normalize_targets.buffer_{name}.{stat}"] = value
                    tensors[f"unnormalize_outputs.buffer_{name}.{stat}"] = value
                else:
                    tensors[f"normalize_inputs.buffer_{name}.{stat}"] = value
    else:
        flat = {f"{k}.{s}": v for k, e in stats.items() for s, v in e.items()}
        save_file(_dense(flat), os.path.join(out_dir, PRE_STATS))
        save_file(_dense({k: v for k, v in flat.items() if k.startswith(ACTION + ".")}),
                  os.path.join(out_dir, POST_STATS))
        _write_json(os.path.join(out_dir, "policy_preprocessor.json"), _processor_json(values, "pre"))
        _write_json(os.path.join(out_dir, "policy_postprocessor.json"), _processor_json(values, "post"))
    save_file(_dense(tensors), os.path.join(out_dir, "model.safetensors"))
    _write_json(os.path.join(out_dir, "config.json"), {k: values.get(k, DEFAULTS.get(k)) for k in fields})
    return out_dir


def _exportable(policy: Policy):
    """(LeRobotConfig, stats {key: {stat: tensor}}, encoder state dict) for ``policy``."""
    spec = policy.spec
    if spec.family == "lerobot_diffusion":
        norm = policy.normalizer
        stats = {k: {s: v.detach().cpu() for s, v in d.items()} for k, d in norm.stats.items()}
        return spec.source["config"], stats, policy.obs_encoder.state_dict()
    if spec.family != "unet_lowdim" or spec.cond_mode != GLOBAL or spec.pred_action_steps_only:
        raise CheckpointError(f"exporting a {spec.family!r} policy to LeRobot format is not supported; expected "
                              "a LeRobot policy or a global-conditioning unet_lowdim policy")
    if spec.action_start != spec.n_obs_steps - 1:
        raise CheckpointError("LeRobot executes actions from n_obs_steps-1: export needs oa_step_convention=True")
    unet, sched = policy.model, policy.scheduler.config
    config = LeRobotConfig(
        era="features", n_obs_steps=spec.n_obs_steps, horizon=spec.horizon, n_action_steps=spec.n_action_steps,
        obs_shapes={STATE: tuple(spec.obs_shapes["obs"])}, image_keys=(), action_dim=spec.action_dim,
        modes={STATE: "MIN_MAX", ACTION: "MIN_MAX"}, crop_shape=None, use_group_norm=True, num_keypoints=32,
        separate_rgb_encoders=False, down_dims=tuple(m[0].blocks[0].block[0].out_channels for m in unet.down_modules),
        kernel_size=unet.down_modules[0][0].blocks[0].block[0].kernel_size[0],
        n_groups=unet.down_modules[0][0].blocks[0].block[1].num_groups,
        diffusion_step_embed_dim=unet.diffusion_step_encoder[0].dim,
        use_film_scale_modulation=unet.down_modules[0][0].cond_predict_scale,
        scheduler={"_target_": f"diffusers.{type(policy.scheduler).__name__}", **{
            k: sched[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "clip_sample",
                                  "clip_sample_range", "prediction_type")}},
        num_inference_steps=len(policy.scheduler.timesteps),
    )
    stats = {STATE: _minmax_from_affine(policy.normalizer, "obs"), ACTION: _minmax_from_affine(policy.normalizer, "action")}
    return config, stats, {}


def _minmax_from_affine(normalizer, key) -> dict:
    """DP maps x -> x*scale+offset onto [-1, 1]; the equivalent [min, max] per dimension."""
    entry = normalizer.params_dict[key]
    scale, offset = entry["scale"].detach().cpu(), entry["offset"].detach().cpu()
    return {"min": (-1 - offset) / scale, "max": (1 - offset) / scale}


def _feature_type(key: str, shape) -> str:
    return "VISUAL" if len(shape) == 3 else ("ENV" if key == ENV else "STATE")


def _config_values(config: LeRobotConfig, era: str) -> dict:
    sched = config.scheduler
    values = {
        "type": "diffusion", "n_obs_steps": config.n_obs_steps, "horizon": config.horizon,
        "n_action_steps": config.n_action_steps,
        "crop_shape": list(config.crop_shape) if config.crop_shape else None,
        "use_group_norm": config.use_group_norm, "spatial_softmax_num_keypoints": config.num_keypoints,
        "use_separate_rgb_encoder_per_camera": config.separate_rgb_encoders, "down_dims": list(config.down_dims),
        "kernel_size": config.kernel_size, "n_groups": config.n_groups,
        "diffusion_step_embed_dim": config.diffusion_step_embed_dim,
        "use_film_scale_modulation": config.use_film_scale_modulation,
        "noise_scheduler_type": sched["_target_"].rsplit(".", 1)[-1].replace("Scheduler", ""),
        "num_inference_steps": config.num_inference_steps,
        **{k: sched[k] for k in ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end",
                                 "prediction_type", "clip_sample", "clip_sample_range")},
    }
    if era == "0.6":
        values["pretrained_backbone_weights"] = None if config.use_group_norm else "ResNet18_Weights.IMAGENET1K_V1"
    modes = {k: m for k, m in config.modes.items() if m != "IDENTITY"}
    if era == "hub-2024":
        bad = sorted({m for m in modes.values() if m not in ("MEAN_STD", "MIN_MAX")})
        if bad:
            raise CheckpointError(f"the 2024 LeRobot layout has only mean_std/min_max modes, found {bad}")
        values["input_shapes"] = {k: list(s) for k, s in config.obs_shapes.items()}
        values["output_shapes"] = {ACTION: [config.action_dim]}
        values["input_normalization_modes"] = {k: m.lower() for k, m in modes.items() if k != ACTION}
        values["output_normalization_modes"] = {k: m.lower() for k, m in modes.items() if k == ACTION}
        return values
    inputs = {k: {"type": _feature_type(k, s), "shape": list(s)} for k, s in config.obs_shapes.items()}
    mapping = {}
    for key, feature in [*inputs.items(), (ACTION, {"type": "ACTION"})]:
        mode = config.modes.get(key, "IDENTITY")
        if mapping.setdefault(feature["type"], mode) != mode:
            raise CheckpointError(f"LeRobot maps modes per feature type: {feature['type']} features have both "
                                  f"{mapping[feature['type']]} and {mode}")
    values["input_features"] = inputs
    values["output_features"] = {ACTION: {"type": "ACTION", "shape": [config.action_dim]}}
    final = dict(DEFAULT_MAPPING)  # LeRobot writes its default mapping; ENV stays absent (identity)
    final.update({t: m for t, m in mapping.items() if m != "IDENTITY" or t in DEFAULT_MAPPING})
    values["normalization_mapping"] = final
    return values


def _processor_json(values: dict, which: str) -> dict:
    """LeRobot >= 0.4 pipeline descriptions (the stats live in the ``state_file`` beside them)."""
    features = {**values["input_features"], **values["output_features"]}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    if which == "pre":
        norm = {"registry_name": "normalizer_processor", "config": {
            "eps": 1e-8, "features": features, "norm_map": values["normalization_mapping"]}, "state_file": PRE_STATS}
        steps = [{"registry_name": "rename_observations_processor", "config": {"rename_map": {}}},
                 {"registry_name": "to_batch_processor", "config": {}}, device, norm]
        return {"name": "policy_preprocessor", "steps": steps}
    norm = {"registry_name": "unnormalizer_processor", "config": {
        "eps": 1e-8, "features": values["output_features"], "norm_map": values["normalization_mapping"]},
        "state_file": POST_STATS}
    return {"name": "policy_postprocessor", "steps": [norm, device]}


def _dense(tensors: dict) -> dict:
    return {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}


def _write_json(path: str, data) -> None:
    with open(path, "w") as f:
        json.dump(data, f, indent=4)

