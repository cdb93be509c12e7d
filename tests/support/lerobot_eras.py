"""LeRobot config.json as each release writes it (facts), and directories built from them.

Field names and their order are copied from LeRobot's source (huggingface/lerobot):
* HUB_2024: ``DiffusionConfig`` at 538455a96 (2024-10-30, the last Hydra-era version) as
  ``PyTorchModelHubMixin`` saved it: ``asdict(config)`` dumped with ``sort_keys=True``, no
  ``type`` (hub checkpoints such as ``lerobot/diffusion_pusht``). PushT-image defaults.
* HUB_2024_KEYPOINTS: the same schema with ``configs/policy/diffusion_pusht_keypoints.yaml``
  (environment state min_max-normalised, DDIM, 10 inference steps).
* V0_3: draccus ``encode(config, PreTrainedConfig)`` of v0.3.3: ``type`` first, then the
  base-class fields (``normalization_mapping`` is a base field there), then DiffusionConfig's.
* V0_4: v0.4.0-0.4.3 (``normalization_mapping`` moved into DiffusionConfig, ``pretrained_path``).
* V0_5: v0.4.4-0.5.x (``use_peft``, ``resize_shape``, ``crop_ratio``, ``compile_*``; no crop).
* V0_6: v0.6.x defaults (horizon 64, n_action_steps 32, BatchNorm ImageNet backbone, one
  encoder per camera, ``gradient_checkpointing``, ``pretrained_revision``).

Values are each release's defaults except the network sizes, which ``small`` shrinks so
the tests stay fast (field names and order untouched).
"""

from __future__ import annotations

import copy
import json
import os

import torch
from safetensors.torch import save_file

from parapolicy.checkpoints.lerobot import POST_STATS, PRE_STATS, dp_unet_key_to_lerobot, parse_config
from parapolicy.checkpoints.lerobot.model import build_networks

NULL = None
_NOISE_2024 = {"beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2", "beta_start": 0.0001, "clip_sample": True,
               "clip_sample_range": 1.0}

HUB_2024 = {
    **_NOISE_2024, "crop_is_random": True, "crop_shape": [84, 84], "diffusion_step_embed_dim": 128,
    "do_mask_loss_for_padding": False, "down_dims": [512, 1024, 2048], "horizon": 16,
    "input_normalization_modes": {"observation.image": "mean_std", "observation.state": "min_max"},
    "input_shapes": {"observation.image": [3, 96, 96], "observation.state": [2]},
    "kernel_size": 5, "n_action_steps": 8, "n_groups": 8, "n_obs_steps": 2, "noise_scheduler_type": "DDPM",
    "num_inference_steps": NULL, "num_train_timesteps": 100, "output_normalization_modes": {"action": "min_max"},
    "output_shapes": {"action": [2]}, "prediction_type": "epsilon", "pretrained_backbone_weights": NULL,
    "spatial_softmax_num_keypoints": 32, "use_film_scale_modulation": True, "use_group_norm": True,
    "use_separate_rgb_encoder_per_camera": False, "vision_backbone": "resnet18",
}
HUB_2024_KEYPOINTS = {
    **HUB_2024, "down_dims": [256, 512, 1024], "noise_scheduler_type": "DDIM", "num_inference_steps": 10,
    "input_normalization_modes": {"observation.environment_state": "min_max", "observation.state": "min_max"},
    "input_shapes": {"observation.environment_state": [16], "observation.state": [2]},
}
_PUSHT_FEATURES = {
    "input_features": {"observation.image": {"type": "VISUAL", "shape": [3, 96, 96]},
                       "observation.state": {"type": "STATE", "shape": [2]}},
    "output_features": {"action": {"type": "ACTION", "shape": [2]}},
}
_MAPPING = {"normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}}
_HUB = {"device": "cuda", "use_amp": False, "push_to_hub": True, "repo_id": NULL, "private": NULL, "tags": NULL,
        "license": NULL}
_VISION_03 = {"drop_n_last_frames": 7, "vision_backbone": "resnet18", "crop_shape": [84, 84], "crop_is_random": True,
              "pretrained_backbone_weights": NULL, "use_group_norm": True, "spatial_softmax_num_keypoints": 32,
              "use_separate_rgb_encoder_per_camera": False}
_UNET = {"down_dims": [512, 1024, 2048], "kernel_size": 5, "n_groups": 8, "diffusion_step_embed_dim": 128,
         "use_film_scale_modulation": True}
_NOISE = {"noise_scheduler_type": "DDPM", "num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2",
          "beta_start": 0.0001, "beta_end": 0.02, "prediction_type": "epsilon", "clip_sample": True,
          "clip_sample_range": 1.0, "num_inference_steps": NULL}
_TRAIN = {"do_mask_loss_for_padding": False, "optimizer_lr": 0.0001, "optimizer_betas": [0.95, 0.999],
          "optimizer_eps": 1e-08, "optimizer_weight_decay": 1e-06, "scheduler_name": "cosine",
          "scheduler_warmup_steps": 500}

V0_3 = {"type": "diffusion", "n_obs_steps": 2, **_MAPPING, **_PUSHT_FEATURES, **_HUB, "horizon": 16,
        "n_action_steps": 8, **_VISION_03, **_UNET, **_NOISE, **_TRAIN}
V0_4 = {"type": "diffusion", "n_obs_steps": 2, **_PUSHT_FEATURES, **_HUB, "pretrained_path": NULL, "horizon": 16,
        "n_action_steps": 8, **_MAPPING, **_VISION_03, **_UNET, **_NOISE, **_TRAIN}
_HUB_05 = {"device": "cuda", "use_amp": False, "use_peft": False, "push_to_hub": True, "repo_id": NULL,
           "private": NULL, "tags": NULL, "license": NULL, "pretrained_path": NULL}
_VISION_05 = {"drop_n_last_frames": 7, "vision_backbone": "resnet18", "resize_shape": NULL, "crop_ratio": 1.0,
              "crop_shape": NULL, "crop_is_random": True, "pretrained_backbone_weights": NULL, "use_group_norm": True,
              "spatial_softmax_num_keypoints": 32, "use_separate_rgb_encoder_per_camera": False}
_COMPILE = {"compile_model": False, "compile_mode": "reduce-overhead"}
V0_5 = {"type": "diffusion", "n_obs_steps": 2, **_PUSHT_FEATURES, **_HUB_05, "horizon": 16, "n_action_steps": 8,
        **_MAPPING, **_VISION_05, **_UNET, **_NOISE, **_COMPILE, **_TRAIN}
V0_6 = {"type": "diffusion", "n_obs_steps": 2, **_PUSHT_FEATURES, **_HUB_05, "pretrained_revision": NULL,
        "horizon": 64, "n_action_steps": 32, **_MAPPING,
        **{**_VISION_05, "pretrained_backbone_weights": "ResNet18_Weights.IMAGENET1K_V1", "use_group_norm": False,
           "use_separate_rgb_encoder_per_camera": True},
        **_UNET, "gradient_checkpointing": False, **_NOISE, **_COMPILE, **_TRAIN}

ERA_CONFIGS = {"hub-2024": HUB_2024, "0.3": V0_3, "0.4": V0_4, "0.5": V0_5, "0.6": V0_6}


def small(config: dict, image_side: int = 64) -> dict:
    """Shrink the network sizes of a release config; every field name and position is kept.

    64-pixel images give a 2x2 feature map: the smallest where SpatialSoftmax is not constant.
    """
    out = copy.deepcopy(config)
    out["down_dims"], out["diffusion_step_embed_dim"], out["spatial_softmax_num_keypoints"] = [16, 32], 16, 8
    out["kernel_size"], out["n_groups"] = 3, 4
    for group in ("input_shapes", "input_features"):
        for key, value in out.get(group, {}).items():
            shape = value["shape"] if isinstance(value, dict) else value
            if len(shape) == 3:
                shape[1:] = [image_side, image_side]
    if out.get("crop_shape"):
        out["crop_shape"] = [image_side - 4, image_side - 4]
    return out


# a 0.5-era policy without cameras: small and fast to build
STATE_ONLY_0_5 = {**small(V0_5), "input_features": {
    "observation.environment_state": {"type": "ENV", "shape": [16]},
    "observation.state": {"type": "STATE", "shape": [2]}}}


def write_dir(root, config: dict, stats_layout: str, seed: int = 0) -> str:
    """A LeRobot directory with ``config`` written verbatim and random weights and statistics.

    ``stats_layout``: ``"buffers"`` (<= 0.3: inside model.safetensors) or ``"processor"``
    (>= 0.4: processor safetensors files). BatchNorm running statistics are randomised so
    eval mode visibly uses them.
    """
    os.makedirs(root, exist_ok=True)
    parsed = parse_config(config)
    torch.manual_seed(seed)
    networks = build_networks(parsed, device="cpu")
    encoder, unet = networks.obs_encoder, networks.model
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.num_batches_tracked.fill_(1000)
    tensors = {"diffusion.unet." + dp_unet_key_to_lerobot(k): v for k, v in unet.state_dict().items()}
    tensors.update({"diffusion." + k: v for k, v in encoder.state_dict().items()})
    stats = random_stats(parsed, seed)
    if stats_layout == "buffers":
        for key, entry in stats.items():
            name = key.replace(".", "_")
            groups = ["normalize_targets", "unnormalize_outputs"] if key == "action" else ["normalize_inputs"]
            tensors.update({f"{g}.buffer_{name}.{s}": v.clone() for g in groups for s, v in entry.items()})
    else:
        flat = {f"{k}.{s}": v for k, e in stats.items() for s, v in e.items()}
        save_file(flat, os.path.join(root, PRE_STATS))
        save_file({k: v for k, v in flat.items() if k.startswith("action.")}, os.path.join(root, POST_STATS))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(root, "model.safetensors"))
    with open(os.path.join(root, "config.json"), "w") as f:
        json.dump(config, f, indent=4)
    return str(root)


def random_stats(parsed, seed: int) -> dict:
    """Plausible PushT-like statistics for every normalised feature of ``parsed``."""
    g = torch.Generator().manual_seed(seed + 1)
    out = {}
    for key, mode in parsed.modes.items():
        if mode == "IDENTITY":
            continue
        shape = (parsed.action_dim,) if key == "action" else parsed.obs_shapes[key]
        if len(shape) == 3:
            shape = (shape[0], 1, 1)
        if mode == "MEAN_STD":
            out[key] = {"mean": 0.5 + 0.1 * torch.rand(shape, generator=g),
                        "std": 0.2 + 0.1 * torch.rand(shape, generator=g)}
        else:
            lo = 20 * torch.rand(shape, generator=g)
            names = {"MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"), "QUANTILE10": ("q10", "q90")}[mode]
            out[key] = {names[0]: lo, names[1]: lo + 400 + 50 * torch.rand(shape, generator=g)}
    return out


def lerobot_obs(policy, batch: int = 2, seed: int = 0) -> dict:
    """Random observations in the policy's own keys and ranges (images in [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in policy.spec.obs_shapes.items():
        full = (batch, policy.spec.n_obs_steps, *shape)
        out[key] = torch.rand(full, generator=g) if len(shape) == 3 else 500 * torch.rand(full, generator=g)
    return out
