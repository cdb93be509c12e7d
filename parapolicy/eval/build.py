"""From a rollout cfg to the objects a rollout needs: checkpoint path, env factory, sampler.

Library code shared by the CLI, the scripts and the tests (none of them import the CLI).
"""

from __future__ import annotations

import os
import platform
import sys

import torch

from parapolicy.shipped import ASSETS_DIR  # noqa: F401  (re-exported: scripts and tests find shipped files here)

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(PACKAGE_DIR, "configs")  # the rollout CLI's Hydra configs (package data)


def ensure_envs_importable() -> None:
    """Import ``parapolicy_envs`` (registers the envs); from a source checkout, via ``envs/``."""
    try:
        import parapolicy_envs  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.join(os.path.dirname(PACKAGE_DIR), "envs"))
        import parapolicy_envs  # noqa: F401


def literal_checkpoint(cfg):
    """``cfg.checkpoint`` exactly as written: a path is never interpolated, so ``${oc.env:...}``
    in a file name stays text (resolving it would read the environment into messages and logs)."""
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        return cfg.get("checkpoint")
    return OmegaConf.to_container(cfg, resolve=False).get("checkpoint")


def logged_config(cfg) -> dict:
    """The composed cfg as plain data for loggers: resolved, except ``checkpoint``, kept literal."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=False)
    literal = plain.pop("checkpoint", None)
    resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    resolved["checkpoint"] = literal
    return resolved


def resolve_checkpoint(cfg) -> str:
    """``cfg.checkpoint`` (literal, ``~`` expanded), or the checkpoint shipped for ``cfg.env``."""
    from parapolicy.errors import RolloutConfigError

    checkpoint = literal_checkpoint(cfg)
    if checkpoint:
        return os.path.expanduser(str(checkpoint))
    name = cfg.env.get("default_checkpoint")
    if not name:
        raise RolloutConfigError(f"env {cfg.env.id} ships no checkpoint: expected checkpoint=PATH, found none")
    return os.path.join(ASSETS_DIR, name)


def make_step_env_factory(env_cfg, spec, wrappers=()):
    """Single-step environments whose observations carry the policy's keys (``adapters``).

    ``wrappers`` wrap the adapted env (e.g. video frames per control step).
    """
    ensure_envs_importable()
    from parapolicy_envs.actions import adapt_actions
    from parapolicy_envs.adapters import make_adapted_env

    kwargs = dict(env_cfg.get("kwargs") or {})
    label = f"checkpoint {os.path.basename(spec.source['path'])!r}" if spec.source.get("path") else "the checkpoint"

    def make():
        env = make_adapted_env(env_cfg.id, kwargs, spec.obs_shapes, env_cfg.get("obs_key", "obs"), label)
        env = adapt_actions(env, spec.action_dim, spec.task.get("abs_action"), label)
        for wrap in wrappers:
            env = wrap(env)
        return env

    return make


def make_env_factory(env_cfg, spec, wrappers=()):
    """Environments wrapped for the policy's observation history and action chunk."""
    ensure_envs_importable()
    from parapolicy_envs import MultiStepWrapper

    make_step = make_step_env_factory(env_cfg, spec, wrappers)

    def make():
        return MultiStepWrapper(make_step(), spec.n_obs_steps, spec.n_action_steps, env_cfg.max_episode_steps)

    make().close()  # a checkpoint/env mismatch fails here, once, before any episode runs
    return make


def register_sampler_configs() -> None:
    """Every registered sampler as an option of Hydra's ``sampler`` group, its settings' defaults
    read from its dataclass: one place for each default, and a new sampler needs no config file."""
    from hydra.core.config_store import ConfigStore

    from parapolicy.samplers import SAMPLERS

    store = ConfigStore.instance()
    for name, cls in SAMPLERS.items():
        store.store(group="sampler", name=name, node=cls().config())


def sampler_settings(sampler_cfg) -> tuple[str, dict]:
    settings = {k: v for k, v in dict(sampler_cfg).items() if k != "name"}
    return str(sampler_cfg["name"]), settings


def versions() -> dict:
    import diffusers

    import parapolicy

    return {"parapolicy": parapolicy.__version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "python": platform.python_version()}


def device_name(device: str) -> str:
    if str(device).startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


register_sampler_configs()
