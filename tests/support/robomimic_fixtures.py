"""Tiny upstream-format robomimic checkpoints made by parapolicy's trainer (two steps on
synthetic buffers): one of each kind upstream ships, for format and rollout tests.

The buffers hold plausible values (end-effector positions above the table, gripper-down
rotations) so absolute actions sampled inside the normalizer's range stay reachable.
"""

from __future__ import annotations

import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("lowdim_delta", "lowdim_abs", "image_abs", "transport_abs")
TRANSPORT_KEYS = ["object", *(f"robot{i}_{k}" for i in range(2) for k in ("eef_pos", "eef_quat", "gripper_qpos"))]


def _abs_actions(rng, n, arms):
    from parapolicy_envs.rotations import axis_angle_to_rotation_6d

    parts = []
    for _ in range(arms):
        pos = np.array([-0.1, 0.0, 1.0]) + rng.uniform(-0.05, 0.05, size=(n, 3))
        rot = axis_angle_to_rotation_6d(np.array([np.pi, 0.0, 0.0]) + rng.uniform(-0.1, 0.1, size=(n, 3)))
        parts.append(np.concatenate([pos, rot, rng.choice([-1.0, 1.0], size=(n, 1))], axis=-1))
    return np.concatenate(parts, axis=-1)


def _buffer(kind: str, rng, n=24) -> dict:
    arms = 2 if kind == "transport_abs" else 1
    if kind == "image_abs":
        return {"agentview_image": rng.integers(0, 256, size=(n, 3, 84, 84), dtype=np.uint8),
                "robot0_eye_in_hand_image": rng.integers(0, 256, size=(n, 3, 84, 84), dtype=np.uint8),
                "robot0_eef_pos": rng.normal(size=(n, 3)), "robot0_eef_quat": rng.normal(size=(n, 4)),
                "robot0_gripper_qpos": rng.normal(size=(n, 2)), "action_abs": _abs_actions(rng, n, 1),
                "action": rng.uniform(-1, 1, size=(n, 7))}
    return {"obs": rng.normal(size=(n, 59 if arms == 2 else 19)), "action": rng.uniform(-1, 1, size=(n, 7)),
            "action_abs": _abs_actions(rng, n, arms)}


def _cfg(kind: str, data_path: str) -> dict:
    from omegaconf import OmegaConf

    from parapolicy.checkpoints.dp_cfg import safe_arithmetic

    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", safe_arithmetic)
    name = "lift_image_abs" if kind == "image_abs" else "lift_lowdim"
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", "train", f"{name}.yaml"))
    cfg.data.path = data_path
    cfg.training.num_steps, cfg.training.batch_size = 2, 2
    cfg.policy.num_inference_steps = 4
    unet = cfg.policy if kind == "image_abs" else cfg.policy.model
    unet.down_dims, unet.diffusion_step_embed_dim = [16, 32], 16
    if kind in ("lowdim_abs", "transport_abs"):
        cfg.abs_action, cfg.action_dim, cfg.data.action_key = True, 10, "action_abs"
    if kind == "transport_abs":  # upstream's transport_lowdim_abs task
        cfg.obs_dim, cfg.action_dim = 59, 20
        cfg.task.name, cfg.task.task_name, cfg.task.obs_keys = "transport_lowdim", "transport", TRANSPORT_KEYS
        cfg.task.env_runner.max_steps = 700
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra")
    return plain


def train_tiny(kind: str, root: str) -> str:
    """A two-step checkpoint of ``kind`` (one of ``KINDS``) under ``root``; returns its path."""
    from parapolicy.train.dataset import save_buffer
    from parapolicy.train.trainer import train

    rng = np.random.default_rng(KINDS.index(kind))
    data = os.path.join(root, f"{kind}.npz")
    save_buffer(data, [_buffer(kind, rng) for _ in range(2)])
    return train(_cfg(kind, data), os.path.join(root, kind), progress=False)
