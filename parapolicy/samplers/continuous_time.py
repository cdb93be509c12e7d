"""DiffusionPolicy's discrete noise schedule read as the continuous VP process it discretises.

The network was trained at integer timesteps t with noise level alpha_bar[t]. Solvers
that need noise levels between the grid points (randomized midpoints) use the log-SNR
lambda(t) = log(alpha_bar / (1 - alpha_bar)), linearly interpolated in t; at integer t
this is the trained schedule exactly. The probability-flow ODE is simplest in the DDIM
variables y = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar):

    dy / dsigma = eps(x, t(sigma)),

so an Euler step in sigma is exactly a DDIM step, and the ODE ends at sigma = 0 (x = y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parapolicy.samplers.step_rule import StepCoefficients, StepRule, _as_index, clip_range, posterior_variance


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ac = alphas_cumprod.double()
    return torch.log(ac) - torch.log1p(-ac)


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at continuous t in [0, T-1] (log-SNR interpolation), float64."""
    lam = log_snr(alphas_cumprod).to(t.device)
    t = t.double().clamp(0, lam.shape[0] - 1)
    low = t.floor().long().clamp(max=lam.shape[0] - 2)
    frac = t - low
    return torch.sigmoid(lam[low] * (1 - frac) + lam[low + 1] * frac)


def sigma_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ac = alpha_bar_at(alphas_cumprod, t)
    return ((1 - ac) / ac).sqrt()


def timestep_at_sigma(alphas_cumprod: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sigma_at``: the continuous t with that noise level, clamped to [0, T-1]."""
    lam = log_snr(alphas_cumprod).to(sigma.device)  # decreasing in t
    target = -2.0 * torch.log(sigma.double().clamp_min(1e-30))
    rising = -lam  # increasing in t, so searchsorted applies
    idx = torch.searchsorted(rising, -target).clamp(1, lam.shape[0] - 1)
    lo, hi = lam[idx - 1], lam[idx]
    frac = ((target - lo) / (hi - lo)).clamp(0, 1)
    return ((idx - 1).double() + frac).clamp(0, lam.shape[0] - 1)


def epsilon_from_output(output, x, alpha_bar, prediction_type: str):
    """The network's output as an epsilon prediction, whatever it was trained to predict."""
    if prediction_type == "epsilon":
        return output
    a = alpha_bar.to(x.dtype)
    if prediction_type == "sample":
        return (x - a.sqrt() * output) / (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * x
    raise ValueError(f"unknown prediction_type {prediction_type!r}")



# --------------------------------------------------------------------------- block grids
# PIADM and the parallel randomized midpoint integrate on a grid of noise levels that is
# not the scheduler's: uniform in u(s) = s + log(s) of the OU (VP-SDE) time
# s = -log(alpha_bar) / 2, i.e. steps of equal OU length far from the data and geometric
# within its last unit, down to the early-stopping time delta = s(timestep 0), then one
# step to clean data. The network is told the continuous timestep of each level (the
# log-SNR interpolation above, not snapped to a trained timestep).


def ou_time(alpha_bar: torch.Tensor) -> torch.Tensor:
    return -0.5 * torch.log(alpha_bar.double())


def grid_levels(alphas_cumprod: torch.Tensor, first_t: float, steps: int) -> torch.Tensor:
    """alpha_bar (steps + 1,) float64 of Chen et al.'s grid: from ``first_t`` to 1 (clean data).

    ``steps - 1`` steps warped in OU time from the first timestep's level to timestep 0's,
    then the trained last step to clean data.
    """
    ac = alphas_cumprod.double().cpu()
    s_first = float(ou_time(alpha_bar_at(ac, torch.tensor([float(first_t)])))[0])
    delta = float(ou_time(ac[:1])[0])
    if steps < 1 or (steps > 1 and s_first <= delta):
        raise ValueError(f"no grid of {steps} steps from timestep {first_t}")
    if steps == 1:
        return torch.tensor([math.exp(-2.0 * s_first), 1.0], dtype=torch.float64)
    warp = lambda s: s + math.log(s)  # noqa: E731  (increasing: bisection inverts it)
    targets = torch.linspace(warp(s_first), warp(delta), steps, dtype=torch.float64)
    lo, hi = torch.full_like(targets, delta), torch.full_like(targets, s_first)
    for _ in range(80):
        mid = (lo + hi) / 2
        below = mid + torch.log(mid) < targets
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    levels = (lo + hi) / 2
    levels[0], levels[-1] = s_first, delta  # exact ends, not bisection's
    return torch.cat([torch.exp(-2.0 * levels), torch.ones(1, dtype=torch.float64)])


@dataclass
class GridRule(StepRule):
    """A ``StepRule`` on a continuous grid: float timesteps and the exponential integrator.

    ``levels`` (N+1,) float64 alpha_bar of every grid point; step i moves from level i to
    level i+1 with the network's epsilon frozen over it (``grid_rule``).
    """

    levels: torch.Tensor | None = None


@dataclass
class _ConvertingGridRule(GridRule):
    """A grid rule for networks that predict the clean sample or v: each output is turned
    into epsilon at its level first (plain tensor maths, but not ``StepCoefficients``)."""

    integrator: StepCoefficients | None = None

    def transition(self, index, x, output, noise, memory=None):
        index = _as_index(index, x.shape[0], x.device)
        level = broadcast_levels(self.levels.to(x.device).index_select(0, index), x)
        eps = epsilon_from_output(output, x, level, self.config.prediction_type)
        return self.integrator.to(x.device).transition(index, x, eps, noise)


def broadcast_levels(levels: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Levels (K,) or (K, B) shaped to broadcast over states ``like`` (K, B, *S), in their dtype."""
    levels = levels.to(like.device)
    return levels.reshape(*levels.shape, *([1] * (like.dim() - levels.dim()))).to(like.dtype)


def integrator_flow(x, level, level_a, level_b, eps, clip):
    """How far the DDIM flow through point ``x`` (at ``level``, slope ``eps``) moves between
    levels ``level_a`` and ``level_b``: a difference of two moves out of one evaluated point,
    so an error in where the point sits is not amplified by the move. The clean-sample
    estimate is clipped as DDIM clips it."""
    a, b = broadcast_levels(level_a, x), broadcast_levels(level_b, x)
    here = broadcast_levels(level, x)
    clean = (x - (1 - here).sqrt() * eps) / here.sqrt()
    if clip is not None:
        clean = clean.clamp(-clip, clip)
    return (b.sqrt() - a.sqrt()) * clean + ((1 - b).sqrt() - (1 - a).sqrt()) * eps


def _integrator_coefficients(levels: torch.Tensor, sde: bool, clip) -> StepCoefficients:
    """The exponential integrator as ``StepCoefficients``: DDIM's step between two levels
    (probability-flow ODE), or the DDPM posterior between them (reverse SDE, fixed_small)."""
    a, b = levels[:-1], levels[1:]
    if sde:
        keep = a / b  # the product of the alphas between the two levels
        first = keep.sqrt() * (1 - b) / (1 - a)
        x0_scale = b.sqrt() * (1 - keep) / (1 - a)
        std = posterior_variance(a, b).clamp_min(0).sqrt()
    else:
        first, x0_scale, std = (1 - b).sqrt(), b.sqrt(), torch.zeros_like(a)
    f32 = lambda v: v.to(torch.float32)  # noqa: E731
    return StepCoefficients(ddim=not sde, first=f32(first), x0_scale=f32(x0_scale), eps_scale=f32((1 - a).sqrt()),
                            x_scale=f32(a.sqrt()), noise_std=f32(std), drawn=std > 0, clip=clip)


def clip_limit(rule: StepRule):
    """The range the scheduler clips its clean-sample prediction to, or None."""
    return clip_range(rule.config)


def grid_rule(rule: StepRule, steps: int, sde: bool) -> GridRule:
    """The trained schedule of ``rule`` on a ``steps``-step continuous grid (cached on the
    rule: built, and fingerprinted for a capturing executor, once per rule)."""
    cache = rule.__dict__.setdefault("_grid_rules", {})
    key = (int(steps), bool(sde))
    if key not in cache:
        levels = grid_levels(rule.alphas_cumprod, float(rule.timesteps[0]), steps)
        timesteps = timestep_at_sigma(rule.alphas_cumprod, ((1 - levels[:-1]) / levels[:-1]).sqrt()).to(torch.float32)
        timesteps[0] = float(rule.timesteps[0])
        coefficients = _integrator_coefficients(levels, sde, clip_limit(rule))
        variance = posterior_variance(levels[:-1], levels[1:]).clamp(min=1e-20).to(torch.float32)
        fields = dict(timesteps=timesteps, draws_noise=tuple(bool(d) for d in coefficients.drawn), noise_dtype=None,
                      error_variance=variance, alphas_cumprod=rule.alphas_cumprod, config=rule.config,
                      scheduler_name=rule.scheduler_name, levels=levels)
        if getattr(rule.config, "prediction_type", "epsilon") == "epsilon":
            cache[key] = GridRule(**fields, coefficients=coefficients)
        else:
            cache[key] = _ConvertingGridRule(**fields, integrator=coefficients)
    return cache[key]
