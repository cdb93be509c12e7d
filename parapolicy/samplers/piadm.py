"""PIADM block-Picard sampling (Chen et al., NeurIPS 2024, "Accelerating Diffusion Models
with Parallel Sampling: Inference at Sub-Linear Time Complexity", arXiv 2405.15986).

The denoising grid is split into consecutive blocks processed in order. Inside a block,
a fixed number of Picard iterations refines every grid point of the block at once (one
batched network call per iteration); the block's last state then starts the next block.
``mode="sde"`` runs the stochastic reverse process with the pre-drawn per-step noises
(the DDPM posterior, i.e. the VP-SDE's exact transition between grid points of
DiffusionPolicy's discrete schedule); ``mode="ode"`` runs the probability-flow ODE
(DDIM with eta = 0 on the same grid). With ``iterations >= grid points per block`` every
block is solved exactly, so the result is the sequential sampler's on that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import NonFiniteSampleError, SamplerConfigError, UnsupportedSchedulerError
from parapolicy.samplers.common import SampleResult, check_inputs, impose, timestep_rows
from parapolicy.samplers.step_rules import StepRule, make_step_rule


def ode_version(scheduler):
    """The probability-flow ODE on the same grid: a DDIM scheduler with the same config."""
    from diffusers import DDIMScheduler

    if type(scheduler).__name__ in ("DDIMScheduler", "DDIMParallelScheduler"):
        return scheduler
    ddim = DDIMScheduler.from_config(scheduler.config, set_alpha_to_one=True, steps_offset=0)
    ddim.set_timesteps(len(scheduler.timesteps))
    if not torch.equal(torch.as_tensor(ddim.timesteps), torch.as_tensor(scheduler.timesteps)):
        raise SamplerConfigError("the ODE grid differs from the scheduler's timesteps; use DDPM or DDIM timesteps")
    return ddim


def sample_piadm(denoise_fn, scheduler, x_T, noises=None, *, block_size, iterations, cond_data=None,
                 cond_mask=None):
    rule = make_step_rule(scheduler)
    if rule.history_length:
        raise UnsupportedSchedulerError(
            f"piadm refines one-step transitions (DDPM, DDIM); {type(rule._scheduler).__name__} is a multistep "
            "solver: use the picard or newton_picard sampler with it"
        )
    check_inputs(rule, x_T, noises)
    n_steps, batch, state_shape = rule.num_steps, x_T.shape[0], x_T.shape[1:]
    x, calls, nfe = x_T, 0, 0
    for start in range(0, n_steps, block_size):
        end = min(start + block_size, n_steps)
        count = end - start
        block = x.unsqueeze(0).repeat(count + 1, *([1] * x.dim()))  # states start..end, guessed = x
        for _ in range(min(iterations, count)):  # `count` sweeps already solve the block exactly
            states = impose(block[:-1], cond_data, cond_mask)
            t_rows = timestep_rows(rule, start, count, batch, x.device)
            eps = denoise_fn(states.reshape(count * batch, *state_shape), t_rows).reshape(states.shape)
            step_noise = noises[start:end] if noises is not None else None
            nxt, _ = rule.transition(start, states, eps, step_noise, ())
            block[1:] = block[0] + torch.cumsum(nxt - block[:-1], dim=0)
            calls, nfe = calls + 1, nfe + count
        x = block[-1]
    x = impose(x, cond_data, cond_mask)
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteSampleError("PIADM sampling produced NaN/inf")
    stats = {"sampler": "piadm", "nfe": nfe, "parallel_iters": calls, "network_calls": calls,
             "block_size": block_size, "iterations": iterations}
    return SampleResult(x, stats)


@dataclass(frozen=True)
class PIADM:
    """Settings: grid points per block, Picard iterations per block, SDE or ODE."""

    block_size: int = 10
    iterations: int = 3
    mode: str = "sde"
    name = "piadm"

    def __post_init__(self):
        for field_name in ("block_size", "iterations"):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SamplerConfigError(f"piadm {field_name} must be an integer >= 1, got {value!r}")
        if self.mode not in ("sde", "ode"):
            raise SamplerConfigError(f"piadm mode must be 'sde' or 'ode', got {self.mode!r}")

    def sample(self, denoise_fn, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, callback=None):
        if self.mode == "ode":
            base = scheduler._scheduler if isinstance(scheduler, StepRule) else scheduler
            scheduler, noises = ode_version(base), None
        return sample_piadm(denoise_fn, scheduler, x_T, noises, block_size=self.block_size,
                            iterations=self.iterations, cond_data=cond_data, cond_mask=cond_mask)

    def config(self) -> dict:
        return {"name": self.name, "block_size": self.block_size, "iterations": self.iterations, "mode": self.mode}

