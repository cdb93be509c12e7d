"""The env a checkpoint runs in when the rollout names none (``env=auto``, the default).

Upstream checkpoints say how they were evaluated (``cfg.task``, read by
``checkpoints.dp_task``): a robomimic runner becomes ``parapolicy/<Task>-lowdim-v0`` or
``-image-v0`` with the runner's ``abs_action`` and ``max_steps`` (and the image size the
policy declares); a PushT runner becomes the matching ``parapolicy/PushT-*`` env. A checkpoint
that says nothing (LeRobot dirs, hand-made files) runs in the ``fallback`` env config.
Env configs may leave ``max_episode_steps`` null: the env's registered length.
"""

from __future__ import annotations

import logging
import os

AUTO = "auto"
_ROBOMIMIC_RUNNERS = {"RobomimicLowdimRunner": "lowdim", "RobomimicImageRunner": "image"}
_PUSHT_RUNNERS = {"PushTKeypointsRunner": "parapolicy/PushT-keypoints-v0", "PushTImageRunner": "parapolicy/PushT-image-v0"}

log = logging.getLogger("parapolicy.rollout")


def env_for_task(spec) -> dict | None:
    """An env config (``id``, ``kwargs``, ``max_episode_steps``, ``obs_key``) from ``spec.task``, or None."""
    import gymnasium as gym

    from parapolicy.errors import RolloutConfigError
    from parapolicy.eval.build import ensure_envs_importable

    ensure_envs_importable()
    from parapolicy_envs import robomimic_env_id
    from parapolicy_envs.robomimic_env import TASKS, task_name

    task = spec.task or {}
    runner, kwargs = task.get("runner"), {}
    if runner in _ROBOMIMIC_RUNNERS:
        try:
            name = task_name(task.get("task_name") or "")
        except ValueError:
            raise RolloutConfigError(
                f"the checkpoint's {runner} names robomimic task {task.get('task_name')!r}, which parapolicy does not "
                f"have ({', '.join(TASKS)}): pass env=...") from None
        obs_type = _ROBOMIMIC_RUNNERS[runner]
        env_id = robomimic_env_id(name, obs_type)
        kwargs["abs_action"] = bool(task.get("abs_action"))
        sizes = {shape[-1] for shape in spec.obs_shapes.values() if len(shape) == 3}
        if obs_type == "image" and len(sizes) == 1 and sizes != {TASKS[name].image_size}:
            kwargs["image_size"] = sizes.pop()
    elif runner in _PUSHT_RUNNERS:
        env_id = _PUSHT_RUNNERS[runner]
    else:
        return None
    steps = task.get("max_steps") or gym.spec(env_id).max_episode_steps
    return {"id": env_id, "kwargs": kwargs, "max_episode_steps": int(steps), "obs_key": "obs",
            "default_checkpoint": None}


def resolve_env(cfg, spec) -> None:
    """Replace an ``env=auto`` config in ``cfg`` by the checkpoint's env (or the fallback config);
    ``max_episode_steps`` and ``kwargs`` given on the command line are kept."""
    from omegaconf import OmegaConf, open_dict

    from parapolicy.eval.build import CONFIG_DIR

    if str(cfg.env.get("id")) != AUTO:
        return
    chosen = env_for_task(spec)
    if chosen is None:
        fallback = str(cfg.env.get("fallback") or "pusht_keypoints")
        chosen = OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "env", f"{fallback}.yaml")))
        log.info("env: the checkpoint names no upstream env runner; running in env=%s", fallback)
    else:
        log.info("env from the checkpoint's cfg.task: %s %s, %d steps", chosen["id"], chosen["kwargs"],
                 chosen["max_episode_steps"])
    if cfg.env.get("max_episode_steps") is not None:  # the user's env.max_episode_steps=... wins
        chosen["max_episode_steps"] = int(cfg.env.max_episode_steps)
    chosen["kwargs"] = {**(chosen.get("kwargs") or {}), **dict(cfg.env.get("kwargs") or {})}
    with open_dict(cfg):
        cfg.env = chosen


def fill_episode_length(cfg) -> None:
    """``env.max_episode_steps: null`` means the length the env id is registered with."""
    import gymnasium as gym

    if cfg.env.get("max_episode_steps") is None:
        cfg.env.max_episode_steps = int(gym.spec(str(cfg.env.id)).max_episode_steps)
