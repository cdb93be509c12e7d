"""Episode videos: a gym wrapper that keeps one rendered frame per control step."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import torch


class RecordFrames(gym.Wrapper):
    """Renders after ``reset`` and every ``step`` into ``frames`` (a list it appends to)."""

    def __init__(self, env, frames: list):
        super().__init__(env)
        self.frames = frames

    def _grab(self):
        frame = self.env.render()
        if frame is not None:
            self.frames.append(np.asarray(frame))

    def step(self, action):
        out = self.env.step(action)
        self._grab()
        return out

    def reset(self, **kwargs):
        self.frames.clear()
        return self.env.reset(**kwargs)


def record_videos(policy, env_cfg, seeds, output_dir, *, noise_seed=0, obs_adapter=None, obs_key="obs", fps=10,
                  on_chunk=None):
    """Re-run each seed alone with a frame recorder; returns the mp4 paths written.
    ``on_chunk(steps, finished)`` reports progress as in the batched runner."""
    import imageio.v2 as imageio

    from parapolicy.eval.build import make_env_factory
    from parapolicy.eval.episodes import run_batch

    paths = []
    for seed in seeds:
        frames: list = []
        make = make_env_factory(env_cfg, policy.spec, wrappers=[lambda env, f=frames: RecordFrames(env, f)])
        run_batch(policy, make, [seed], generator=torch.Generator().manual_seed(int(noise_seed)),
                  obs_adapter=obs_adapter, obs_key=obs_key, on_chunk=on_chunk)
        if frames:
            path = os.path.join(output_dir, f"episode_{seed}.mp4")
            imageio.mimsave(path, frames, fps=fps)
            paths.append(path)
    return paths
