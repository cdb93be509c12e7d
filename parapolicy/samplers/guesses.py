"""A caller's guess turned into the trajectory a guessing sampler starts from.

Callers guess in one of two forms: a clean sample shaped like x_T (the Controller's warm start:
the previous chunk moved by the executed ticks), or one network output per step, (N, B, *S).
Both become a full chain (N+1, B, *S) under this call's x_T and noises, so every sampler that
accepts a guess sees the same thing whichever form the caller had.
"""

from __future__ import annotations

import torch

from parapolicy.samplers.newton_prior import prior_trajectory


def guess_trajectory(rule, x_T: torch.Tensor, noises, guess: torch.Tensor, cond_data=None,
                     cond_mask=None) -> torch.Tensor:
    """The chain from ``guess``: a sample is the mean of a point-mass stand-in target (its exact
    denoiser, no network call); per-step outputs are stepped through the scheduler."""
    if guess.dim() == x_T.dim():
        return prior_trajectory(rule, x_T, noises, cond_data, cond_mask, std=0.0, mean=guess)
    return rule.trajectory_from_outputs(x_T, noises, guess, cond_data, cond_mask)
