"""Paired comparison of two samplers: same seeds, same noise, score difference and deviation.

The two sides are two ``Policy`` objects sharing one network (``Policy.with_inference``), so
the compare side may also run another inference schedule (e.g. DDIM-16 against DDPM-100).
"""

from __future__ import annotations

import torch

from parapolicy.eval.episodes import EpisodeResult, RunResult, run_episodes
from parapolicy.metrics import paired_difference

COMPARE_SCHEDULE_KEYS = ("scheduler", "num_inference_steps")  # compare_sampler keys that pick its schedule
DEVIATION_UNIT = "env action units (max |action_b - action_a| over chunks, batch rows and entries)"


def compare_policy(policy, name: str, settings: dict, scheduler=None, num_inference_steps=None):
    """The compare side: the same network and normalizer, its own sampler and inference schedule."""
    return policy.with_inference(scheduler, num_inference_steps).set_sampler(name, **settings)


class DeviationRecorder:
    """Plans with policy ``a``, then replays the same observation and generator state on ``b``
    and keeps the max |action difference|; ``on_check()`` is called once per chunk."""

    def __init__(self, a, b, on_check=None):
        self.a, self.b, self.on_check = a, b, on_check
        self.spec = a.spec
        self.max_dev = 0.0

    def predict_action(self, obs, generator=None):
        state = generator.get_state() if generator is not None else None
        out = self.a.predict_action(obs, generator=generator)
        if state is not None:
            replay = torch.Generator().manual_seed(0)
            replay.set_state(state)
            other = self.b.predict_action(obs, generator=replay)
            self.max_dev = max(self.max_dev, float((other["action_pred"] - out["action_pred"]).abs().max()))
        if self.on_check is not None:
            self.on_check()
        return out


def run_paired(a, b, make_env, seeds, progress=None, **episode_kwargs):
    """Policies ``a`` and ``b`` closed-loop on the same seeds and noise, then the open-loop deviation.

    Returns ``(run_a, paired)``: a's RunResult and the ``paired`` block of results.json, whose
    ``b`` entry has the same fields as the run's own (counts, score, latency, rounds, ...).
    Exactness is measured on identical inputs: for every chunk of a's closed-loop run, b sees
    the same observations and generator state. After Ctrl-C the remaining passes are skipped
    and ``paired["interrupted"]`` is set. ``progress`` (``eval.progress.Progress``) shows a bar
    per pass: control steps of both closed-loop passes, then chunks of the deviation check.
    """
    runs = {}
    for index, (label, policy) in enumerate((("a", a), ("b", b))):
        bar = progress.episodes(f"pass {index + 1}/3 {policy.sampler.name}", len(seeds)) if progress else None
        runs[label] = run_episodes(policy, make_env, seeds, on_chunk=bar, **episode_kwargs)
        if runs[label].interrupted:
            break
    run_a = runs["a"]
    run_b = runs.get("b") or RunResult(episodes=[EpisodeResult(seed=int(s)) for s in seeds], interrupted=True)
    deviation, interrupted = None, run_a.interrupted or run_b.interrupted
    if not interrupted:
        bar = progress.chunks("pass 3/3 deviation check", len(run_a.chunks)) if progress else None
        recorder = DeviationRecorder(a, b, on_check=bar)
        check = run_episodes(recorder, make_env, seeds, **episode_kwargs)
        deviation, interrupted = recorder.max_dev, check.interrupted
    both = [(ea.max_reward, eb.max_reward) for ea, eb in zip(run_a.episodes, run_b.episodes)
            if ea.status == "completed" and eb.status == "completed"]
    paired = {
        "sampler_a": a.sampler.config(),
        "inference_a": a.inference,
        "sampler_b": b.sampler.config(),
        "inference_b": b.inference,
        "b": run_b.to_json(),
        "score_difference_b_minus_a": paired_difference([x for x, _ in both], [y for _, y in both]),
        "max_action_deviation": deviation,
        "deviation_unit": DEVIATION_UNIT,
        "interrupted": interrupted,
    }
    return run_a, paired
