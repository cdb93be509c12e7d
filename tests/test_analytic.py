"""Samplers are right, not only self-consistent: a Gaussian target with a closed-form answer.

For data ~ N(mu, s^2) the exact epsilon-prediction is linear in x, so every DDPM/DDIM
step is affine (clipping never triggers here). The expected output, computed below in
float64 from the schedule alone (independent of diffusers' step code), is exact.
"""

import pytest
import torch
from helpers import GaussianDenoiser, make_scheduler, solve

from parapolicy.samplers import Picard, Sequential, draw_noises

MU, S = 0.2, 0.15


def _affine_steps(sched, stochastic):
    """Per step (a, c, sigma): x_next = a*x + c + sigma*z for the exact Gaussian denoiser."""
    ac = sched.alphas_cumprod.double()
    ts = [int(t) for t in sched.timesteps]
    steps = []
    for i, t in enumerate(ts):
        a_t = ac[t]
        a_p = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        k = (1 - a_t).sqrt() / (a_t * S**2 + 1 - a_t)  # eps = k * (x - sqrt(a_t) mu)
        # x0_pred = (x - sqrt(1-a_t) eps) / sqrt(a_t) = p*x + q
        p = (1 - (1 - a_t).sqrt() * k) / a_t.sqrt()
        q = (1 - a_t).sqrt() * k * a_t.sqrt() * MU / a_t.sqrt()
        if stochastic:  # DDPM posterior mean and variance
            beta = 1 - a_t / a_p
            c0, ct = a_p.sqrt() * beta / (1 - a_t), (a_t / a_p).sqrt() * (1 - a_p) / (1 - a_t)
            a, c = c0 * p + ct, c0 * q
            sigma = ((1 - a_p) / (1 - a_t) * beta).sqrt() if t > 0 else torch.tensor(0.0, dtype=torch.float64)
        else:  # DDIM, eta = 0: x_prev = sqrt(a_p) x0 + sqrt(1-a_p) eps
            a = a_p.sqrt() * p + (1 - a_p).sqrt() * k
            c = a_p.sqrt() * q - (1 - a_p).sqrt() * k * a_t.sqrt() * MU
            sigma = torch.tensor(0.0, dtype=torch.float64)
        steps.append((a, c, sigma))
    return steps


@pytest.mark.parametrize("sampler", [Sequential(), Picard(window=100, tolerance=1e-4), Picard(window=5, tolerance=1e-4)])
def test_ddim_output_equals_closed_form_map(sampler):
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (64, 2), torch.Generator().manual_seed(0))
    x = draws.x_T.double()
    for a, c, _ in _affine_steps(sched, stochastic=False):
        x = a * x + c
    got = solve(sampler, GaussianDenoiser(sched, MU, S), sched, draws.x_T, draws.noises).sample
    assert (got.double() - x).abs().max() < 2e-5


@pytest.mark.parametrize("sampler", [Sequential(), Picard(window=100, tolerance=1e-3)])
def test_ddpm_output_distribution_matches_closed_form(sampler):
    sched = make_scheduler("ddpm", 100)
    n = 20000
    draws = draw_noises(sched, (n, 2), torch.Generator().manual_seed(0))
    mean, var = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for a, c, sigma in _affine_steps(sched, stochastic=True):
        mean, var = a * mean + c, a**2 * var + sigma**2
    got = solve(sampler, GaussianDenoiser(sched, MU, S), sched, draws.x_T, draws.noises).sample.double()
    std_err = var.sqrt() / n**0.5
    assert (got.mean(0) - mean).abs().max() < 4 * std_err
    assert (got.var(0) - var).abs().max() < 4 * var * (2 / n) ** 0.5
    # and the chain lands near the data distribution it was built for
    assert abs(float(mean) - MU) < 0.01 and abs(float(var.sqrt()) - S) < 0.03
