"""PushT with DiffusionPolicy's observations, on top of the gym-pusht package.

* ``obs_type="keypoints"``: 20-d = the 9 block keypoints of upstream's keypoint map
  (transformed by the block pose) interleaved x,y, then the agent position -- exactly the
  ``obs[..., :20]`` upstream's lowdim runner feeds the policy.
* ``obs_type="image"``: ``image`` CHW float32 in [0, 1] (96x96) + ``agent_pos``.

Seeds give upstream's initial states: the state is drawn with ``RandomState(seed)`` as
upstream does and passed as gym-pusht's ``reset_to_state``. Reward ``clip(coverage /
0.95)`` and termination at coverage > 0.95 come from gym-pusht, identical to upstream.
``info["state"]`` is the 5-d [agent xy, block xy, block angle].
"""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np

_KEYPOINTS_FILE = os.path.join(os.path.dirname(__file__), "data", "pusht_dp_keypoints.json")
MAX_STEPS = 300


def load_block_keypoints() -> np.ndarray:
    """(9, 2) keypoints in the T block's body frame, as upstream's PushTKeypointsEnv builds them."""
    with open(_KEYPOINTS_FILE) as f:
        return np.asarray(json.load(f)["local_keypoint_map"]["block"], dtype=np.float64)


def world_keypoints(local: np.ndarray, position, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return local @ rot.T + np.asarray(position, dtype=np.float64)


def upstream_initial_state(seed: int) -> np.ndarray:
    """Upstream PushTEnv.reset's draw: agent xy, block xy, block angle from RandomState(seed)."""
    rs = np.random.RandomState(seed)
    return np.array(
        [rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400),
         rs.randn() * 2 * np.pi - np.pi]
    )


class PushTDPEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    control_hz = 10

    def __init__(self, obs_type: str = "keypoints", render_mode: str | None = None):
        from gym_pusht.envs import PushTEnv

        if obs_type not in ("keypoints", "image"):
            raise ValueError(f"obs_type must be 'keypoints' or 'image', got {obs_type!r}")
        self.obs_type = obs_type
        self._env = PushTEnv(obs_type="state" if obs_type == "keypoints" else "pixels_agent_pos",
                             render_mode="rgb_array")
        self.render_mode = render_mode
        self._local_kp = load_block_keypoints()
        self.action_space = gym.spaces.Box(0.0, 512.0, shape=(2,), dtype=np.float64)
        if obs_type == "keypoints":
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(20,), dtype=np.float64)
        else:
            self.observation_space = gym.spaces.Dict({
                "image": gym.spaces.Box(0.0, 1.0, shape=(3, 96, 96), dtype=np.float32),
                "agent_pos": gym.spaces.Box(0.0, 512.0, shape=(2,), dtype=np.float64),
            })

    @property
    def sim(self):
        """The underlying gym-pusht env (pymunk bodies: ``agent``, ``block``)."""
        return self._env

    def state(self) -> np.ndarray:
        e = self._env
        return np.array([*e.agent.position, *e.block.position, e.block.angle % (2 * np.pi)])

    def _obs(self, raw):
        if self.obs_type == "keypoints":
            kp = world_keypoints(self._local_kp, self._env.block.position, self._env.block.angle)
            return np.concatenate([kp.reshape(-1), np.asarray(self._env.agent.position)])
        return {"image": np.ascontiguousarray(raw["pixels"].transpose(2, 0, 1), dtype=np.float32) / 255.0,
                "agent_pos": np.asarray(raw["agent_pos"], dtype=np.float64)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        options = dict(options or {})
        if options.get("reset_to_state") is None and seed is not None:
            options["reset_to_state"] = upstream_initial_state(seed)
        raw, info = self._env.reset(seed=seed, options=options)
        info = dict(info, state=self.state(), coverage=0.0)
        return self._obs(raw), info

    def step(self, action):
        raw, reward, terminated, truncated, info = self._env.step(np.asarray(action, dtype=np.float64))
        info = dict(info, state=self.state())
        return self._obs(raw), float(reward), bool(terminated), bool(truncated), info

    def render(self):
        return self._env.render()

    def close(self):
        self._env.close()
