"""Running a scripted expert for one seeded episode and recording what a policy trains on."""

from __future__ import annotations

import numpy as np

EXPERT_ENVS = ("toy", "pusht", "lift")


def _setup(env_name: str, rng, randomize: bool):
    """(env, act(obs) -> action, state(obs, info) -> array, step limit) for one expert."""
    if env_name == "toy":
        from parapolicy_envs.toy import MAX_STEPS, ToyReachEnv, ToyReachExpert

        env, expert = ToyReachEnv(), ToyReachExpert(rng)
        expert.reset()
        return env, expert.act, lambda obs, info: obs, MAX_STEPS
    if env_name == "pusht":
        from parapolicy_envs.pusht import MAX_STEPS, PushTDPEnv
        from parapolicy_envs.pusht_expert import PushTExpert

        env, expert = PushTDPEnv("keypoints"), PushTExpert(rng, randomize=randomize)
        return env, lambda obs: expert.act(env), lambda obs, info: info["state"], MAX_STEPS
    if env_name == "lift":
        from parapolicy_envs.lift_expert import LiftExpert
        from parapolicy_envs.robomimic_env import TASKS, RobomimicEnv

        env, expert = RobomimicEnv("Lift"), LiftExpert(rng, randomize=randomize)
        return env, lambda obs: expert.act(env), lambda obs, info: obs, TASKS["Lift"].max_steps
    raise ValueError(f"no expert for env {env_name!r}; choose one of {EXPERT_ENVS}")


def run_expert_episode(env_name: str, seed: int, randomize: bool = True, max_steps: int | None = None,
                       steps_after_success: int | None = None) -> dict:
    """Returns per-step ``obs``, ``action``, ``state`` arrays plus ``success`` and ``seed``.

    ``obs`` is the policy observation *before* each action (PushT: the 20-d keypoint obs).
    ``steps_after_success`` ends the episode that many steps after the first success, as
    robomimic's demonstrations end once the task is done (robomimic envs never terminate).
    robomimic envs also record ``action_abs``: the absolute action ``[pos, rot6d, gripper]``
    per arm that reaches the same controller goal as each delta action, as upstream's
    ``*_abs`` datasets store it.
    """
    env, act, state, limit = _setup(env_name, np.random.default_rng(seed + 7_919), randomize)
    obs, info = env.reset(seed=seed)
    absolute = hasattr(env, "commanded_pose")
    rec = {"obs": [], "action": [], "state": [], **({"action_abs": []} if absolute else {})}
    success, reward_max, first_success = False, 0.0, None
    for step in range(max_steps or limit):
        action = np.asarray(act(obs), dtype=np.float64)
        rec["obs"].append(np.asarray(obs, dtype=np.float64))
        rec["state"].append(np.asarray(state(obs, info), dtype=np.float64))
        rec["action"].append(action)
        obs, reward, terminated, truncated, info = env.step(action)
        if absolute:
            rec["action_abs"].append(_absolute_action(env.commanded_pose(), action))
        reward_max = max(reward_max, float(reward))
        success = success or bool(info.get("is_success", False))
        if success and first_success is None:
            first_success = step
        if terminated or truncated:
            break
        if steps_after_success is not None and first_success is not None and step - first_success >= steps_after_success:
            break
    env.close()
    out = {k: np.stack(v) for k, v in rec.items()}
    out.update(success=success, seed=seed, max_reward=reward_max)
    return out


def _absolute_action(pose: np.ndarray, delta_action: np.ndarray) -> np.ndarray:
    """Per arm ``[pos 3, axis-angle 3, _]`` goal + the delta action's gripper -> ``[pos, rot6d, gripper]``."""
    from parapolicy_envs.rotations import axis_angle_to_rotation_6d

    arms = []
    for goal, delta in zip(pose.reshape(-1, 7), delta_action.reshape(-1, 7)):
        arms.append(np.concatenate([goal[:3], axis_angle_to_rotation_6d(goal[3:6]), delta[6:]]))
    return np.concatenate(arms)


def render_pusht_images(seed: int, actions: np.ndarray, states: np.ndarray | None = None) -> dict:
    """Replay an episode's actions in the image env: ``image`` (N, 3, 96, 96) uint8 and
    ``agent_pos`` (N, 2) observed before each action. Replay is deterministic; when the
    keypoint run's ``states`` are given, they are checked against the replay."""
    from parapolicy_envs.pusht import PushTDPEnv

    env = PushTDPEnv("image")
    obs, info = env.reset(seed=seed)
    images, agent_pos = [], []
    for i, action in enumerate(actions):
        if states is not None and np.abs(info["state"] - states[i]).max() > 1e-6:
            raise RuntimeError(f"seed {seed}: image replay diverged from the recorded state at step {i}")
        images.append(np.round(obs["image"] * 255).astype(np.uint8))
        agent_pos.append(obs["agent_pos"])
        obs, _, _, _, info = env.step(action)
    env.close()
    return {"image": np.stack(images), "agent_pos": np.stack(agent_pos)}
