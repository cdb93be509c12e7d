"""Paired comparison of two samplers: same seeds, same noise, score difference and deviation."""

from __future__ import annotations

import numpy as np
import torch

from parapolicy.eval.episodes import EpisodeResult, RunResult, run_episodes
from parapolicy.metrics import latency_summary, paired_difference


class DeviationRecorder:
    """Wraps a policy: each call runs the first sampler, then replays the same observation and
    generator state on the second, and keeps the max |action difference|."""

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


def run_paired(policy, make_env, seeds, first, second, **episode_kwargs):
    """Both samplers closed-loop on the same seeds and noise, plus the open-loop deviation.

    Returns ``(run_a, paired)``: the first sampler's RunResult and the ``paired`` block of
    results.json. Exactness is measured on identical inputs: for every chunk of the first
    sampler's closed-loop run, the second sees the same observations and generator state.
    After Ctrl-C the remaining passes are skipped and ``paired["interrupted"]`` is set.
    """
    runs = {}
    for label, (name, settings) in (("a", first), ("b", second)):
        policy.set_sampler(name, **settings)
        runs[label] = run_episodes(policy, make_env, seeds, **episode_kwargs)
        if runs[label].interrupted:
            break
    a = runs["a"]
    b = runs.get("b") or RunResult(episodes=[EpisodeResult(seed=int(s)) for s in seeds], interrupted=True)
    deviation, interrupted = None, a.interrupted or b.interrupted
    if not interrupted:
        recorder = DeviationRecorder(policy, first, second)
        check = run_episodes(recorder, make_env, seeds, **{k: v for k, v in episode_kwargs.items() if k != "on_chunk"})
        deviation, interrupted = recorder.max_dev, check.interrupted
    policy.set_sampler(first[0], **first[1])
    both = [(ea.max_reward, eb.max_reward) for ea, eb in zip(a.episodes, b.episodes)
            if ea.status == "completed" and eb.status == "completed"]
    paired = {
        "sampler_a": {"name": first[0], **first[1]},
        "sampler_b": {"name": second[0], **second[1]},
        "mean_score_a": a.mean_score,
        "mean_score_b": b.mean_score,
        "score_difference_b_minus_a": paired_difference([x for x, _ in both], [y for _, y in both]),
        "max_action_deviation": deviation,
        "latency_chunk_ms_a": latency_summary(a.chunk_latency_ms),
        "latency_chunk_ms_b": latency_summary(b.chunk_latency_ms),
        "rounds_per_chunk_b": float(np.mean(b.rounds)) if b.rounds else None,
        "nfe_per_chunk_b": float(np.mean(b.nfe)) if b.nfe else None,
        "rewards_by_seed_b": {str(e.seed): e.max_reward for e in b.episodes if e.status == "completed"},
        "n_completed_b": sum(e.status == "completed" for e in b.episodes),
        "n_failed_b": sum(e.status == "failed" for e in b.episodes),
        "interrupted": interrupted,
    }
    return a, paired
