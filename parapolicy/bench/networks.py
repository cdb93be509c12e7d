"""The networks the benchmarks measure, built the same way by every script.

The shipped PushT keypoint policy; a randomly initialised upstream-size UNet low-dim policy
(down_dims 256/512/1024, horizon 16) whose dynamics are sharper than a trained net's; an
upstream-size hybrid-image policy (ResNet-18 encoder on 2 frames of 96x96, UNet 512/1024/2048).
``with_scheduler`` swaps a policy's inference schedule (DDPM-100, DDIM-16, DPM-Solver-16) on the
same weights, the user's fewer-steps alternative.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import torch

import parapolicy
from parapolicy.checkpoints.dp_builders import build_from_policy_cfg
from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.models.normalizer import LinearNormalizer
from parapolicy.policy import Policy

SCHEDULERS = {
    "DDPM-100": ({"_target_": "diffusers.DDPMScheduler", "variance_type": "fixed_small", "clip_sample": True}, 100),
    "DDIM-16": ({"_target_": "diffusers.DDIMScheduler", "set_alpha_to_one": True, "steps_offset": 0,
                 "clip_sample": True}, 16),
    "DPMSolver-16": ({"_target_": "diffusers.DPMSolverMultistepScheduler"}, 16),
}
COMMON = {"num_train_timesteps": 100, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "squaredcos_cap_v2",
          "prediction_type": "epsilon"}
IMAGE_META = {"obs": {"image": {"shape": [3, 96, 96], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
              "action": {"shape": [2]}}


def _random_policy(cfg, obs_norm: dict, device) -> Policy:
    torch.manual_seed(0)
    networks, scheduler = build_from_policy_cfg(cfg)
    norm = LinearNormalizer()
    for key, (dim, scale) in obs_norm.items():
        norm.set_field(key, torch.full((dim,), scale), torch.full((dim,), -1.0))
    return Policy(networks.spec, networks.model, norm, scheduler, networks.obs_encoder).to(device)


def upstream_size_unet(device) -> Policy:
    cfg = {
        "_target_": "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy",
        "model": {"input_dim": 2, "global_cond_dim": 40, "diffusion_step_embed_dim": 256,
                  "down_dims": [256, 512, 1024], "kernel_size": 5, "n_groups": 8, "cond_predict_scale": True},
        "noise_scheduler": {"_target_": "diffusers.DDPMScheduler", **COMMON},
        "horizon": 16, "obs_dim": 20, "action_dim": 2, "n_action_steps": 8, "n_obs_steps": 2,
        "num_inference_steps": 100, "obs_as_global_cond": True, "oa_step_convention": True,
    }
    return _random_policy(cfg, {"obs": (20, 1 / 256), "action": (2, 1 / 256)}, device)


def hybrid_image_unet(device) -> Policy:
    cfg = {
        "_target_": "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy",
        "shape_meta": IMAGE_META, "noise_scheduler": {"_target_": "diffusers.DDPMScheduler", **COMMON},
        "horizon": 16, "n_action_steps": 8, "n_obs_steps": 2, "num_inference_steps": 100, "obs_as_global_cond": True,
        "crop_shape": [84, 84], "diffusion_step_embed_dim": 128, "down_dims": [512, 1024, 2048], "kernel_size": 5,
        "n_groups": 8, "cond_predict_scale": True, "obs_encoder_group_norm": True, "eval_fixed_crop": True,
    }
    return _random_policy(cfg, {"image": (3, 1.0), "agent_pos": (2, 1 / 256), "action": (2, 1 / 256)}, device)


POLICIES = {
    "shipped_pusht": lambda device: parapolicy.load_policy(os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"),
                                                           device=device),
    "upstream_size_unet": upstream_size_unet,
    "hybrid_image_unet": hybrid_image_unet,
}


def with_scheduler(policy: Policy, name: str, steps: int | None = None) -> Policy:
    """The same weights under schedule ``name`` (a ``SCHEDULERS`` key), at its steps or ``steps``."""
    extra, default_steps = SCHEDULERS[name]
    steps = default_steps if steps is None else steps
    spec = dataclasses.replace(policy.spec, num_inference_steps=steps)
    return Policy(spec, policy.model, policy.normalizer, build_scheduler({**COMMON, **extra}), policy.obs_encoder)


INFERENCE = {"DDPM-100": ("ddpm", 100), "DDIM-16": ("ddim", 16), "DDIM-10": ("ddim", 10)}  # with_inference's args


def table_observations(policy: Policy, count: int, pname: str, recorded: str) -> list:
    """``count`` batch-1 observations: for the shipped policy the PushT ones recorded in
    ``recorded`` (benchmarks/samplers.json), otherwise ``random_obs`` rolled by 0, 1, 2, ..."""
    if pname == "shipped_pusht":
        with open(recorded) as f:
            stored = json.load(f)["observations"][:count]
        return [{"obs": torch.as_tensor(np.array(o, dtype=np.float32))[None]} for o in stored]
    return [{k: v.roll(i, dims=-1) for k, v in random_obs(policy, 1).items()} for i in range(count)]


def random_pixel_observations(policy: Policy, count: int) -> torch.Tensor:
    """(count, n_obs_steps, D) seeded observations in the range of the random-init policies'
    normalizer (pixels, 0-500): the rounds benchmark's (scripts/bench_rounds.py), which the tests
    that pin its cases reuse; a larger ``count`` keeps the first ones."""
    shape = (policy.spec.n_obs_steps, *policy.spec.obs_shapes["obs"])
    return torch.rand(count, *shape, generator=torch.Generator().manual_seed(0)) * 500.0


def random_obs(policy: Policy, batch: int) -> dict:
    """A seeded batch of observations of the policy's shapes (images in [0, 1], vectors in [0, 500])."""
    g = torch.Generator().manual_seed(1)
    to = policy.spec.n_obs_steps
    return {k: torch.rand(batch, to, *shape, generator=g) * (1.0 if len(shape) == 3 else 500.0)
            for k, shape in policy.spec.obs_shapes.items()}
