"""From a DiffusionPolicy ``cfg.policy`` to networks + PolicySpec, one builder per class.

The stored cfg drives everything (never repo YAML): horizons, crop, conditioning mode,
action-slice convention, scheduler. Constructor defaults below are upstream's defaults
for arguments a cfg may leave out. Every field is read through ``fields.Fields``: typed,
bounded, and checked against the others (dims, horizons, divisibility) before a network
is built, so a bad cfg is one ``CheckpointError``, never a crash or a huge allocation.
"""

from __future__ import annotations

import warnings

from parapolicy.checkpoints.fields import Fields, check_int_list
from parapolicy.checkpoints.limits import (
    DP_LIMITS as LIMITS,
    MAX_FEATURE_DIM,
    MAX_HEADS,
    MAX_INFERENCE_STEPS,
    MAX_LAYERS,
    MAX_OBS_KEYS,
)
from parapolicy.checkpoints.messages import describe, one_line
from parapolicy.checkpoints.networks import NetworkBundle
from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.errors import CheckpointError
from parapolicy.models.transformer import TransformerForDiffusion
from parapolicy.models.unet1d import ConditionalUnet1D
from parapolicy.models.vision import MultiImageObsEncoder, RobomimicObsEncoder
from parapolicy.policy import GLOBAL, INPAINT, LOCAL, TOKENS, PolicySpec

_PREFIX = "diffusion_policy.policy."


def _spec(c: Fields, family, obs_shapes, action_dim, cond_mode, action_start, pred_only=False, sample_multiple=1):
    """Horizons checked against each other: the executed slice must fit in what is sampled."""
    horizon, to = c.int("horizon", 1, LIMITS.horizon), c.int("n_obs_steps", 1, LIMITS.obs_steps)
    ta = c.int("n_action_steps", 1, LIMITS.horizon)
    if cond_mode in (LOCAL, INPAINT) and to > horizon:
        raise CheckpointError(f"cfg.policy.n_obs_steps={to} exceeds horizon={horizon} (observations fill the first steps)")
    if pred_only:
        if ta > horizon:
            raise CheckpointError(f"cfg.policy.n_action_steps must be in [1, horizon={horizon}], found {ta}")
    elif not 1 <= ta <= horizon - action_start:
        raise CheckpointError(
            f"cfg.policy.n_action_steps must be in [1, {max(horizon - action_start, 0)}] (horizon {horizon} minus the "
            f"slice start {action_start}), found {ta}"
        )
    sampled = ta if pred_only else horizon
    if sampled % sample_multiple:
        raise CheckpointError(
            f"the UNet samples {sampled} steps, which must be a multiple of {sample_multiple} "
            "(it halves the sequence once per down level)"
        )
    kwargs = {"eta": c.float("eta", 0.0, 1e3)} if "eta" in c.cfg else {}
    return PolicySpec(
        family=family,
        horizon=horizon,
        n_obs_steps=to,
        n_action_steps=ta,
        action_dim=action_dim,
        obs_shapes=obs_shapes,
        cond_mode=cond_mode,
        action_start=action_start,
        pred_action_steps_only=pred_only,
        num_inference_steps=c.opt_int("num_inference_steps", 1, MAX_INFERENCE_STEPS),
        step_kwargs=kwargs,
    )


def _unet_kwargs(c: Fields, defaults: dict) -> dict:
    """UNet size settings, bounded, with the divisibility its GroupNorms and embeddings need."""
    kw = {
        "diffusion_step_embed_dim": c.int("diffusion_step_embed_dim", 4, LIMITS.step_embed_dim,
                                          defaults["diffusion_step_embed_dim"]),
        "down_dims": c.int_list("down_dims", 1, LIMITS.levels, 1, LIMITS.channels, defaults["down_dims"]),
        "kernel_size": c.int("kernel_size", 1, LIMITS.kernel, defaults["kernel_size"]),
        "n_groups": c.int("n_groups", 1, LIMITS.channels, defaults["n_groups"]),
        "cond_predict_scale": c.bool("cond_predict_scale", defaults["cond_predict_scale"]),
    }
    if kw["diffusion_step_embed_dim"] % 2:
        raise CheckpointError(f"{c.name}.diffusion_step_embed_dim must be even, found {kw['diffusion_step_embed_dim']}")
    if kw["kernel_size"] % 2 == 0:
        raise CheckpointError(f"{c.name}.kernel_size must be odd (same-length convolutions), found {kw['kernel_size']}")
    bad = [d for d in kw["down_dims"] if d % kw["n_groups"]]
    if bad or kw["down_dims"][0] % 8:
        raise CheckpointError(
            f"{c.name}.down_dims {kw['down_dims']} must be multiples of n_groups={kw['n_groups']} "
            "(and the first a multiple of 8, for the final block's GroupNorm)"
        )
    return kw


_UNET_DEFAULTS = {"diffusion_step_embed_dim": 256, "down_dims": [256, 512, 1024], "kernel_size": 3, "n_groups": 8,
                  "cond_predict_scale": False}
_HYBRID_UNET_DEFAULTS = dict(_UNET_DEFAULTS, kernel_size=5, cond_predict_scale=True)


def _unet_lowdim(c: Fields):
    obs_dim, action_dim = c.int("obs_dim", 1, LIMITS.vector_dim), c.int("action_dim", 1, LIMITS.vector_dim)
    to = c.int("n_obs_steps", 1, LIMITS.obs_steps)
    global_cond, local_cond = c.bool("obs_as_global_cond", False), c.bool("obs_as_local_cond", False)
    pred_only = c.bool("pred_action_steps_only", False)
    if global_cond and local_cond:
        raise CheckpointError("cfg.policy sets both obs_as_global_cond and obs_as_local_cond; upstream allows one")
    if pred_only and not global_cond:
        raise CheckpointError("cfg.policy.pred_action_steps_only needs obs_as_global_cond (as upstream asserts)")
    mode = GLOBAL if global_cond else LOCAL if local_cond else INPAINT
    m = c.dict("model")
    kw = _unet_kwargs(m, _UNET_DEFAULTS)
    wanted = {
        "input_dim": action_dim if mode != INPAINT else action_dim + obs_dim,
        "local_cond_dim": obs_dim if mode == LOCAL else None,
        "global_cond_dim": obs_dim * to if mode == GLOBAL else None,
    }
    for key, value in wanted.items():
        found = m.opt_int(key, 0, MAX_FEATURE_DIM * LIMITS.obs_steps)
        if (found or None) != value:
            raise CheckpointError(f"cfg.policy.model.{key} must be {value} for this policy's {mode} conditioning, found {found}")
    model = ConditionalUnet1D(**wanted, **kw)
    start = to - 1 if c.bool("oa_step_convention", False) else to
    spec = _spec(c, "unet_lowdim", {"obs": (obs_dim,)}, action_dim, mode, start, pred_only,
                 2 ** (len(kw["down_dims"]) - 1))
    return NetworkBundle(model, None, spec)


def _transformer_kwargs(c: Fields, defaults: dict) -> dict:
    kw = {
        "n_layer": c.int("n_layer", 1, MAX_LAYERS, defaults["n_layer"]),
        "n_head": c.int("n_head", 1, MAX_HEADS, defaults["n_head"]),
        "n_emb": c.int("n_emb", 4, LIMITS.channels, defaults["n_emb"]),
        "p_drop_emb": c.float("p_drop_emb", 0.0, 1.0, defaults["p_drop_emb"]),
        "p_drop_attn": c.float("p_drop_attn", 0.0, 1.0, defaults["p_drop_attn"]),
        "causal_attn": c.bool("causal_attn", defaults["causal_attn"]),
        "time_as_cond": c.bool("time_as_cond", True),
        "n_cond_layers": c.int("n_cond_layers", 0, MAX_LAYERS, 0),
    }
    if kw["n_emb"] % kw["n_head"] or kw["n_emb"] % 2:
        raise CheckpointError(f"{c.name}.n_emb={kw['n_emb']} must be even and a multiple of n_head={kw['n_head']}")
    return kw


def _transformer_lowdim(c: Fields):
    obs_dim, action_dim = c.int("obs_dim", 1, LIMITS.vector_dim), c.int("action_dim", 1, LIMITS.vector_dim)
    horizon, to = c.int("horizon", 1, LIMITS.horizon), c.int("n_obs_steps", 1, LIMITS.obs_steps)
    obs_as_cond, pred_only = c.bool("obs_as_cond", False), c.bool("pred_action_steps_only", False)
    m = c.dict("model")
    kw = _transformer_kwargs(m, {"n_layer": 12, "n_head": 12, "n_emb": 768, "p_drop_emb": 0.1, "p_drop_attn": 0.1,
                                 "causal_attn": False})
    io_dim = action_dim if obs_as_cond else action_dim + obs_dim
    sampled = c.int("n_action_steps", 1, LIMITS.horizon) if pred_only else horizon
    wanted = {"input_dim": io_dim, "output_dim": io_dim, "horizon": sampled, "n_obs_steps": to,
              "cond_dim": obs_dim if obs_as_cond else 0}
    for key, value in wanted.items():
        found = m.opt_int(key, 0, MAX_FEATURE_DIM)
        if found != value:
            raise CheckpointError(f"cfg.policy.model.{key} must be {value} for this policy, found {found}")
    if m.bool("obs_as_cond", obs_as_cond) != obs_as_cond:
        raise CheckpointError("cfg.policy.model.obs_as_cond disagrees with cfg.policy.obs_as_cond")
    if obs_as_cond and not kw["time_as_cond"]:
        raise CheckpointError("cfg.policy.model.time_as_cond must be true when observations are condition tokens")
    model = TransformerForDiffusion(**wanted, obs_as_cond=obs_as_cond, **kw)
    mode = TOKENS if obs_as_cond else INPAINT
    spec = _spec(c, "transformer_lowdim", {"obs": (obs_dim,)}, action_dim, mode, to - 1, pred_only)
    return NetworkBundle(model, None, spec)


def _shape_meta(c: Fields):
    meta = c.dict("shape_meta")
    obs_meta = meta.dict("obs")
    if not 1 <= len(obs_meta.cfg) <= MAX_OBS_KEYS:
        raise CheckpointError(f"cfg.policy.shape_meta.obs must list 1 to {MAX_OBS_KEYS} keys, found {len(obs_meta.cfg)}")
    obs_shapes, rgb_keys = {}, []
    for key in obs_meta.cfg:
        if not isinstance(key, str):
            raise CheckpointError(f"cfg.policy.shape_meta.obs keys must be strings, found {describe(key)}")
        entry = obs_meta.dict(key)
        kind = entry.raw("type", "low_dim")
        if kind == "rgb":
            shape = entry.int_list("shape", 3, 3, 1, LIMITS.image_side)
            if shape[0] != 3:
                raise CheckpointError(f"{entry.name}.shape must be (3, H, W) for an rgb key, found {shape}")
            rgb_keys.append(key)
        elif kind == "low_dim":
            shape = entry.int_list("shape", 1, 1, 1, LIMITS.vector_dim)
        else:
            raise CheckpointError(f"{entry.name}.type must be 'rgb' or 'low_dim', found {describe(kind)}")
        obs_shapes[key] = tuple(shape)
    action_dim = meta.dict("action").int_list("shape", 1, 1, 1, LIMITS.vector_dim)[0]
    return obs_shapes, rgb_keys, action_dim


def _crop(c: Fields, key: str, default, obs_shapes, rgb_keys):
    crop = c.raw(key, default)
    if crop is None:
        return None
    h, w = check_int_list(f"{c.name}.{key}", crop, 2, 2, 1, LIMITS.image_side)
    for rgb in rgb_keys:
        if h > obs_shapes[rgb][1] or w > obs_shapes[rgb][2]:
            raise CheckpointError(f"{c.name}.{key} {[h, w]} is larger than the {rgb!r} image {list(obs_shapes[rgb][1:])}")
    return (h, w)


def _robomimic_encoder(c: Fields, obs_shapes, rgb_keys):
    crop = _crop(c, "crop_shape", (76, 76), obs_shapes, rgb_keys)
    if not c.bool("eval_fixed_crop", False) and crop is not None:
        warnings.warn(
            "cfg.policy.eval_fixed_crop is false: upstream crops randomly at eval time for this checkpoint; "
            "parapolicy uses the deterministic center crop",
            stacklevel=4,
        )
    return RobomimicObsEncoder(obs_shapes, rgb_keys, crop_shape=crop, group_norm=c.bool("obs_encoder_group_norm", False))


def _unet_hybrid_image(c: Fields):
    obs_shapes, rgb_keys, action_dim = _shape_meta(c)
    encoder = _robomimic_encoder(c, obs_shapes, rgb_keys)
    return _unet_on_features(c, "unet_hybrid_image", encoder, obs_shapes, action_dim)


def _unet_image(c: Fields):
    obs_shapes, rgb_keys, action_dim = _shape_meta(c)
    enc = c.dict("obs_encoder")
    rgb_model = enc.raw("rgb_model", None) or {}
    if not isinstance(rgb_model, dict) or rgb_model.get("name", "resnet18") != "resnet18" \
            or rgb_model.get("weights") not in (None, "None"):
        raise CheckpointError(f"unsupported MultiImageObsEncoder rgb_model {describe(rgb_model)}; only resnet18 is supported")
    if enc.raw("resize_shape", None) is not None or enc.bool("share_rgb_model", False):
        raise CheckpointError("MultiImageObsEncoder with resize_shape or share_rgb_model is not supported yet")
    # upstream quirk: random_crop=False ends up with no crop at all
    crop = _crop(enc, "crop_shape", None, obs_shapes, rgb_keys)
    if not enc.bool("random_crop", True):
        crop = None
    encoder = MultiImageObsEncoder(obs_shapes, rgb_keys, crop_shape=crop, group_norm=enc.bool("use_group_norm", False),
                                   imagenet_norm=enc.bool("imagenet_norm", False))
    return _unet_on_features(c, "unet_image", encoder, obs_shapes, action_dim)


def _unet_on_features(c: Fields, family, encoder, obs_shapes, action_dim):
    feature_dim = encoder.output_dim()
    to = c.int("n_obs_steps", 1, LIMITS.obs_steps)
    global_cond = c.bool("obs_as_global_cond", True)
    if feature_dim * to > MAX_FEATURE_DIM:
        raise CheckpointError(f"{family}: {to} obs steps x {feature_dim} features exceed {MAX_FEATURE_DIM} condition values")
    kw = _unet_kwargs(c, _HYBRID_UNET_DEFAULTS)
    model = ConditionalUnet1D(
        input_dim=action_dim if global_cond else action_dim + feature_dim,
        local_cond_dim=None,
        global_cond_dim=feature_dim * to if global_cond else None,
        **kw,
    )
    spec = _spec(c, family, obs_shapes, action_dim, GLOBAL if global_cond else INPAINT, to - 1,
                 sample_multiple=2 ** (len(kw["down_dims"]) - 1))
    return NetworkBundle(model, encoder, spec)


def _transformer_hybrid_image(c: Fields):
    obs_shapes, rgb_keys, action_dim = _shape_meta(c)
    encoder = _robomimic_encoder(c, obs_shapes, rgb_keys)
    feature_dim = encoder.output_dim()
    obs_as_cond, pred_only = c.bool("obs_as_cond", True), c.bool("pred_action_steps_only", False)
    horizon, to = c.int("horizon", 1, LIMITS.horizon), c.int("n_obs_steps", 1, LIMITS.obs_steps)
    input_dim = action_dim if obs_as_cond else action_dim + feature_dim
    kw = _transformer_kwargs(c, {"n_layer": 8, "n_head": 4, "n_emb": 256, "p_drop_emb": 0.0, "p_drop_attn": 0.3,
                                 "causal_attn": True})
    if obs_as_cond and not kw["time_as_cond"]:
        raise CheckpointError("cfg.policy.time_as_cond must be true when observations are condition tokens")
    model = TransformerForDiffusion(
        input_dim=input_dim, output_dim=input_dim, horizon=c.int("n_action_steps", 1, LIMITS.horizon) if pred_only else horizon,
        n_obs_steps=to, cond_dim=feature_dim if obs_as_cond else 0, obs_as_cond=obs_as_cond, **kw,
    )
    mode = TOKENS if obs_as_cond else INPAINT
    spec = _spec(c, "transformer_hybrid_image", obs_shapes, action_dim, mode, to - 1, pred_only)
    return NetworkBundle(model, encoder, spec)


BUILDERS = {
    "diffusion_unet_lowdim_policy.DiffusionUnetLowdimPolicy": _unet_lowdim,
    "diffusion_unet_hybrid_image_policy.DiffusionUnetHybridImagePolicy": _unet_hybrid_image,
    "diffusion_unet_image_policy.DiffusionUnetImagePolicy": _unet_image,
    "diffusion_transformer_lowdim_policy.DiffusionTransformerLowdimPolicy": _transformer_lowdim,
    "diffusion_transformer_hybrid_image_policy.DiffusionTransformerHybridImagePolicy": _transformer_hybrid_image,
}


def build_networks(cfg: dict) -> NetworkBundle:
    """The networks and spec of a resolved cfg.policy, every field checked first."""
    c = Fields(cfg, "cfg.policy")
    target = c.raw("_target_", "")
    builder = BUILDERS.get(target[len(_PREFIX):]) if isinstance(target, str) and target.startswith(_PREFIX) else None
    if builder is None:
        supported = ", ".join(_PREFIX + k for k in BUILDERS)
        raise CheckpointError(f"unsupported policy class {str(target)[:120]!r}; supported: {supported}")
    try:
        return builder(c)
    except (TypeError, ValueError, AssertionError, RuntimeError, ZeroDivisionError, OverflowError, KeyError,
            IndexError, AttributeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"cannot build {target.rsplit('.', 1)[-1]} from cfg.policy: {one_line(exc)}") from None


def build_from_policy_cfg(cfg: dict) -> tuple[NetworkBundle, object]:
    """``(networks, scheduler)`` for a resolved cfg.policy."""
    networks = build_networks(cfg)
    return networks, build_scheduler(Fields(cfg, "cfg.policy").raw("noise_scheduler"))
