"""Samplers are right, not only self-consistent: a Gaussian target with a closed-form answer.

For data ~ N(mu, s^2) the exact epsilon-prediction is linear in x, so every DDPM/DDIM
step is affine (clipping never triggers here). The expected output, computed below in
float64 from the schedule alone (independent of diffusers' step code), is exact.
"""

import pytest
import torch
from tests.support.helpers import GaussianDenoiser, make_scheduler, solve

from parapolicy.samplers import Picard, Sequential, draw_noises

from tests.support.analytic import MU, S, affine_steps


@pytest.mark.parametrize("sampler", [Sequential(), Picard(window=100, tolerance=1e-4), Picard(window=5, tolerance=1e-4)])
def test_ddim_output_equals_closed_form_map(sampler):
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (64, 2), torch.Generator().manual_seed(0))
    x = draws.x_T.double()
    for a, c, _ in affine_steps(sched, stochastic=False):
        x = a * x + c
    got = solve(sampler, GaussianDenoiser(sched, MU, S), sched, draws.x_T, draws.noises).sample
    assert (got.double() - x).abs().max() < 2e-5


@pytest.mark.parametrize("sampler", [Sequential(), Picard(window=100, tolerance=1e-3)])
def test_ddpm_output_distribution_matches_closed_form(sampler):
    sched = make_scheduler("ddpm", 100)
    n = 20000
    draws = draw_noises(sched, (n, 2), torch.Generator().manual_seed(0))
    mean, var = torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    for a, c, sigma in affine_steps(sched, stochastic=True):
        mean, var = a * mean + c, a**2 * var + sigma**2
    got = solve(sampler, GaussianDenoiser(sched, MU, S), sched, draws.x_T, draws.noises).sample.double()
    std_err = var.sqrt() / n**0.5
    assert (got.mean(0) - mean).abs().max() < 4 * std_err
    assert (got.var(0) - var).abs().max() < 4 * var * (2 / n) ** 0.5
    # and the chain lands near the data distribution it was built for
    assert abs(float(mean) - MU) < 0.01 and abs(float(var.sqrt()) - S) < 0.03
