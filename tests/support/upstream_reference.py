"""Upstream DiffusionPolicy's predict_action, restated step by step from its documented
semantics (normalizer formula, feature order, draw order, action slice), independent of
parapolicy.Policy. Only the network modules are shared (their weights load by name).
"""

from __future__ import annotations

import diffusers
import torch

from parapolicy.checkpoints.dp_builders import build_from_policy_cfg


def _norm(flat, key, x, forward=True):
    scale = flat[f"normalizer.params_dict.{key}.scale"]
    offset = flat[f"normalizer.params_dict.{key}.offset"]
    x = x.to(dtype=scale.dtype)
    shape = x.shape
    x = x.reshape(-1, scale.shape[0])
    x = x * scale + offset if forward else (x - offset) / scale
    return x.reshape(shape)


def _crop(x, hw):
    h, w = hw
    top, left = int(round((x.shape[-2] - h) / 2.0)), int(round((x.shape[-1] - w) / 2.0))
    return x[..., top:top + h, left:left + w]


def _encode(cfg, encoder, nobs):
    """Per-step features: hybrid = cfg shape_meta order; MultiImage = sorted rgb, sorted low-dim."""
    meta = cfg["shape_meta"]["obs"]
    if cfg["_target_"].endswith("DiffusionUnetImagePolicy"):
        rgb = sorted(k for k, v in meta.items() if v.get("type") == "rgb")
        low = sorted(k for k, v in meta.items() if v.get("type") != "rgb")
        mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        crop = cfg["obs_encoder"]["crop_shape"]
        feats = [encoder.key_model_map[k]((_crop(nobs[k], crop) - mean) / std) for k in rgb]
        feats += [nobs[k].reshape(nobs[k].shape[0], -1) for k in low]
        return torch.cat(feats, -1)
    feats = []
    for key, m in meta.items():
        x = nobs[key]
        if m.get("type") == "rgb":
            x = torch.relu(encoder.obs_nets[key].nets(_crop(x, cfg["crop_shape"])))
        feats.append(x.reshape(x.shape[0], -1))
    return torch.cat(feats, -1)


def upstream_predict_action(cfg: dict, flat: dict, obs: dict, generator: torch.Generator):
    networks, _ = build_from_policy_cfg(cfg)
    model, encoder = networks.model, networks.obs_encoder
    model.load_state_dict({k[6:]: v for k, v in flat.items() if k.startswith("model.")})
    if encoder is not None:
        encoder.load_state_dict({k[12:]: v for k, v in flat.items() if k.startswith("obs_encoder.")})
    model.eval()
    sched_cfg = dict(cfg["noise_scheduler"])
    scheduler = getattr(diffusers, sched_cfg.pop("_target_").rsplit(".", 1)[-1])(**sched_cfg)
    scheduler.set_timesteps(cfg["num_inference_steps"])
    to, horizon, ta = cfg["n_obs_steps"], cfg["horizon"], cfg["n_action_steps"]
    target = cfg["_target_"]
    with torch.no_grad():
        if "shape_meta" in cfg:
            da = cfg["shape_meta"]["action"]["shape"][0]
            nobs = {k: _norm(flat, k, v[:, :to]) for k, v in obs.items()}
            b = next(iter(nobs.values())).shape[0]
            flat_obs = {k: v.reshape(b * to, *v.shape[2:]) for k, v in nobs.items()}
            features = _encode(cfg, encoder, flat_obs).reshape(b, to, -1)
        else:
            da = cfg["action_dim"]
            features = _norm(flat, "obs", obs["obs"])[:, :to]
            b = features.shape[0]
        kwargs, cond_data, cond_mask = {}, None, None
        if "Transformer" in target and cfg.get("obs_as_cond", True):
            shape, kwargs = (b, horizon, da), {"cond": features}
        elif cfg.get("obs_as_global_cond", "shape_meta" in cfg):
            shape, kwargs = (b, horizon, da), {"global_cond": features.reshape(b, -1)}
        elif cfg.get("obs_as_local_cond", False):
            local = torch.zeros(b, horizon, features.shape[-1])
            local[:, :to] = features
            shape, kwargs = (b, horizon, da), {"local_cond": local}
        else:
            shape = (b, horizon, da + features.shape[-1])
            cond_data = torch.zeros(shape)
            cond_data[:, :to, da:] = features
            cond_mask = torch.zeros(shape, dtype=torch.bool)
            cond_mask[:, :to, da:] = True
        trajectory = torch.randn(shape, generator=generator)
        for t in scheduler.timesteps:
            if cond_mask is not None:
                trajectory[cond_mask] = cond_data[cond_mask]
            out = model(trajectory, t, **kwargs)
            trajectory = scheduler.step(out, t, trajectory, generator=generator).prev_sample
        if cond_mask is not None:
            trajectory[cond_mask] = cond_data[cond_mask]
        action_pred = _norm(flat, "action", trajectory[..., :da], forward=False)
    if target.endswith("DiffusionUnetLowdimPolicy") and not cfg.get("oa_step_convention", False):
        start = to
    else:
        start = to - 1
    return action_pred[:, start:start + ta], action_pred
