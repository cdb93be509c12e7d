"""Parallel randomized-midpoint sampling of the probability-flow ODE (Gupta, Cai, Chen,
"Faster Diffusion Sampling with Randomized Midpoints: Sequential and Parallel",
ICLR 2025, arXiv 2406.00924).

In the DDIM variables y = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar)
the ODE is dy/dsigma = eps(y, sigma). The time axis is PIADM's grid
(``continuous_time.grid_levels``: geometric in OU time, ``blocks x points`` intervals).
Inside interval j the integral of eps is estimated without bias by its value at ONE
uniformly random node sigma_j + u_j (sigma_{j+1} - sigma_j). The paper's parallel scheme
estimates all node states of a block at once and refines them in ``iterations`` Picard
rounds, each ONE batched network call over the block's start and its nodes:

    y_end    = y_0 + sum_j (sigma_{j+1} - sigma_j) eps_j          (eps_j at node j)
    node_r  <- y_0 + sum_{j<r} (sigma_{j+1} - sigma_j) eps_j + (node sigma_r - sigma_r) eps_{r-1}

with the slopes from the previous round's node states (round 1: every node at the block's
start; eps_{-1} is the block start's slope), moved in the state x as differences of DDIM
flows (``continuous_time.integrator_flow``), which also clip the clean-sample estimate
where the scheduler clips it. ``points + 1`` rounds give the sequential answer of this
scheme; rounds per sample = blocks x min(iterations, points + 1). The final interval, to
clean data, is evaluated at its start (the network knows no lower noise level). The
offsets u are drawn from the caller's generator after x_T (``extra_draws``); without them
every u is 1/2 (the plain midpoint rule). The paper's Langevin corrector steps are not
run: a DiffusionPolicy is judged by its actions, and the predictor alone is the ODE solver.

Kernel: ``midpoint_round`` (below); driver: ``solve_windowed`` with ``FixedSweepsAcceptance``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.acceptance import FixedSweepsAcceptance
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.continuous_time import (
    GridRule,
    broadcast_levels,
    clip_limit,
    epsilon_from_output,
    grid_rule,
    integrator_flow,
    timestep_at_sigma,
)
from parapolicy.samplers.driver import solve_windowed
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.kernels import RoundOutcome, RoundUpdate, write_states
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, check_bounded_int, check_grid_budget


def node_levels(grid: GridRule, offsets: torch.Tensor):
    """alpha_bar (float64) and network timestep (float32) of each interval's random node, (steps, B)."""
    sigma = ((1 - grid.levels) / grid.levels).sqrt()
    u = offsets.double().cpu().clone()
    u[-1] = 0.0  # the step to clean data is evaluated at its start
    node_sigma = sigma[:-1, None] + u * (sigma[1:] - sigma[:-1])[:, None]
    return 1.0 / (1.0 + node_sigma**2), timestep_at_sigma(grid.alphas_cumprod, node_sigma).float()


@dataclass
class MidpointBuffers:
    """The midpoint rounds' own state: each interval's node state ``nodes`` (rows, B, *S), its
    level ``node_level`` (rows, B) float64 and network timestep ``node_t`` (rows, B), and the
    grid's levels ``level`` (rows + 1,) float64 (padding rows keep harmless ones and zeros)."""

    nodes: torch.Tensor
    node_level: torch.Tensor
    node_t: torch.Tensor
    level: torch.Tensor


class MidpointUpdate(RoundUpdate):
    """The per-call node levels and the static schedule facts ``midpoint_round`` needs."""

    key = "midpoint"
    extra_points = 1  # a round also evaluates the block's start: one more point, one more round to solve a block

    def __init__(self, grid: GridRule, node_level: torch.Tensor, node_t: torch.Tensor):
        self.levels, self.node_level, self.node_t = grid.levels, node_level, node_t
        self.prediction_type = getattr(grid.config, "prediction_type", "epsilon")
        self.clip = clip_limit(grid)

    def buffers(self, rows: int, x_T: torch.Tensor) -> MidpointBuffers:
        device, batch = x_T.device, x_T.shape[0]
        return MidpointBuffers(nodes=x_T.new_zeros((rows, *x_T.shape)),
                               node_level=torch.ones((rows, batch), dtype=torch.float64, device=device),
                               node_t=torch.zeros((rows, batch), dtype=torch.float32, device=device),
                               level=torch.ones(rows + 1, dtype=torch.float64, device=device))

    def reset(self, extras: MidpointBuffers) -> None:
        n = self.node_level.shape[0]
        extras.node_level[:n].copy_(self.node_level)
        extras.node_t[:n].copy_(self.node_t)
        extras.level[: n + 1].copy_(self.levels)

    def epsilon(self, output, x, level):
        if self.prediction_type == "epsilon":
            return output
        return epsilon_from_output(output, x, broadcast_levels(level, x), self.prediction_type)


def midpoint_round(buf, denoise, step, batch: int, n_steps: int, update: MidpointUpdate) -> RoundOutcome:
    """One parallel round over the block at ``buf.start``: evaluate its start and nodes in
    ONE call, rebuild the interval ends (``traj``) and the nodes."""
    own, inputs = buf.extras, buf.inputs
    traj, start = buf.traj, buf.start.view(1)
    index = buf.start + buf.slots
    x0 = traj.index_select(0, start)
    nodes = torch.where(buf.sweep == 0, x0, own.nodes.index_select(0, index))  # round 1: all at the start
    points = impose(torch.cat([x0, nodes]), inputs.cond_data, inputs.cond_mask)
    level = own.level
    point_level = torch.cat([level.index_select(0, start).view(1, 1).expand(1, batch),
                             own.node_level.index_select(0, index)])
    point_t = torch.cat([inputs.timesteps.index_select(0, start).view(1, 1).expand(1, batch),
                         own.node_t.index_select(0, index)])
    output = denoise(points.reshape(-1, *points.shape[2:]), point_t.reshape(-1)).reshape(points.shape)
    eps = update.epsilon(output, points, point_level)
    level_a, level_b = level.index_select(0, index), level.index_select(0, index + 1)
    ends = x0 + torch.cumsum(integrator_flow(points[1:], point_level[1:], level_a, level_b, eps[1:], update.clip), 0)
    starts = torch.cat([x0, ends[:-1]])
    new_nodes = starts + integrator_flow(points[:-1], point_level[:-1], level_a, point_level[1:], eps[:-1],
                                         update.clip)
    own.nodes.index_copy_(0, index, new_nodes)
    worst, finite = write_states(buf, index, ends, traj.index_select(0, index + 1), n_steps)
    buf.eps.index_copy_(0, index, output[1:])
    return RoundOutcome(index, worst, finite)


@dataclass(frozen=True)
class RandomizedMidpoint(SamplerBase):
    """Settings: outer blocks, random-node intervals per block, Picard rounds per block."""

    blocks: int = 5  # defaults: the fewest rounds whose PushT score stayed within sequential's CI
    points: int = 1
    iterations: int = 2
    name = "randomized_midpoint"
    capturable = True

    def __post_init__(self):
        for field_name in ("blocks", "points", "iterations"):
            check_bounded_int(self.name, field_name, getattr(self, field_name))
        extra = MidpointUpdate.extra_points
        check_grid_budget(self.name, self.blocks, self.points, min(self.iterations, self.points + extra),
                          self.points + extra)

    @property
    def steps(self) -> int:
        return self.blocks * self.points

    def extra_draws(self, x_T: torch.Tensor, generator) -> dict:
        """The random node offsets, drawn after x_T (and the noises) from the same generator."""
        gen_device = generator.device if generator is not None else x_T.device
        return {"offsets": torch.rand((self.steps, x_T.shape[0]), generator=generator, device=gen_device).cpu()}

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        batch = problem.batch
        offsets = problem.extra.get("offsets")
        if offsets is None:
            offsets = torch.full((self.steps, batch), 0.5)
        if tuple(offsets.shape) != (self.steps, batch) or not bool(((offsets >= 0) & (offsets <= 1)).all()):
            raise SamplerConfigError(f"randomized_midpoint offsets must be ({self.steps}, {batch}) values in [0, 1], "
                                     f"got shape {tuple(offsets.shape)}")
        grid = grid_rule(problem.rule, self.steps, sde=False)
        node_level, node_t = node_levels(grid, offsets)
        device = problem.x_T.device
        update = MidpointUpdate(grid, node_level.to(device), node_t.to(device))
        on_grid = problem.replace(rule=grid, noises=None, init_guess=None)
        settings = {"blocks": self.blocks, "points": self.points, "iterations": self.iterations}
        return solve_windowed(on_grid, update, FixedSweepsAcceptance(self.iterations), name=self.name,
                              window=self.points, settings=settings, kernel=midpoint_round)
