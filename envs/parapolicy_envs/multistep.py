"""MultiStepWrapper: To-step observation history, Ta-step action execution.

Mirrors upstream DiffusionPolicy's wrapper: the observation is the last ``n_obs_steps``
observations, padded at the start by repeating the oldest; ``step`` executes a chunk of
actions one by one and stops early once the episode is done; the reward is the max over
the whole episode so far; ``max_episode_steps`` counts env steps and truncates.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np


def _stack(history, n):
    items = list(history)[-n:]
    items = [items[0]] * (n - len(items)) + items
    if isinstance(items[0], dict):
        return {k: np.stack([o[k] for o in items]) for k in items[0]}
    return np.stack(items)


def _stacked_space(space: gym.Space, n: int) -> gym.Space:
    if isinstance(space, gym.spaces.Dict):
        return gym.spaces.Dict({k: _stacked_space(s, n) for k, s in space.spaces.items()})
    low = np.repeat(space.low[None], n, axis=0)
    high = np.repeat(space.high[None], n, axis=0)
    return gym.spaces.Box(low=low, high=high, dtype=space.dtype)


class MultiStepWrapper(gym.Wrapper):
    def __init__(self, env, n_obs_steps: int, n_action_steps: int, max_episode_steps: int | None = None):
        super().__init__(env)
        self.n_obs_steps, self.n_action_steps = int(n_obs_steps), int(n_action_steps)
        self.max_episode_steps = max_episode_steps
        self.observation_space = _stacked_space(env.observation_space, self.n_obs_steps)
        self.action_space = gym.spaces.Box(
            low=np.repeat(env.action_space.low[None], self.n_action_steps, axis=0),
            high=np.repeat(env.action_space.high[None], self.n_action_steps, axis=0),
            dtype=env.action_space.dtype,
        )
        self._obs, self.rewards, self._success = deque(maxlen=self.n_obs_steps + 1), [], False
        self._terminated = self._truncated = False

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs.clear()
        self._obs.append(obs)
        self.rewards, self._success = [], bool(info.get("is_success", False))
        self._terminated = self._truncated = False
        return _stack(self._obs, self.n_obs_steps), info

    def step(self, actions):
        actions = np.asarray(actions)
        if actions.ndim == 1:
            actions = actions[None]
        info = {}
        for action in actions:
            if self.done:
                break
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._obs.append(obs)
            self.rewards.append(float(reward))
            self._success = self._success or bool(info.get("is_success", False))
            self._terminated = self._terminated or bool(terminated)
            limit = self.max_episode_steps is not None and len(self.rewards) >= self.max_episode_steps
            self._truncated = self._truncated or bool(truncated) or limit
        info = dict(info, is_success=self._success, episode_steps=len(self.rewards))
        reward = max(self.rewards) if self.rewards else 0.0
        return _stack(self._obs, self.n_obs_steps), reward, self._terminated, self._truncated, info

    @property
    def done(self) -> bool:
        return self._terminated or self._truncated
