"""What every sampler shares: the result type, inpainting, and input checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.step_rules import StepRule


@dataclass
class SampleResult:
    sample: torch.Tensor
    stats: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)  # sampler-specific tensors (Picard: per-step outputs)


def impose(x: torch.Tensor, cond_data: torch.Tensor | None, cond_mask: torch.Tensor | None) -> torch.Tensor:
    """Overwrite the inpainted entries, as upstream does before every call and at the end.

    ``x`` may carry extra leading (window) dims; the condition broadcasts over them.
    """
    if cond_mask is None:
        return x
    return torch.where(cond_mask, cond_data, x)


def check_inputs(rule: StepRule, x_T: torch.Tensor, noises: torch.Tensor | None) -> None:
    """Catch shape mismatches between the noise draws and the schedule before any work."""
    needs_noise = any(rule.draws_noise)
    if needs_noise and noises is None:
        raise SamplerConfigError("this scheduler draws noise at each step: pass the `noises` from draw_noises()")
    if noises is not None and needs_noise:
        expected = (rule.num_steps, *x_T.shape)
        if tuple(noises.shape) != expected:
            raise SamplerConfigError(f"noises has shape {tuple(noises.shape)}, expected {expected} (steps, *x_T.shape)")


def timestep_rows(rule: StepRule, start: int, count: int, batch: int, device) -> torch.Tensor:
    """Timesteps for ``count`` window slots of ``batch`` rows each, window-major."""
    return rule.timesteps[start : start + count].to(device).repeat_interleave(batch)


def convergence_weights(rule: StepRule, state_shape, length: int, device) -> torch.Tensor:
    """1 / (noise variance x state size) per trajectory state, zero-padded to ``length``.

    State j is judged against the noise variance of step j-1, which produced it; the final
    state never blocks (it is exact once its predecessors are) and state 0 is never judged.
    """
    n_steps = rule.num_steps
    weights = torch.zeros(length, device=device, dtype=torch.float32)
    weights[1:n_steps] = 1.0 / (rule.error_variance[: n_steps - 1].to(device) * max(1, math.prod(state_shape)))
    return weights
