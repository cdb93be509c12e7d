"""PIADM: parallel Picard sampling in continuous time (Chen, Ren, Ying, Rotskoff, "Accelerating
Diffusion Models with Parallel Sampling: Inference at Sub-Linear Time Complexity", NeurIPS
2024, arXiv 2405.15986).

The trained noise schedule is read as a continuous VP process (``continuous_time``): a
grid of ``blocks x points`` steps, geometric in OU time so that the steps shrink towards
the data end, which stops early at the least noise the network was trained at (then one
trained step to clean data). Each step is the exponential integrator with the network's
epsilon frozen over it (``continuous_time.grid_rule``). The grid is cut into ``blocks``
blocks of ``points`` steps, solved in order; ``iterations`` Picard sweeps refine all of a
block's steps at once, each sweep ONE batched network call (Picard's integral form: the
block's start plus the summed increments of every step taken from the previous sweep's
states). Rounds per sample = blocks x min(iterations, points).

``mode="sde"`` integrates the reverse VP-SDE (DDPM posterior moves between grid levels,
with Brownian draws taken from the caller's generator after x_T, the same draws in every
sweep); ``mode="ode"`` the probability-flow ODE (DDIM moves). ``iterations >= points``
solves every block exactly: the answer is then the sequential exponential integrator on
the grid; fewer sweeps leave a Picard error that shrinks with each sweep.

Kernel: ``kernels.window_round`` with ``PicardUpdate`` on the grid rule; driver:
``solve_windowed`` with ``FixedSweepsAcceptance`` (window = block, sweeps = iterations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.acceptance import FixedSweepsAcceptance
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.continuous_time import grid_rule
from parapolicy.samplers.driver import solve_windowed
from parapolicy.samplers.kernels import PicardUpdate
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, check_bounded_int, check_grid_budget


@dataclass(frozen=True)
class PIADM(SamplerBase):
    """Settings: outer blocks, grid steps per block, Picard sweeps per block, SDE or ODE."""

    blocks: int = 5  # defaults: the fewest rounds whose PushT score stayed within sequential's CI
    points: int = 2
    iterations: int = 2
    mode: str = "sde"
    name = "piadm"
    capturable = True

    def __post_init__(self):
        for field_name in ("blocks", "points", "iterations"):
            check_bounded_int(self.name, field_name, getattr(self, field_name))
        check_grid_budget(self.name, self.blocks, self.points, min(self.iterations, self.points), self.points)
        if not isinstance(self.mode, str) or self.mode not in ("sde", "ode"):
            raise SamplerConfigError(f"piadm mode must be 'sde' or 'ode', got {self.mode!r}")

    @property
    def steps(self) -> int:
        return self.blocks * self.points

    def extra_draws(self, x_T: torch.Tensor, generator) -> dict:
        """The SDE's Brownian draws, one standard normal per grid step, drawn after x_T."""
        if self.mode == "ode":
            return {}
        gen_device = generator.device if generator is not None else x_T.device
        draws = torch.randn((self.steps, *x_T.shape), generator=generator, device=gen_device, dtype=x_T.dtype)
        return {"brownian": draws.to(x_T.device)}

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        """The problem on the continuous grid (its own rule and draws; the scheduler's per-step
        noises belong to another grid and are not used)."""
        grid = grid_rule(problem.rule, self.steps, sde=self.mode == "sde")
        noises = None
        if self.mode == "sde":
            noises = problem.extra.get("brownian")
            expected = (self.steps, *problem.x_T.shape)
            if noises is None or tuple(noises.shape) != expected:
                found = None if noises is None else tuple(noises.shape)
                raise SamplerConfigError(f"piadm sde needs its Brownian draws of shape {expected} (extra_draws), "
                                         f"got {found}")
        on_grid = problem.replace(rule=grid, noises=noises, init_guess=None)
        settings = {"blocks": self.blocks, "points": self.points, "iterations": self.iterations, "mode": self.mode}
        return solve_windowed(on_grid, PicardUpdate(), FixedSweepsAcceptance(self.iterations), name=self.name,
                              window=self.points, settings=settings)
