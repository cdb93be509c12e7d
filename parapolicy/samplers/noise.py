"""Pre-drawing every random tensor a denoising run consumes, in upstream's order.

Upstream DiffusionPolicy draws ``randn(shape)`` for x_T, then the scheduler draws one
``randn(shape)`` inside each stochastic ``step`` (DDPM: every t > 0). Drawing the same
shapes in the same order from the same generator gives the same numbers, so a sampler
that consumes these tensors reproduces upstream, and two samplers fed the same draws
target the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.samplers.step_rule import StepRule, make_step_rule


@dataclass(frozen=True)
class NoiseDraws:
    x_T: torch.Tensor  # (B, *S) initial noise
    noises: torch.Tensor | None  # (N, B, *S); rows of steps that draw nothing are zero. None: no step draws


def _randn(shape, generator, device, dtype):
    # Draw on the generator's own device, like diffusers' randn_tensor; the caller moves it.
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype)


def draw_noises(rule, shape, generator=None, device="cpu", dtype=torch.float32) -> NoiseDraws:
    """Draw x_T and then one tensor per noise-consuming step, exactly as upstream does.

    ``rule`` is a ``StepRule`` (or a configured scheduler, read with eta = 0): DDIM's eta
    lives in the rule, so the draws always match what that rule consumes.
    """
    rule: StepRule = make_step_rule(rule)
    shape = tuple(shape)
    x_T = _randn(shape, generator, device, dtype)
    if not any(rule.draws_noise):
        return NoiseDraws(x_T.to(device), None)
    noise_dtype = rule.noise_dtype or dtype
    rows = [
        _randn(shape, generator, device, noise_dtype) if draws else torch.zeros(shape, dtype=noise_dtype,
                                                                               device=x_T.device)
        for draws in rule.draws_noise
    ]
    # one host-to-device copy for all steps (a GPU policy pays ~10 us per copy otherwise)
    return NoiseDraws(x_T.to(device), torch.stack(rows).to(device))
