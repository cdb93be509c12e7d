"""Action adapters: a checkpoint's actions -> what an env steps with, or one clear refusal.

Upstream's robomimic runners keep the env's own action format (robosuite OSC_POSE, 7 numbers
per arm) and convert the policy's output before ``env.step``: absolute-action policies
predict ``[pos 3, rot6d 6, gripper 1]`` per arm (10-d; Transport 20-d), and the runner turns
each 6-d rotation into axis-angle (``undo_transform_action``). ``adapt_actions`` does the
same with a wrapper, and refuses the pairings that cannot work: absolute actions in a delta
env, delta actions in an absolute env, or an action size the env does not take.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from parapolicy.errors import EnvPairingError
from parapolicy_envs.rotations import rotation_6d_to_axis_angle

POSE_6D_DIM = 10  # per arm: position 3 + 6-d rotation + gripper 1


def adapt_actions(env: gym.Env, action_dim: int, abs_action: bool | None = None, checkpoint: str = "the checkpoint"):
    """``env`` wrapped to take the checkpoint's ``action_dim``-d actions.

    ``abs_action`` is what the checkpoint's ``cfg.task`` says (None when it says nothing: then
    10 numbers per arm mean absolute actions with 6-d rotations, as upstream's only layout).
    """
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    space = env.action_space
    if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
        return env
    env_dim = int(space.shape[0])
    env_abs = getattr(env.unwrapped, "abs_action", None)
    if env_abs is None:  # an env without control modes: only the size must agree
        if action_dim != env_dim:
            raise EnvPairingError(f"{checkpoint} outputs {action_dim}-d actions but env {env_id!r} takes {env_dim}-d actions")
        return env
    n_arms = int(getattr(env.unwrapped, "n_arms", 1))
    rot6d = action_dim == POSE_6D_DIM * n_arms
    why = "its cfg.task says abs_action: true" if abs_action else f"{POSE_6D_DIM} per arm: position, 6-d rotation, gripper"
    if abs_action is None:
        abs_action = rot6d
    if abs_action and not env_abs:
        raise EnvPairingError(
            f"{checkpoint} outputs absolute pose actions ({action_dim}-d; {why}) but env {env_id!r} "
            f"runs delta OSC_POSE control ({env_dim}-d): use the env with abs_action=true (env.kwargs.abs_action=true), "
            "or leave env= out to take it from the checkpoint")
    if env_abs and not abs_action:
        raise EnvPairingError(
            f"{checkpoint} outputs delta actions ({action_dim}-d) but env {env_id!r} runs absolute pose control "
            f"({env_dim}-d, abs_action=true): use the env with abs_action=false")
    if env_abs and rot6d:
        return Rotation6dActions(env, n_arms)
    if action_dim != env_dim:
        raise EnvPairingError(f"{checkpoint} outputs {action_dim}-d actions but env {env_id!r} takes {env_dim}-d actions "
                              f"({n_arms} arm(s) x 7: position 3, rotation 3, gripper 1)")
    return env


class Rotation6dActions(gym.ActionWrapper):
    """``[pos, rot6d, gripper]`` per arm -> ``[pos, axis-angle, gripper]`` per arm (upstream's
    ``undo_transform_action``)."""

    def __init__(self, env: gym.Env, n_arms: int):
        super().__init__(env)
        self.n_arms = n_arms
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(POSE_6D_DIM * n_arms,), dtype=np.float64)

    def action(self, action):
        arms = np.asarray(action, dtype=np.float64).reshape(self.n_arms, POSE_6D_DIM)
        converted = np.concatenate([arms[:, :3], rotation_6d_to_axis_angle(arms[:, 3:9]), arms[:, 9:]], axis=-1)
        return converted.reshape(-1)
