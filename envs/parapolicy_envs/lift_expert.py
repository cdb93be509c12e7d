"""Scripted Lift expert for OSC_POSE delta actions: approach, descend, grasp, lift."""

from __future__ import annotations

import numpy as np


class LiftExpert:
    def __init__(self, rng=None, randomize=False, gain=12.0):
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.randomize, self.gain = randomize, gain
        self.reset()

    def reset(self):
        self.phase, self.timer = "approach", 0
        jitter = self.rng.uniform(-0.004, 0.004, size=3) if self.randomize else np.zeros(3)
        self.hover = 0.06 + (self.rng.uniform(0, 0.04) if self.randomize else 0.0)
        self.offset = jitter

    def _move(self, eef, target, grip):
        delta = np.clip((target - eef) * self.gain, -1.0, 1.0)
        return np.concatenate([delta, np.zeros(3), [grip]])

    def act(self, env) -> np.ndarray:
        raw = env.raw_obs
        eef = np.asarray(raw["robot0_eef_pos"], dtype=np.float64)
        cube = np.asarray(raw["object"][:3], dtype=np.float64) + self.offset
        if self.phase == "approach":
            target = cube + np.array([0, 0, self.hover])
            if np.linalg.norm(target - eef) < 0.01:
                self.phase = "descend"
            return self._move(eef, target, -1.0)
        if self.phase == "descend":
            target = cube + np.array([0, 0, -0.005])
            if np.linalg.norm(target - eef) < 0.008:
                self.phase, self.timer = "grasp", 0
            return self._move(eef, target, -1.0)
        if self.phase == "grasp":
            self.timer += 1
            if self.timer >= 12:
                self.phase = "lift"
            return self._move(eef, cube + np.array([0, 0, -0.005]), 1.0)
        return self._move(eef, cube + np.array([0, 0, 0.25]), 1.0)
