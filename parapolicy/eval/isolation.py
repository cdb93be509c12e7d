"""A sub-environment whose crash is one failed episode, not a failed batch.

Gymnasium's vector envs abort the whole batch when one sub-env raises, and (with autoreset
disabled) refuse to step a sub-env that has terminated. :class:`IsolatedEnv` therefore reports
the end of an episode in ``info[DONE_KEY]`` instead of the terminated flag, turns an exception
into the end of the episode with the error in ``info[ERROR_KEY]``, and then parks: further steps
return the last observation (or zeros) without touching the simulator. The batch keeps its
shape and the other episodes run on unchanged. The next ``reset`` rebuilds a crashed env from
its factory, so later seeds get a fresh simulator.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ERROR_KEY = "parapolicy_error"
DONE_KEY = "parapolicy_done"
RETURN_KEY = "parapolicy_return"


class IsolatedEnv(gym.Wrapper):
    def __init__(self, make_env):
        super().__init__(make_env())
        self._make_env = make_env
        self._stand_in = None
        self.broken = False
        self.parked = False

    def _restart(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - a crashed simulator may not close cleanly
            pass
        self.env = self._make_env()
        self.broken = False

    def _fail(self, phase: str, exc: Exception):
        self.broken = self.parked = True
        if self._stand_in is None:
            self._stand_in = _zeros(self.observation_space)
        return self._stand_in, {ERROR_KEY: f"{phase}: {type(exc).__name__}: {exc}", DONE_KEY: True}

    def reset(self, *, seed=None, options=None):
        if self.broken:
            self._restart()
        self.parked = False
        try:
            obs, info = self.env.reset(seed=seed, options=options)
        except Exception as exc:  # noqa: BLE001 - recorded as this episode's failure
            return self._fail("reset", exc)
        self._stand_in = obs
        return obs, info

    def step(self, action):
        if self.parked:
            return self._stand_in, 0.0, False, False, {}
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as exc:  # noqa: BLE001
            obs, info = self._fail("step", exc)
            return obs, 0.0, False, False, info
        self._stand_in = obs
        self.parked = bool(terminated or truncated)
        info = dict(info, **{DONE_KEY: self.parked})
        rewards = getattr(self.env, "rewards", None)  # MultiStepWrapper keeps the per-tick rewards
        if rewards is not None:
            info[RETURN_KEY] = float(sum(rewards))
        return obs, reward, False, False, info


def _zeros(space):
    """An all-zero observation of ``space`` (Box, or Dict of Boxes)."""
    if isinstance(space, gym.spaces.Dict):
        return {k: _zeros(s) for k, s in space.spaces.items()}
    return np.zeros(space.shape, dtype=space.dtype)
