"""Parallel randomized-midpoint sampling of the probability-flow ODE (Gupta, Cai, Chen,
"Faster Diffusion Sampling with Randomized Midpoints: Sequential and Parallel",
ICLR 2025, arXiv 2406.00924).

In the DDIM variables of ``continuous_time`` the ODE is dy/dsigma = eps(y, sigma). Over an
interval [sigma_a, sigma_b] the integral of eps is estimated without bias by its value at
a uniformly random point sigma_m = sigma_a + u (sigma_b - sigma_a), whose state comes from
an Euler step from sigma_a:

    z   = y_a + (sigma_m - sigma_a) eps(y_a, sigma_a)
    y_b = y_a + (sigma_b - sigma_a) eps(z, sigma_m)

The ``steps`` intervals run from the scheduler's first timestep to sigma = 0 on a grid
uniform in t. Intervals are taken ``block_size`` at a time; inside a block every interval
start and every midpoint is evaluated in ONE batched network call per Picard round, and
``iterations`` Picard rounds refine the block (2 * block_size solve it exactly, so the answer
is then the sequential randomized-midpoint solution). The offsets u are inputs: the policy
draws them from the caller's generator after x_T (``extra_draws``); without them every
u is 1/2 (the plain midpoint rule). The paper's Langevin corrector steps are not run: a
DiffusionPolicy is judged by its actions, and the predictor alone is the ODE solver.
Each move is written as DDIM writes its step, sqrt(alpha_bar_b) * clean + sqrt(1 - alpha_bar_b)
* eps with clean = y_a - sigma_a * eps (the same ODE update), so that where the scheduler
clips its clean-sample prediction (``clip_sample``, DiffusionPolicy's default) the clean
estimate is clipped as DDIM clips it. At DiffusionPolicy's first timestep that estimate
divides the network's error by sqrt(alpha_bar) ~ 1/2000; unclipped, the first large
step leaves the data range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.continuous_time import alpha_bar_at, epsilon_from_output, sigma_at, timestep_at_sigma
from parapolicy.samplers.driver import fallback_to_chain
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, SampleStats, check_positive_int


@dataclass(frozen=True)
class MidpointGrid:
    """Per interval: start/end sigma and start t; per interval and sample: midpoint sigma and t."""

    sigma_start: torch.Tensor  # (N,) float64
    sigma_end: torch.Tensor  # (N,)
    t_start: torch.Tensor  # (N,)
    sigma_mid: torch.Tensor  # (N, B)
    t_mid: torch.Tensor  # (N, B)


def midpoint_grid(alphas_cumprod, first_t: float, steps: int, offsets: torch.Tensor) -> MidpointGrid:
    ac = alphas_cumprod.double().cpu()
    t_start = torch.linspace(float(first_t), 0.0, steps, dtype=torch.float64) if steps > 1 else torch.tensor(
        [float(first_t)], dtype=torch.float64
    )
    sigma_start = sigma_at(ac, t_start)
    sigma_end = torch.cat([sigma_start[1:], torch.zeros(1, dtype=torch.float64)])
    u = offsets.double().cpu()
    sigma_mid = sigma_start[:, None] + u * (sigma_end - sigma_start)[:, None]
    return MidpointGrid(sigma_start, sigma_end, t_start, sigma_mid, timestep_at_sigma(ac, sigma_mid))


def sample_randomized_midpoint(problem: DenoisingProblem, *, steps, block_size, iterations, offsets=None):
    """See the module docstring. ``offsets`` (steps, B) in [0, 1): the random midpoints."""
    rule, x_T, denoise_fn = problem.rule, problem.x_T, problem.denoise
    cond_data, cond_mask = problem.cond_data, problem.cond_mask
    config = rule.config
    batch, state_shape, device = x_T.shape[0], x_T.shape[1:], x_T.device
    if offsets is None:
        offsets = torch.full((steps, batch), 0.5)
    if tuple(offsets.shape) != (steps, batch) or not bool(((offsets >= 0) & (offsets <= 1)).all()):
        raise SamplerConfigError(f"offsets must be ({steps}, {batch}) values in [0, 1], got shape {tuple(offsets.shape)}")
    grid = midpoint_grid(rule.alphas_cumprod, float(rule.timesteps[0]), steps, offsets)
    expand = (1,) * len(state_shape)
    clip_limit = float(getattr(config, "clip_sample_range", 1.0)) if getattr(config, "clip_sample", False) else None

    def scale(sigma):
        """sqrt(alpha_bar) = 1 / sqrt(1 + sigma^2), shaped to broadcast over states."""
        return (1.0 / (1.0 + sigma**2)).sqrt().to(device).view(*sigma.shape, *expand)

    def evaluate(x, sigma, t):
        """eps at states x (M, B, *S), float64, of noise levels sigma and timesteps t (both (M, B))."""
        x = impose(x, None if cond_data is None else cond_data.double(), cond_mask)
        rows = sigma.shape[0] * batch
        out = denoise_fn(x.to(x_T.dtype).reshape(rows, *state_shape),
                         t.reshape(rows).to(device=device, dtype=torch.float32))
        if config.prediction_type != "epsilon":  # convert at the noise level the network was told (t)
            told = alpha_bar_at(rule.alphas_cumprod, t.reshape(-1)).to(device).view(*sigma.shape, *expand)
            out = epsilon_from_output(out.reshape(x.shape).double(), x, told, config.prediction_type)
        eps = out.reshape(x.shape).double()
        return x, eps  # the (inpainted) states and their epsilon

    def move(x, sigma_from, sigma_to, eps):
        """x at sigma_from -> sigma_to with slope eps: y + (sigma_to - sigma_from) eps, written as DDIM
        writes it (clean estimate and noise direction), so the clean estimate can be clipped."""
        clean = x / scale(sigma_from) - sigma_from.to(device).view(*sigma_from.shape, *expand) * eps
        if clip_limit is not None:
            clean = clean.clamp(-clip_limit, clip_limit)
        return scale(sigma_to) * clean + (scale(sigma_to) * sigma_to.to(device).view(*sigma_to.shape, *expand)) * eps

    # Picard runs on x, not y: the one-step maps x_a -> x_b are close to the identity, so
    # the summed-increment iteration converges in far fewer rounds than on y (whose scale
    # shrinks by sigma_max over the trajectory).
    x = x_T.double()
    calls, nfe = 0, 0
    for first in range(0, steps, block_size):
        idx = torch.arange(first, min(first + block_size, steps))
        count = len(idx)
        sa = grid.sigma_start[idx][:, None].expand(count, batch)
        sb = grid.sigma_end[idx][:, None].expand(count, batch)
        sm = grid.sigma_mid[idx]
        t_start = grid.t_start[idx][:, None].expand(count, batch)
        starts = x[None].repeat(count, *([1] * x.dim()))  # guess: every state where the block starts
        mids = starts.clone()
        for _ in range(min(iterations, 2 * count)):  # 2 * count rounds solve the block exactly
            states, eps = evaluate(torch.cat([starts, mids]), torch.cat([sa, sm]), torch.cat([t_start, grid.t_mid[idx]]))
            calls, nfe = calls + 1, nfe + 2 * count
            if problem.callback is not None:
                problem.callback({"round": calls, "start": first, "accepted": 0})
            ends = states[0] + torch.cumsum(move(states[:count], sa, sb, eps[count:]) - states[:count], dim=0)
            starts = torch.cat([states[:1], ends[:-1]])
            mids = move(starts, sa, sm, eps[:count])
        x = ends[-1]
    sample = impose(x.to(x_T.dtype), cond_data, cond_mask)
    settings = {"steps": steps, "block_size": block_size, "iterations": iterations}
    if not bool(torch.isfinite(sample).all()):
        return fallback_to_chain(problem, "randomized_midpoint", calls, nfe, settings)
    return SampleResult(sample, SampleStats("randomized_midpoint", rounds=calls, nfe=nfe, settings=settings))


@dataclass(frozen=True)
class RandomizedMidpoint(SamplerBase):
    """Settings: ODE intervals, intervals per parallel block, Picard iterations per block."""

    steps: int = 16
    block_size: int = 4
    iterations: int = 6  # of the 8 that solve a 4-interval block exactly
    name = "randomized_midpoint"

    def __post_init__(self):
        for field_name in ("steps", "block_size", "iterations"):
            check_positive_int(self.name, field_name, getattr(self, field_name))

    def extra_draws(self, x_T: torch.Tensor, generator) -> dict:
        """The random midpoint offsets, drawn after x_T (and the noises) from the same generator."""
        gen_device = generator.device if generator is not None else x_T.device
        return {"offsets": torch.rand((self.steps, x_T.shape[0]), generator=generator, device=gen_device).cpu()}

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        return sample_randomized_midpoint(problem, steps=self.steps, block_size=self.block_size,
                                          iterations=self.iterations, offsets=problem.extra.get("offsets"))
