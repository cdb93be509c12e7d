"""The two things a rollout does: plain batched episodes, and paired sampler comparison."""

from __future__ import annotations

import os

import numpy as np
import torch
from tqdm.auto import tqdm

from parapolicy.metrics import latency_summary, paired_difference
from parapolicy.runner import RunResult, run_batch


def _batches(seeds, n_envs):
    size = len(seeds) if not n_envs else int(n_envs)
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def _merge(runs: list) -> RunResult:
    merged = RunResult(episodes=[])
    for r in runs:
        merged.episodes += r.episodes
        merged.chunk_latency_ms += r.chunk_latency_ms
        merged.step_latency_ms += r.step_latency_ms
        merged.nfe += r.nfe
        merged.rounds += r.rounds
        merged.wall_s += r.wall_s
        merged.interrupted = merged.interrupted or r.interrupted
    return merged


def _episode_fields(run: RunResult) -> dict:
    return {
        "rewards_by_seed": {str(e.seed): e.max_reward for e in run.episodes},
        "success_by_seed": {str(e.seed): e.success for e in run.episodes},
        "steps_by_seed": {str(e.seed): e.steps for e in run.episodes},
        "errors": {str(e.seed): e.error for e in run.episodes if e.error is not None},
    }


def _run_all(policy, make_env, seeds, cfg) -> RunResult:
    """Every seed, batch after batch, with one noise generator across the run (as run_episodes)."""
    generator = torch.Generator().manual_seed(int(cfg.noise_seed))
    return _merge([run_batch(policy, make_env, batch, generator=generator, obs_key=cfg.env.obs_key, vector=cfg.vector)
                   for batch in _batches(seeds, cfg.n_envs)])


def run_episodes(policy, make_env, seeds, cfg, output_dir, logger) -> dict:
    """All seeds in batches of ``cfg.n_envs``, one noise generator across the run."""
    generator = torch.Generator().manual_seed(int(cfg.noise_seed))
    runs = []
    bar = tqdm(total=len(seeds), desc="episodes", disable=not cfg.progress, dynamic_ncols=True)
    for batch in _batches(seeds, cfg.n_envs):
        done_before = bar.n

        def progress(_chunks, n_done, _n, base=done_before):
            bar.update(base + n_done - bar.n)

        run = run_batch(policy, make_env, batch, generator=generator, obs_key=cfg.env.obs_key, on_chunk=progress,
                        vector=cfg.vector)
        bar.update(done_before + len(batch) - bar.n)
        runs.append(run)
        if run.interrupted:
            break
    bar.close()
    merged = _merge(runs)
    if int(cfg.video_episodes) > 0:
        _record_videos(policy, make_env, seeds[: int(cfg.video_episodes)], cfg, output_dir, logger)
    out = merged.summary()
    out.update(_episode_fields(merged))
    if logger is not None:
        logger.histogram("rollout/latency_chunk_ms", merged.chunk_latency_ms or [0.0])
    return out


def run_paired(policy, make_env, seeds, cfg, first, second) -> dict:
    """Same seeds and noise under two samplers: score difference and action deviation.

    Exactness is measured on identical inputs: for every chunk of the first sampler's
    closed-loop run, the second sampler sees the same observations and the same generator
    state, and the max |action difference| is recorded.
    """
    runs = {}
    for label, (name, settings) in (("a", first), ("b", second)):
        policy.set_sampler(name, **settings)
        runs[label] = _run_all(policy, make_env, seeds, cfg)
    deviation = _open_loop_deviation(policy, make_env, seeds, cfg, first, second)
    policy.set_sampler(first[0], **first[1])
    a, b = runs["a"], runs["b"]
    rewards_a = [e.max_reward for e in a.episodes]
    rewards_b = [e.max_reward for e in b.episodes]
    out = a.summary()
    out.update(_episode_fields(a))
    out["paired"] = {
        "sampler_a": {"name": first[0], **first[1]},
        "sampler_b": {"name": second[0], **second[1]},
        "mean_score_a": float(np.mean(rewards_a)),
        "mean_score_b": float(np.mean(rewards_b)),
        "score_difference_b_minus_a": paired_difference(rewards_a, rewards_b),
        "max_action_deviation": deviation,
        "latency_chunk_ms_a": latency_summary(a.chunk_latency_ms),
        "latency_chunk_ms_b": latency_summary(b.chunk_latency_ms),
        "rewards_by_seed_b": {str(e.seed): e.max_reward for e in b.episodes},
        "rounds_per_chunk_b": float(np.mean(b.rounds)) if b.rounds else 0.0,
    }
    return out


class DeviationRecorder:
    """Wraps a policy: records (obs, generator state) per call, replays them on another sampler."""

    def __init__(self, policy, first, second):
        self.policy, self.first, self.second = policy, first, second
        self.max_dev = 0.0

    def predict_action(self, obs, generator=None):
        state = generator.get_state() if generator is not None else None
        self.policy.set_sampler(self.first[0], **self.first[1])
        out = self.policy.predict_action(obs, generator=generator)
        if state is not None:
            replay = torch.Generator().manual_seed(0)
            replay.set_state(state)
            self.policy.set_sampler(self.second[0], **self.second[1])
            other = self.policy.predict_action(obs, generator=replay)
            self.max_dev = max(self.max_dev, float((other["action_pred"] - out["action_pred"]).abs().max()))
        return out


def _open_loop_deviation(policy, make_env, seeds, cfg, first, second) -> float:
    rec = DeviationRecorder(policy, first, second)
    _run_all(rec, make_env, seeds, cfg)
    return rec.max_dev


def _record_videos(policy, make_env, seeds, cfg, output_dir, logger) -> None:
    """Re-run the first episodes one by one and save mp4s of ``env.render()`` frames."""
    import imageio.v2 as imageio

    for seed in seeds:
        frames = []

        def make_recording_env(frames=frames):
            env = make_env()
            original_step = env.env.step

            def step(action):
                result = original_step(action)
                frames.append(env.env.render())
                return result

            env.env.step = step
            return env

        run_batch(policy, make_recording_env, [seed], generator=torch.Generator().manual_seed(int(cfg.noise_seed)),
                  obs_key=cfg.env.obs_key)
        if frames:
            path = os.path.join(output_dir, f"episode_{seed}.mp4")
            imageio.mimsave(path, [np.asarray(f) for f in frames if f is not None], fps=10)
            if logger is not None:
                logger.video(f"rollout/video_{seed}", path)
