"""PIADM block-Picard sampling (Chen et al., NeurIPS 2024, "Accelerating Diffusion Models
with Parallel Sampling: Inference at Sub-Linear Time Complexity", arXiv 2405.15986).

The denoising grid is split into consecutive blocks processed in order. Inside a block,
a fixed number of Picard iterations refines every grid point of the block at once (one
batched network call per iteration); the block's last state then starts the next block.
``mode="sde"`` runs the stochastic reverse process with the pre-drawn per-step noises
(the DDPM posterior); ``mode="ode"`` runs the probability-flow ODE (DDIM with eta = 0 on
the same grid). With ``iterations >= grid points per block`` every block is solved
exactly, so the result is the sequential sampler's on that grid.

Kernel: ``kernels.window_round`` with ``PicardUpdate``; driver: ``solve_windowed`` in
fixed-sweeps mode (window = block, sweeps = iterations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError, UnsupportedSchedulerError
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.driver import solve_windowed
from parapolicy.samplers.kernels import PicardUpdate
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, check_positive_int
from parapolicy.samplers.step_rule import StepRule, make_step_rule


def ode_rule(rule: StepRule) -> StepRule:
    """The probability-flow ODE on the same grid: a DDIM rule with the same schedule config."""
    from diffusers import DDIMScheduler

    if rule.coefficients is not None and rule.coefficients.ddim and rule.eta == 0:
        return rule
    ddim = DDIMScheduler.from_config(rule.config, set_alpha_to_one=True, steps_offset=0)
    ddim.set_timesteps(rule.num_steps)
    if not torch.equal(torch.as_tensor(ddim.timesteps).long(), rule.timesteps):
        raise SamplerConfigError("the ODE grid differs from the scheduler's timesteps; use DDPM or DDIM timesteps")
    return make_step_rule(ddim)


@dataclass(frozen=True)
class PIADM(SamplerBase):
    """Settings: grid points per block, Picard iterations per block, SDE or ODE."""

    block_size: int = 10
    iterations: int = 3
    mode: str = "sde"
    name = "piadm"

    def __post_init__(self):
        check_positive_int(self.name, "block_size", self.block_size)
        check_positive_int(self.name, "iterations", self.iterations)
        if self.mode not in ("sde", "ode"):
            raise SamplerConfigError(f"piadm mode must be 'sde' or 'ode', got {self.mode!r}")

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        if problem.rule.history_length:
            raise UnsupportedSchedulerError(
                f"piadm refines one-step transitions (DDPM, DDIM); {problem.rule.scheduler_name} is a multistep "
                "solver: use the picard or newton_picard sampler with it")
        if self.mode == "ode":
            problem = problem.replace(rule=ode_rule(problem.rule), noises=None)
        settings = {"block_size": self.block_size, "iterations": self.iterations, "mode": self.mode}
        return solve_windowed(problem, PicardUpdate(), name=self.name, window=self.block_size,
                              sweeps=self.iterations, settings=settings)
