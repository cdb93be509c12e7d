"""From a DiffusionPolicy ``cfg.policy`` to networks + PolicySpec, one builder per class.

The stored cfg drives everything (never repo YAML): horizons, crop, conditioning mode,
action-slice convention, scheduler. Constructor defaults below are upstream's defaults
for arguments a cfg may leave out.
"""

from __future__ import annotations

import warnings

from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.errors import CheckpointError
from parapolicy.models.transformer import TransformerForDiffusion
from parapolicy.models.unet1d import ConditionalUnet1D
from parapolicy.models.vision import MultiImageObsEncoder, RobomimicObsEncoder
from parapolicy.policy import GLOBAL, INPAINT, LOCAL, TOKENS, PolicySpec

_PREFIX = "diffusion_policy.policy."
_UNET_ARGS = ("input_dim", "local_cond_dim", "global_cond_dim", "diffusion_step_embed_dim", "down_dims",
              "kernel_size", "n_groups", "cond_predict_scale")
_TRANSFORMER_ARGS = ("input_dim", "output_dim", "horizon", "n_obs_steps", "cond_dim", "n_layer", "n_head", "n_emb",
                     "p_drop_emb", "p_drop_attn", "causal_attn", "time_as_cond", "obs_as_cond", "n_cond_layers")


def _pick(cfg: dict, names) -> dict:
    return {k: cfg[k] for k in names if k in cfg}


def _require(cfg: dict, *names):
    missing = [n for n in names if n not in cfg]
    if missing:
        raise CheckpointError(f"cfg.policy lacks {missing}")
    return [cfg[n] for n in names]


def _spec(cfg, family, obs_shapes, action_dim, cond_mode, action_start, pred_only=False):
    horizon, to, ta = _require(cfg, "horizon", "n_obs_steps", "n_action_steps")
    kwargs = {"eta": cfg["eta"]} if "eta" in cfg else {}
    return PolicySpec(
        family=family,
        horizon=int(horizon),
        n_obs_steps=int(to),
        n_action_steps=int(ta),
        action_dim=int(action_dim),
        obs_shapes=obs_shapes,
        cond_mode=cond_mode,
        action_start=int(action_start),
        pred_action_steps_only=bool(pred_only),
        num_inference_steps=cfg.get("num_inference_steps"),
        step_kwargs=kwargs,
    )


def _unet_lowdim(cfg):
    obs_dim, action_dim = _require(cfg, "obs_dim", "action_dim")
    model_cfg = dict(_require(cfg, "model")[0])
    model = ConditionalUnet1D(**_pick(model_cfg, _UNET_ARGS))
    to = int(cfg["n_obs_steps"])
    if cfg.get("obs_as_global_cond", False):
        mode = GLOBAL
    elif cfg.get("obs_as_local_cond", False):
        mode = LOCAL
    else:
        mode = INPAINT
    start = to - 1 if cfg.get("oa_step_convention", False) else to
    spec = _spec(cfg, "unet_lowdim", {"obs": (int(obs_dim),)}, action_dim, mode, start,
                 cfg.get("pred_action_steps_only", False))
    return spec, model, None


def _transformer_lowdim(cfg):
    obs_dim, action_dim = _require(cfg, "obs_dim", "action_dim")
    model = TransformerForDiffusion(**_pick(dict(_require(cfg, "model")[0]), _TRANSFORMER_ARGS))
    mode = TOKENS if cfg.get("obs_as_cond", False) else INPAINT
    to = int(cfg["n_obs_steps"])
    spec = _spec(cfg, "transformer_lowdim", {"obs": (int(obs_dim),)}, action_dim, mode, to - 1,
                 cfg.get("pred_action_steps_only", False))
    return spec, model, None


def _shape_meta(cfg):
    meta = _require(cfg, "shape_meta")[0]
    obs_meta = meta.get("obs") or {}
    if not obs_meta or "action" not in meta:
        raise CheckpointError("cfg.policy.shape_meta needs 'obs' and 'action' entries")
    obs_shapes = {k: tuple(int(s) for s in v["shape"]) for k, v in obs_meta.items()}
    rgb_keys = [k for k, v in obs_meta.items() if v.get("type", "low_dim") == "rgb"]
    action_shape = tuple(meta["action"]["shape"])
    if len(action_shape) != 1:
        raise CheckpointError(f"action shape {action_shape} is not 1-D")
    return obs_shapes, rgb_keys, int(action_shape[0])


def _robomimic_encoder(cfg, obs_shapes, rgb_keys):
    if not cfg.get("eval_fixed_crop", False) and cfg.get("crop_shape", (76, 76)) is not None:
        warnings.warn(
            "cfg.policy.eval_fixed_crop is false: upstream crops randomly at eval time for this checkpoint; "
            "parapolicy uses the deterministic center crop",
            stacklevel=3,
        )
    return RobomimicObsEncoder(
        obs_shapes, rgb_keys, crop_shape=cfg.get("crop_shape", (76, 76)),
        group_norm=bool(cfg.get("obs_encoder_group_norm", False)),
    )


def _unet_hybrid_image(cfg):
    obs_shapes, rgb_keys, action_dim = _shape_meta(cfg)
    encoder = _robomimic_encoder(cfg, obs_shapes, rgb_keys)
    return _unet_on_features(cfg, "unet_hybrid_image", encoder, obs_shapes, action_dim)


def _unet_image(cfg):
    obs_shapes, rgb_keys, action_dim = _shape_meta(cfg)
    enc_cfg = dict(_require(cfg, "obs_encoder")[0])
    rgb_model = enc_cfg.get("rgb_model") or {}
    if str(rgb_model.get("name", "resnet18")) != "resnet18" or rgb_model.get("weights") not in (None, "None"):
        raise CheckpointError(f"unsupported MultiImageObsEncoder rgb_model {rgb_model}; only resnet18 is supported")
    if enc_cfg.get("resize_shape") is not None or enc_cfg.get("share_rgb_model", False):
        raise CheckpointError("MultiImageObsEncoder with resize_shape or share_rgb_model is not supported yet")
    # upstream quirk: random_crop=False ends up with no crop at all
    crop = enc_cfg.get("crop_shape") if enc_cfg.get("random_crop", True) else None
    encoder = MultiImageObsEncoder(
        obs_shapes, rgb_keys, crop_shape=crop, group_norm=bool(enc_cfg.get("use_group_norm", False)),
        imagenet_norm=bool(enc_cfg.get("imagenet_norm", False)),
    )
    return _unet_on_features(cfg, "unet_image", encoder, obs_shapes, action_dim)


def _unet_on_features(cfg, family, encoder, obs_shapes, action_dim):
    feature_dim = encoder.output_dim()
    to = int(cfg["n_obs_steps"])
    global_cond = bool(cfg.get("obs_as_global_cond", True))
    model = ConditionalUnet1D(
        input_dim=action_dim if global_cond else action_dim + feature_dim,
        local_cond_dim=None,
        global_cond_dim=feature_dim * to if global_cond else None,
        diffusion_step_embed_dim=cfg.get("diffusion_step_embed_dim", 256),
        down_dims=cfg.get("down_dims", (256, 512, 1024)),
        kernel_size=cfg.get("kernel_size", 5),
        n_groups=cfg.get("n_groups", 8),
        cond_predict_scale=cfg.get("cond_predict_scale", True),
    )
    spec = _spec(cfg, family, obs_shapes, action_dim, GLOBAL if global_cond else INPAINT, to - 1)
    return spec, model, encoder


def _transformer_hybrid_image(cfg):
    obs_shapes, rgb_keys, action_dim = _shape_meta(cfg)
    encoder = _robomimic_encoder(cfg, obs_shapes, rgb_keys)
    feature_dim = encoder.output_dim()
    obs_as_cond = bool(cfg.get("obs_as_cond", True))
    input_dim = action_dim if obs_as_cond else action_dim + feature_dim
    model = TransformerForDiffusion(
        input_dim=input_dim,
        output_dim=input_dim,
        horizon=int(cfg["horizon"]),
        n_obs_steps=int(cfg["n_obs_steps"]),
        cond_dim=feature_dim if obs_as_cond else 0,
        n_layer=cfg.get("n_layer", 8),
        n_head=cfg.get("n_head", 4),
        n_emb=cfg.get("n_emb", 256),
        p_drop_emb=cfg.get("p_drop_emb", 0.0),
        p_drop_attn=cfg.get("p_drop_attn", 0.3),
        causal_attn=cfg.get("causal_attn", True),
        time_as_cond=cfg.get("time_as_cond", True),
        obs_as_cond=obs_as_cond,
        n_cond_layers=cfg.get("n_cond_layers", 0),
    )
    mode = TOKENS if obs_as_cond else INPAINT
    spec = _spec(cfg, "transformer_hybrid_image", obs_shapes, action_dim, mode, int(cfg["n_obs_steps"]) - 1,
                 cfg.get("pred_action_steps_only", False))
    return spec, model, encoder


BUILDERS = {
    "diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy": _unet_lowdim,
    "diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy": _unet_hybrid_image,
    "diffusion_unet_image_policy.DiffusionUnetImagePolicy": _unet_image,
    "diffusion_transformer_lowdim_policy.DiffusionTransformerLowdimPolicy": _transformer_lowdim,
    "diffusion_transformer_hybrid_image_policy.DiffusionTransformerHybridImagePolicy": _transformer_hybrid_image,
}


def build_from_policy_cfg(cfg: dict):
    """Return (spec, denoiser, obs_encoder or None, scheduler) for a resolved cfg.policy."""
    target = str(cfg.get("_target_", ""))
    builder = BUILDERS.get(target[len(_PREFIX):]) if target.startswith(_PREFIX) else None
    if builder is None:
        supported = ", ".join(_PREFIX + k for k in BUILDERS)
        raise CheckpointError(f"unsupported policy class {target!r}; supported: {supported}")
    spec, model, encoder = builder(cfg)
    scheduler = build_scheduler(_require(cfg, "noise_scheduler")[0])
    return spec, model, encoder, scheduler
