"""Loader and writer for upstream DiffusionPolicy workspace ``.ckpt`` files.

A workspace checkpoint is ``torch.save({'cfg', 'state_dicts', 'pickles'}, pickle_module=
dill)``: ``cfg`` is the resolved Hydra DictConfig, ``state_dicts`` holds ``model``,
``ema_model`` (when ``cfg.training.use_ema``) and ``optimizer``. Evaluation uses the EMA
weights when the cfg says so, exactly as upstream's eval.py does.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile

import torch

from parapolicy.checkpoints.archive import check_plain_torch_zip, check_zip_crc
from parapolicy.checkpoints.dp_builders import build_networks
from parapolicy.checkpoints.files import open_regular
from parapolicy.checkpoints.dp_cfg import resolve_section
from parapolicy.checkpoints.dp_task import read_task
from parapolicy.checkpoints.budget import check_fits_file, module_bytes, stored_bytes
from parapolicy.checkpoints.fields import check_bool
from parapolicy.checkpoints.limits import MAX_INFERENCE_STEPS
from parapolicy.checkpoints.messages import describe, head, key_path, one_line, quoted
from parapolicy.checkpoints.schedulers import build_scheduler
from parapolicy.checkpoints.safe_pickle import allow_list_pickle
from parapolicy.errors import CheckpointError, ParapolicyError, UntrustedCheckpointError
from parapolicy.models.normalizer import LinearNormalizer
from parapolicy.tensor_safety import check_tensor_safe
from parapolicy.policy import Policy

# keys upstream state dicts carry that hold no information (ModuleAttrMixin placeholders)
IGNORABLE_KEYS = ("_dummy_variable", "mask_generator._dummy_variable")
_TOP_LEVEL_KEYS = ("cfg", "state_dicts")


def read_payload(path: str, trust_checkpoint: bool = False) -> dict:
    """Unpickle a workspace checkpoint; one clear error for anything that is not one.

    Untrusted files are vetted as plain ``torch.save`` zips first (no TorchScript, no legacy
    format) and then unpickled through the allow-list unpickler, from one open file handle.
    """
    if not os.path.lexists(path):
        raise CheckpointError(f"no checkpoint file at {path!r}")
    if trust_checkpoint:
        try:
            import dill as pickle_module
        except ImportError:
            pickle_module = pickle
        kwargs = {"pickle_module": pickle_module}
    else:
        kwargs = {"pickle_module": allow_list_pickle}
    with open_regular(path) as file:
        size = os.fstat(file.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{path!r} is empty")
        if not zipfile.is_zipfile(file):
            raise CheckpointError(
                f"{path!r} is not a torch checkpoint (not a zip archive: damaged, truncated, or another format)"
            )
        if not trust_checkpoint:
            check_plain_torch_zip(file, size, path)
        check_zip_crc(file, path)
        try:
            payload = torch.load(file, map_location="cpu", weights_only=False, **kwargs)
        except UntrustedCheckpointError:
            raise
        except Exception as exc:
            raise CheckpointError(
                f"cannot read {path!r} as a torch checkpoint (damaged or truncated?): {one_line(exc)}"
            ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in _TOP_LEVEL_KEYS):
        got = "[" + ", ".join(sorted(map(repr, payload))[:8]) + "]" if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{path!r} is not a DiffusionPolicy workspace checkpoint: expected a dict with keys "
            f"{list(_TOP_LEVEL_KEYS)} (+ 'pickles'), got {got}"
        )
    return payload


def load_dp_workspace(path: str, device="cpu", use_ema: bool | None = None, trust_checkpoint: bool = False) -> Policy:
    payload = read_payload(path, trust_checkpoint)
    try:
        policy = policy_from_payload(payload, origin=path, use_ema=use_ema, trust_checkpoint=trust_checkpoint)
    except ParapolicyError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RuntimeError, OverflowError,
            RecursionError, AssertionError) as exc:  # a check we missed still gives one clear error
        raise CheckpointError(f"{path!r}: cannot build a policy from this checkpoint: {type(exc).__name__}: "
                              f"{one_line(exc)}") from None
    return policy.to(device)


def policy_from_payload(payload: dict, origin: str = "", use_ema: bool | None = None,
                        trust_checkpoint: bool = False) -> Policy:
    """Build the policy a workspace payload describes; every failure is one ``CheckpointError``.

    The networks are first built on the meta device and their shapes compared with the
    weights in the file, and what they and the normalizer will take is compared with the
    tensor bytes the file stores, so a cfg cannot make us allocate more than the file holds.
    """
    cfg = payload["cfg"]
    policy_cfg = resolve_section(cfg, "policy", trust_checkpoint)
    if policy_cfg is None:
        raise CheckpointError(f"{origin!r}: the stored cfg has no 'policy' section")
    if not isinstance(policy_cfg, dict):
        raise CheckpointError(f"{origin!r}: cfg.policy must be a mapping, found {describe(policy_cfg)}")
    if use_ema is None:
        use_ema = check_bool("cfg.training.use_ema", resolve_section(cfg, "training.use_ema", trust_checkpoint, False))
    weights_key, weights = _select_weights(payload["state_dicts"], use_ema)
    groups = split_policy_state(weights, origin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            meta = build_networks(policy_cfg)
    scheduler = build_scheduler(policy_cfg.get("noise_scheduler"))
    check_spec(meta.spec, scheduler)
    check_weights_fit(meta.model, meta.obs_encoder, groups, origin)
    normalizer_bytes = 4 * sum(torch.Tensor.numel(t) for t in groups["normalizer."].values())  # kept as float32
    check_fits_file(module_bytes(*meta.modules()) + normalizer_bytes, stored_bytes(weights.values()), repr(origin))
    networks = build_networks(policy_cfg)
    spec = networks.spec
    check_spec(spec, scheduler)
    normalizer = LinearNormalizer()
    load_policy_groups(groups, networks.model, networks.obs_encoder, normalizer, origin)
    check_normalizer_fits(normalizer, spec, origin=origin)
    spec.source = {"format": "diffusion_policy_workspace", "path": os.path.abspath(origin), "weights": weights_key}
    spec.task = read_task(cfg, trust_checkpoint)
    return Policy(spec, networks.model, normalizer, scheduler, networks.obs_encoder)


def _select_weights(state_dicts, use_ema: bool) -> tuple[str, dict]:
    if not isinstance(state_dicts, dict):
        raise CheckpointError(f"payload['state_dicts'] must be a dict, found {describe(state_dicts)}")
    key = "ema_model" if use_ema else "model"
    if key not in state_dicts:
        raise CheckpointError(
            f"the checkpoint has no {key!r} weights (has {sorted(map(str, state_dicts))[:8]}); "
            + ("cfg.training.use_ema is true" if use_ema else "pass use_ema=True to use the EMA weights")
        )
    if not isinstance(state_dicts[key], dict):
        raise CheckpointError(f"payload['state_dicts'][{key!r}] must be a state dict, found {describe(state_dicts[key])}")
    return key, state_dicts[key]


_GROUPS = ("model.", "obs_encoder.", "normalizer.")


def split_policy_state(flat: dict, origin: str = "") -> dict:
    """Upstream's flat policy state dict -> {prefix: {name: tensor}}; every value a stored-in-full tensor."""
    groups = {p: {} for p in _GROUPS}
    unexpected = []
    for key, value in flat.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{origin}: weight names must be strings, found {describe(key)}")
        check_tensor_safe(f"{origin}: weight {key!r}", value, float_only=False)
        prefix = next((p for p in groups if key.startswith(p)), None)
        if prefix is not None:
            groups[prefix][key[len(prefix):]] = value
        elif key not in IGNORABLE_KEYS:
            unexpected.append(key)
    if unexpected:
        raise CheckpointError(f"{origin}: unexpected weights {quoted(unexpected)}: this does not match the cfg's policy")
    return groups


def check_weights_fit(model, encoder, groups: dict, origin: str = "") -> None:
    """Names, shapes and dtype kinds of the weights against the (meta-device) networks."""
    if encoder is None and groups["obs_encoder."]:
        raise CheckpointError(
            f"{origin}: unexpected weights {quoted(['obs_encoder.' + k for k in groups['obs_encoder.']])}: "
            "this does not match the cfg's policy"
        )
    check_strict(model, groups["model."], "model.", origin)
    if encoder is not None:
        check_strict(encoder, groups["obs_encoder."], "obs_encoder.", origin)


def load_policy_groups(groups: dict, model, encoder, normalizer: LinearNormalizer, origin: str = "") -> None:
    model.load_state_dict(groups["model."], strict=True)
    if encoder is not None:
        encoder.load_state_dict(groups["obs_encoder."], strict=True)
    normalizer.load_from_flat(groups["normalizer."], prefix="params_dict.", origin=origin)


def check_spec(spec, scheduler) -> None:
    """Inference steps against the scheduler's training steps; None means all of them, as upstream.

    At most ``MAX_INFERENCE_STEPS`` either way: each is one network call of every chunk."""
    train_steps = scheduler.config.num_train_timesteps
    if spec.num_inference_steps is None:
        spec.num_inference_steps = train_steps
    steps = spec.num_inference_steps
    most = min(train_steps, MAX_INFERENCE_STEPS)
    if steps is not None and not 1 <= steps <= most:
        raise CheckpointError(
            f"cfg.policy.num_inference_steps must be in [1, {most}] (num_train_timesteps={train_steps}, at most "
            f"{MAX_INFERENCE_STEPS}), found {steps}"
        )


def check_normalizer_fits(normalizer: LinearNormalizer, spec, origin: str = "") -> None:
    """Every obs key and the action need a normalizer field of a compatible size; actions invertibly scaled."""
    wanted = {"action": spec.action_dim}
    for key, shape in spec.obs_shapes.items():
        wanted[key] = shape[0] if len(shape) == 1 else None  # images: per-channel or scalar
    for key, dim in wanted.items():
        if key not in normalizer.fields:
            raise CheckpointError(f"{origin}: no normalizer weights for {key!r} ({key_path('normalizer.params_dict', key)}.*)")
        size = normalizer.params_dict[key]["scale"].numel()
        if dim is not None and size not in (1, dim):
            raise CheckpointError(f"{origin}: normalizer field {key!r} has {size} entries but the cfg says {key!r} has "
                                  f"{dim}")
    scale = normalizer.params_dict["action"]["scale"].detach()
    if not torch.isfinite(1.0 / scale).all():
        raise CheckpointError(
            f"{origin}: normalizer action scale must be non-zero (actions are divided by it), found "
            f"{scale.flatten()[:8].tolist()}"
        )


def check_strict(module, state: dict, prefix: str, origin: str) -> None:
    """Same names, same shapes, and float weights where the module has floats (no silent casts)."""
    expected = module.state_dict()
    missing = [prefix + k for k in expected if k not in state]
    extra = [prefix + k for k in state if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing weights {quoted(missing)}")
        if extra:
            parts.append(f"unexpected weights {quoted(extra)}")
        raise CheckpointError(f"{origin}: {'; '.join(parts)}")
    bad = [
        f"{prefix + k!r}: checkpoint {tuple(v.shape)} vs policy {tuple(expected[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise CheckpointError(f"{origin}: weight shapes do not match the cfg: {head(bad)}")
    kinds = [
        f"{prefix + k!r}: {str(v.dtype).replace('torch.', '')} where the policy has "
        f"{str(expected[k].dtype).replace('torch.', '')}"
        for k, v in state.items()
        if v.dtype.is_floating_point != expected[k].dtype.is_floating_point
        or (not v.dtype.is_floating_point and v.dtype != expected[k].dtype)
    ]
    if kinds:
        raise CheckpointError(f"{origin}: weight dtypes do not match the policy (no silent casts): {head(kinds)}")


def load_strict(module, state: dict, prefix: str, origin: str) -> None:
    check_strict(module, state, prefix, origin)
    module.load_state_dict(state, strict=True)


def _to_cpu(value):
    """Detached CPU tensors and plain dicts/lists, as upstream's checkpoint thread writes them."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def save_dp_workspace(path: str, cfg, state_dicts: dict, pickles: dict | None = None) -> None:
    """Write a checkpoint in upstream's exact layout (dill-pickled, CPU tensors, plain dicts)."""
    import dill
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    cpu = {name: _to_cpu(sd) for name, sd in state_dicts.items()}
    extra = {"global_step": 0, "epoch": 0, "_output_dir": os.path.dirname(os.path.abspath(path))}
    extra.update(pickles or {})
    payload = {"cfg": cfg, "state_dicts": cpu, "pickles": {k: dill.dumps(v) for k, v in extra.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(payload, f, pickle_module=dill)
    os.replace(tmp, path)


def upstream_state_dict(model, encoder, normalizer: LinearNormalizer) -> dict:
    """A policy's weights under upstream's key names (the inverse of ``load_policy_state``)."""
    flat = {"_dummy_variable": torch.zeros(0), "mask_generator._dummy_variable": torch.zeros(0)}
    flat.update({"model." + k: v for k, v in model.state_dict().items()})
    if encoder is not None:
        flat.update({"obs_encoder." + k: v for k, v in encoder.state_dict().items()})
    flat.update({"normalizer." + k: v for k, v in normalizer.state_dict().items()})
    return flat
