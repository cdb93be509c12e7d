"""robomimic / robosuite tasks with DiffusionPolicy's low-dim observations.

Built through robomimic's ``EnvRobosuite`` as upstream's robomimic runners do: OSC_POSE
delta actions at 20 Hz, observation = concatenation of ``object``, ``robot0_eef_pos``,
``robot0_eef_quat``, ``robot0_gripper_qpos`` (19-d for Lift). Seeding follows upstream's
test episodes: ``np.random.seed(seed)`` then ``reset()``. Reward is robomimic's sparse
task success; episodes run to ``max_episode_steps`` as upstream (``is_done`` is never set).
Needs the ``robomimic`` extra (robomimic 0.3.0, robosuite 1.4.1, mujoco < 3.10).
"""

from __future__ import annotations

import sys
import types

import gymnasium as gym
import numpy as np

OBS_KEYS = ("object", "robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")


def _import_robomimic():
    if "mujoco_py" not in sys.modules:  # robomimic 0.3.0 imports it only for an exception type
        stub = types.ModuleType("mujoco_py")
        stub.builder = types.SimpleNamespace(MujocoException=Exception)
        sys.modules["mujoco_py"] = stub
    try:
        import robomimic.utils.env_utils as env_utils
        import robomimic.utils.obs_utils as obs_utils
        from robosuite.controllers import load_controller_config
    except ImportError as exc:
        raise ImportError(
            f"robomimic tasks need the robomimic extra: pip install 'parapolicy[robomimic]' ({exc})"
        ) from None
    return env_utils, obs_utils, load_controller_config


class RobomimicLowdimEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    control_hz = 20

    def __init__(self, task: str = "Lift", render_mode=None):
        env_utils, obs_utils, load_controller_config = _import_robomimic()
        obs_utils.initialize_obs_modality_mapping_from_dict({"low_dim": list(OBS_KEYS)})
        env_meta = {
            "env_name": task,
            "type": 1,  # robosuite
            "env_kwargs": {
                "has_renderer": False,
                "has_offscreen_renderer": render_mode is not None,
                "ignore_done": True,
                "use_object_obs": True,
                "use_camera_obs": False,
                "control_freq": self.control_hz,
                "controller_configs": load_controller_config(default_controller="OSC_POSE"),
                "robots": ["Panda"],
                "reward_shaping": False,
            },
        }
        self._env = env_utils.create_env_from_metadata(
            env_meta=env_meta, render=False, render_offscreen=render_mode is not None, use_image_obs=False
        )
        self.render_mode = render_mode
        self.task = task
        self.raw_obs: dict = {}
        dim = sum(int(np.prod(self._env.reset()[k].shape)) for k in OBS_KEYS)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(dim,), dtype=np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(self._env.action_dimension,), dtype=np.float64)

    def _obs(self, raw):
        self.raw_obs = raw
        return np.concatenate([np.asarray(raw[k], dtype=np.float64).reshape(-1) for k in OBS_KEYS])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            np.random.seed(seed)
        raw = self._env.reset()
        return self._obs(raw), {"is_success": False}

    def step(self, action):
        raw, reward, done, info = self._env.step(np.asarray(action, dtype=np.float64))
        success = bool(self._env.is_success()["task"])
        return self._obs(raw), float(reward), False, False, dict(info, is_success=success)

    def render(self):
        return self._env.render(mode="rgb_array", height=128, width=128)
