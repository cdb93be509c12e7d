"""A sampler's closed loop on a batch of seeded episodes, with its deviation from sequential.

Shared by the PushT and Lift sampler tables: the sampler drives every env at once; the
deviation side replays each chunk's draws through the same network under the sequential
sampler, so ``max_action_deviation`` is the parallel sampler's error, not the policy's noise.
"""

from __future__ import annotations

import torch

from parapolicy.eval.compare import DeviationRecorder, compare_policy
from parapolicy.eval.episodes import run_batch


def closed_loop(policy, make_env, seeds, name, settings, tap=None, deviation=True):
    """Scores, successes and the run's JSON; ``tap`` (an observation-keeping wrapper) drives if given."""
    policy.set_sampler(name, **settings)
    # the deviation side: the same network under the sequential sampler, replaying each chunk's draws
    recorder = DeviationRecorder(policy, compare_policy(policy, "sequential", {})) if deviation else policy
    driver = tap if tap is not None else recorder
    if tap is not None:
        tap.policy = recorder
    run = run_batch(driver, make_env, seeds, generator=torch.Generator().manual_seed(0), obs_key="obs")
    out = run.to_json()
    out["max_action_deviation"] = recorder.max_dev if deviation else None
    out["scores"] = [float(e.max_reward) for e in run.episodes]
    out["successes"] = [bool(e.success) for e in run.episodes]
    return out
