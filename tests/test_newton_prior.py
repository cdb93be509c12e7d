"""newton_prior: newton_picard's rounds started from a Gaussian-prior trajectory.

Checked against closed forms: for Gaussian data the sequential chain is affine in the
pre-drawn noises, so its exact output is computed in float64 from the schedule alone.
"""

import pytest
import torch
from tests.support.helpers import GaussianDenoiser, SmoothNetDenoiser, make_scheduler, solve
from tests.support.analytic import MU, S, affine_steps

from parapolicy.samplers import (
    DenoisingProblem,
    NewtonPicard,
    NewtonPrior,
    Sequential,
    draw_noises,
    make_sampler,
    make_step_rule,
    prior_trajectory,
)
from parapolicy.samplers.newton_prior import PRIOR_STD


def _closed_form(sched, draws, stochastic):
    """The sequential answer for these draws, x_{i+1} = a_i x_i + c_i + sigma_i z_i, in float64."""
    x = draws.x_T.double()
    for i, (a, c, sigma) in enumerate(affine_steps(sched, stochastic)):
        x = a * x + c + (sigma * draws.noises[i].double() if stochastic else 0.0)
    return x


@pytest.mark.parametrize("kind, steps", [("ddpm", 100), ("ddim", 16)])
@pytest.mark.parametrize("window", [100, 6])
def test_converges_to_the_closed_form_sequential_answer(kind, steps, window):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (8, 4), torch.Generator().manual_seed(3))
    expected = _closed_form(sched, draws, stochastic=kind == "ddpm")
    out = solve(NewtonPrior(window=window, tolerance=1e-4), GaussianDenoiser(sched, MU, S), sched, draws.x_T,
                                                            draws.noises)
    assert out.stats.sampler == "newton_prior" and out.stats.settings["start"] == "prior" and out.stats.fallback is None
    assert (out.sample.double() - expected).abs().max() < 5e-5
    assert out.stats.rounds < steps


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_prior_trajectory_is_the_sequential_chain_for_the_prior_itself(kind):
    """With data N(0, PRIOR_STD^2) the stand-in denoiser is exact: the guess is the answer, found in one round."""
    sched = make_scheduler(kind)
    den = GaussianDenoiser(sched, 0.0, PRIOR_STD)
    draws = draw_noises(sched, (3, 16, 2), torch.Generator().manual_seed(5))
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises).sample
    guess = prior_trajectory(sched, draws.x_T, draws.noises)
    assert guess.shape == (len(sched.timesteps) + 1, 3, 16, 2)
    assert (guess[-1] - ref).abs().max() < 1e-4  # float32 rounding of two ways to write the same map
    out = solve(NewtonPrior(tolerance=1e-3, max_rows=100), den, sched, draws.x_T, draws.noises)
    assert out.stats.rounds == 1
    cold = solve(NewtonPicard(tolerance=1e-3), den, sched, draws.x_T, draws.noises)
    assert cold.stats.rounds > 2  # the prior, not the refinement, is what made it one round


def test_a_caller_guess_replaces_the_prior():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(2))
    seq = solve(Sequential(), net, sched, draws.x_T, draws.noises)
    # the exact sequential trajectory as the guess: nothing moves, one round
    traj = [draws.x_T]
    x = draws.x_T
    rule = make_step_rule(sched)
    for i in range(rule.num_steps):
        eps = net(x, rule.timesteps[i : i + 1].repeat(2))
        x = rule.transition(i, x[None], eps[None], draws.noises[i : i + 1])[0]
        traj.append(x)
    problem = DenoisingProblem(net, sched, draws.x_T, draws.noises, init_guess=torch.stack(traj))
    out = NewtonPrior(tolerance=1e-3, max_rows=100).sample(problem)
    assert out.stats.settings["start"] == "warm" and out.stats.initial_guess and out.stats.rounds == 1
    assert (out.sample - seq.sample).abs().max() < 1e-5


def test_non_finite_values_fall_back_to_sequential():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(32, seed=0, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(1))
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample

    def breaks_on_big_batches(x, t):
        eps = net(x, t)
        return eps * float("nan") if x.shape[0] > 2 else eps

    out = solve(NewtonPrior(), breaks_on_big_batches, sched, draws.x_T, draws.noises)
    assert out.stats.sampler == "newton_prior"
    assert out.stats.fallback.startswith("sequential: non-finite")
    assert torch.equal(out.sample, ref)


def test_inpainted_entries_are_kept_and_the_answer_is_sequential():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(32, seed=4, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4))
    cond_data = torch.randn(2, 16, 2)
    cond_mask = torch.zeros(2, 16, 2, dtype=torch.bool)
    cond_mask[:, :2, 1] = True
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises, cond_data, cond_mask).sample
    out = solve(NewtonPrior(tolerance=1e-5), net, sched, draws.x_T, draws.noises, cond_data, cond_mask).sample
    assert torch.equal(out[cond_mask], cond_data[cond_mask])
    assert (out - ref).abs().max() < 1e-4


def test_settings_and_registry():
    assert isinstance(make_sampler("newton_prior"), NewtonPrior)
    assert make_sampler("newton_prior").config() == {"name": "newton_prior", "window": 100, "tolerance": 0.003,
                                                     "max_rows": 64}
    with pytest.raises(Exception, match="newton_prior tolerance must be a finite number > 0"):
        NewtonPrior(tolerance=0.0)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_a_stand_in_with_the_data_mean_is_the_sequential_chain(kind):
    """Data N(MU, S^2) and ``prior_trajectory(mean=MU, std=S)``: the guess is the answer, one round."""
    sched = make_scheduler(kind)
    den = GaussianDenoiser(sched, MU, S)
    draws = draw_noises(sched, (3, 16, 2), torch.Generator().manual_seed(6))
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises).sample
    guess = prior_trajectory(sched, draws.x_T, draws.noises, std=S, mean=torch.full((16, 2), MU))
    assert (guess[-1] - ref).abs().max() < 1e-4
    off = prior_trajectory(sched, draws.x_T, draws.noises, std=S, mean=torch.full((16, 2), MU + 0.3))
    assert (off[-1] - ref).abs().max() > 0.1  # the mean is used, not ignored
    problem = DenoisingProblem(den, sched, draws.x_T, draws.noises, init_guess=guess)
    assert NewtonPrior(tolerance=1e-3, max_rows=100).sample(problem).stats.rounds == 1


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_the_point_mass_stand_in_lands_on_its_mean(kind):
    """std = 0 (a warm start's guessed sample m): every step predicts m, so the chain ends at m."""
    sched = make_scheduler(kind)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(7))
    mean = torch.rand((2, 16, 2), generator=torch.Generator().manual_seed(8)) * 1.6 - 0.8
    traj = prior_trajectory(sched, draws.x_T, draws.noises, std=0.0, mean=mean)
    assert (traj[-1] - mean).abs().max() < 1e-4
    assert (traj[1] - mean).abs().max() > 0.5  # the early states carry this call's noise, not the guess
