"""ToyReach: a 2-D point that must reach one of two goals -- multimodal, and fast.

The point follows a PD-tracked absolute target (like PushT's agent). Demonstrations go
to the left or the right goal with equal probability, so a policy must commit to one
mode. Observation: [x, y, vx, vy]; action: target position in [-1, 1]^2; reward 1 on
reaching either goal (which ends the episode), else 0.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

GOALS = np.array([[-0.6, 0.7], [0.6, 0.7]], dtype=np.float64)
GOAL_RADIUS = 0.08
MAX_STEPS = 60


class ToyReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    control_hz = 10

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(-2.0, 2.0, shape=(4,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.render_mode = render_mode
        self.pos = np.zeros(2)
        self.vel = np.zeros(2)

    def _obs(self):
        return np.concatenate([self.pos, self.vel]).astype(np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform([-0.3, -0.8], [0.3, -0.5])
        self.vel = np.zeros(2)
        return self._obs(), {"is_success": False}

    def step(self, action):
        target = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        for _ in range(5):  # PD tracking, 5 substeps of 20 ms
            self.vel += (40.0 * (target - self.pos) - 12.0 * self.vel) * 0.02
            self.pos = np.clip(self.pos + self.vel * 0.02, -1.0, 1.0)
        dist = np.linalg.norm(GOALS - self.pos, axis=1).min()
        success = bool(dist < GOAL_RADIUS)
        return self._obs(), float(success), success, False, {"is_success": success}

    def render(self):
        img = np.full((64, 64, 3), 255, dtype=np.uint8)
        for g in GOALS:
            cx, cy = ((g + 1) * 31.5).astype(int)
            img[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3] = (0, 160, 0)
        px, py = ((self.pos + 1) * 31.5).astype(int)
        img[max(py - 1, 0):py + 2, max(px - 1, 0):px + 2] = (200, 0, 0)
        return img


class ToyReachExpert:
    """Picks a goal at random (the two modes) and moves there along a gentle arc."""

    def __init__(self, rng: np.random.Generator, speed=0.12):
        self.rng, self.speed = rng, speed
        self.goal = None

    def reset(self):
        self.goal = GOALS[self.rng.integers(2)]
        self.bend = self.rng.uniform(-0.15, 0.15)

    def act(self, obs) -> np.ndarray:
        pos = np.asarray(obs[:2], dtype=np.float64)
        delta = self.goal - pos
        dist = np.linalg.norm(delta)
        if dist < 1e-6:
            return self.goal.astype(np.float32)
        direction = delta / dist
        normal = np.array([-direction[1], direction[0]])
        step = min(self.speed, dist)
        waypoint = pos + direction * step + normal * self.bend * min(dist, 0.5) * 0.3
        return np.clip(waypoint, -1, 1).astype(np.float32)
