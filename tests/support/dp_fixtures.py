"""Upstream-format checkpoints for every DiffusionPolicy class, built in the tests.

Each cfg mirrors the layout upstream's train.py stores (``policy`` with ``_target_``,
``noise_scheduler``, ``shape_meta``...; ``training.use_ema``), shrunk so the suite stays
fast. Weights are random but distinct for ``model`` and ``ema_model``.
"""

from __future__ import annotations

import torch

from parapolicy.checkpoints.dp_builders import build_from_policy_cfg
from parapolicy.checkpoints.dp_workspace import save_dp_workspace, upstream_state_dict
from parapolicy.models.normalizer import LinearNormalizer

DDPM = {
    "_target_": "diffusers.schedulers.scheduling_ddpm.DDPMScheduler",
    "num_train_timesteps": 100,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
}
DDIM = {
    "_target_": "diffusers.schedulers.scheduling_ddim.DDIMScheduler",
    "num_train_timesteps": 100,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "squaredcos_cap_v2",
    "clip_sample": True,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "prediction_type": "epsilon",
}
SMALL_UNET = {"diffusion_step_embed_dim": 16, "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
              "cond_predict_scale": True}
PUSHT_IMAGE_META = {
    "obs": {"image": {"shape": [3, 32, 32], "type": "rgb"}, "agent_pos": {"shape": [2], "type": "low_dim"}},
    "action": {"shape": [2]},
}


def unet_lowdim_global(steps=20):
    obs_dim, action_dim, to = 6, 2, 2
    return {
        "_target_": "diffusion_policy.policy.diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy",
        "model": {"_target_": "diffusion_policy.model.diffusion.conditional_unet1d.ConditionalUnet1D",
                  "input_dim": action_dim, "local_cond_dim": None, "global_cond_dim": obs_dim * to, **SMALL_UNET},
        "noise_scheduler": dict(DDPM), "horizon": 16, "obs_dim": obs_dim, "action_dim": action_dim,
        "n_action_steps": 8, "n_obs_steps": to, "num_inference_steps": steps, "obs_as_local_cond": False,
        "obs_as_global_cond": True, "pred_action_steps_only": False, "oa_step_convention": True,
    }


def unet_lowdim_inpaint():
    cfg = unet_lowdim_global()
    cfg["model"].update(input_dim=2 + 6, global_cond_dim=None)
    cfg.update(noise_scheduler=dict(DDIM), num_inference_steps=8, obs_as_global_cond=False,
               oa_step_convention=False)
    return cfg


def unet_lowdim_local():
    cfg = unet_lowdim_global()
    cfg["model"].update(local_cond_dim=6, global_cond_dim=None)
    cfg.update(obs_as_global_cond=False, obs_as_local_cond=True)
    return cfg


def transformer_lowdim():
    return {
        "_target_": "diffusion_policy.policy.diffusion_transformer_lowdim_policy.DiffusionTransformerLowdimPolicy",
        "model": {"_target_": "diffusion_policy.model.diffusion.transformer_for_diffusion.TransformerForDiffusion",
                  "input_dim": 2, "output_dim": 2, "horizon": 10, "n_obs_steps": 2, "cond_dim": 6, "n_layer": 2,
                  "n_head": 2, "n_emb": 16, "p_drop_emb": 0.0, "p_drop_attn": 0.01, "causal_attn": True,
                  "time_as_cond": True, "obs_as_cond": True, "n_cond_layers": 0},
        "noise_scheduler": dict(DDPM), "horizon": 10, "obs_dim": 6, "action_dim": 2, "n_action_steps": 8,
        "n_obs_steps": 2, "num_inference_steps": 20, "obs_as_cond": True, "pred_action_steps_only": False,
    }


def unet_hybrid_image():
    return {
        "_target_": "diffusion_policy.policy.diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy",
        "shape_meta": PUSHT_IMAGE_META, "noise_scheduler": dict(DDPM), "horizon": 16, "n_action_steps": 8,
        "n_obs_steps": 2, "num_inference_steps": 10, "obs_as_global_cond": True, "crop_shape": [28, 28],
        "diffusion_step_embed_dim": 16, "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4,
        "cond_predict_scale": True, "obs_encoder_group_norm": True, "eval_fixed_crop": True,
    }


def unet_image():
    return {
        "_target_": "diffusion_policy.policy.diffusion_unet_image_policy.DiffusionUnetImagePolicy",
        "shape_meta": PUSHT_IMAGE_META,
        "obs_encoder": {"_target_": "diffusion_policy.model.vision.multi_image_obs_encoder.MultiImageObsEncoder",
                        "shape_meta": PUSHT_IMAGE_META,
                        "rgb_model": {"_target_": "diffusion_policy.model.vision.model_getter.get_resnet",
                                      "name": "resnet18", "weights": None},
                        "resize_shape": None, "crop_shape": [28, 28], "random_crop": True, "use_group_norm": True,
                        "share_rgb_model": False, "imagenet_norm": True},
        "noise_scheduler": dict(DDIM), "horizon": 16, "n_action_steps": 8, "n_obs_steps": 2,
        "num_inference_steps": 8, "obs_as_global_cond": True, "diffusion_step_embed_dim": 16,
        "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4, "cond_predict_scale": True,
    }


def transformer_hybrid_image():
    return {
        "_target_": "diffusion_policy.policy.diffusion_transformer_hybrid_image_policy."
                    "DiffusionTransformerHybridImagePolicy",
        "shape_meta": PUSHT_IMAGE_META, "noise_scheduler": dict(DDPM), "horizon": 10, "n_action_steps": 8,
        "n_obs_steps": 2, "num_inference_steps": 10, "crop_shape": [28, 28], "obs_encoder_group_norm": True,
        "eval_fixed_crop": True, "n_layer": 2, "n_cond_layers": 0, "n_head": 2, "n_emb": 16, "p_drop_emb": 0.0,
        "p_drop_attn": 0.3, "causal_attn": True, "time_as_cond": True, "obs_as_cond": True,
        "pred_action_steps_only": False,
    }


POLICY_CFGS = {
    "unet_lowdim_global_ddpm": unet_lowdim_global,
    "unet_lowdim_inpaint_ddim": unet_lowdim_inpaint,
    "unet_lowdim_local": unet_lowdim_local,
    "transformer_lowdim": transformer_lowdim,
    "unet_hybrid_image": unet_hybrid_image,
    "unet_image": unet_image,
    "transformer_hybrid_image": transformer_hybrid_image,
}


def random_normalizer(policy_cfg, seed) -> LinearNormalizer:
    g = torch.Generator().manual_seed(seed)
    norm = LinearNormalizer()
    if "shape_meta" in policy_cfg:
        for key, meta in policy_cfg["shape_meta"]["obs"].items():
            if meta.get("type") == "rgb":
                norm.set_field(key, torch.tensor([2.0]), torch.tensor([-1.0]))
            else:
                d = meta["shape"][0]
                norm.set_field(key, 0.5 + torch.rand(d, generator=g), torch.randn(d, generator=g))
        da = policy_cfg["shape_meta"]["action"]["shape"][0]
    else:
        d = policy_cfg["obs_dim"]
        norm.set_field("obs", 0.5 + torch.rand(d, generator=g), torch.randn(d, generator=g),
                       {"min": torch.zeros(d), "max": torch.ones(d)})
        da = policy_cfg["action_dim"]
    norm.set_field("action", 0.5 + torch.rand(da, generator=g), 0.3 * torch.randn(da, generator=g))
    return norm


def random_weights(policy_cfg, seed) -> dict:
    torch.manual_seed(seed)
    networks, _ = build_from_policy_cfg(policy_cfg)
    model, encoder = networks.model, networks.obs_encoder
    with torch.no_grad():  # non-trivial GroupNorm / LayerNorm affine parameters too
        for name, p in list(model.named_parameters()) + list((encoder.named_parameters() if encoder else [])):
            if p.dim() == 1 and p.numel() > 0 and ("norm" in name or ".block.1." in name or "ln_f" in name):
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith("pos_emb"):
                p.normal_(0, 0.02)
    return upstream_state_dict(model, encoder, random_normalizer(policy_cfg, seed))


def write_checkpoint(path, policy_cfg, use_ema=True, seed=0) -> dict:
    """Write an upstream-layout .ckpt; returns the state dicts it holds."""
    state_dicts = {"model": random_weights(policy_cfg, seed)}
    if use_ema:
        state_dicts["ema_model"] = random_weights(policy_cfg, seed + 1000)
    state_dicts["optimizer"] = {"state": {}, "param_groups": [{"lr": 1e-4, "betas": (0.95, 0.999), "params": [0, 1]}]}
    cfg = {
        "_target_": "diffusion_policy.workspace.train_diffusion_unet_lowdim_workspace.TrainDiffusionUnetLowdimWorkspace",
        "name": "test", "horizon": policy_cfg["horizon"], "n_obs_steps": policy_cfg["n_obs_steps"],
        "policy": policy_cfg, "training": {"use_ema": use_ema, "seed": 42},
    }
    save_dp_workspace(str(path), cfg, state_dicts)
    return state_dicts


def sample_obs(policy_cfg, batch=3, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    to = policy_cfg["n_obs_steps"]
    if "shape_meta" in policy_cfg:
        obs = {}
        for key, meta in policy_cfg["shape_meta"]["obs"].items():
            shape = (batch, to, *meta["shape"])
            obs[key] = torch.rand(shape, generator=g) if meta.get("type") == "rgb" else 100 * torch.rand(shape, generator=g)
        return obs
    return {"obs": torch.randn(batch, to, policy_cfg["obs_dim"], generator=g, dtype=torch.float64)}
