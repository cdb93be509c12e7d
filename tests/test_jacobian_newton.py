"""jacobian_newton: Newton rounds with the full step Jacobians taken from the network.

Checked against closed forms: for Gaussian data every step is affine, so exact Newton
solves the chain in one round (a second one confirms it), the network's derivative is a
known scalar per step, and the sequential answer is computed in float64 from the schedule.
"""

import os

import pytest
import torch
from tests.support.helpers import (GaussianDenoiser, SmoothNetDenoiser, inpainting_condition, make_scheduler, nan_on_batches_above,
                     solve)
from tests.support.analytic import MU, S, affine_steps

import parapolicy
from parapolicy.errors import SamplerConfigError
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import JacobianNewton, NewtonPrior, Sequential, draw_noises, make_sampler
from parapolicy.samplers.affine_scan import carry_corrections
from parapolicy.samplers.jacobian_newton import NetworkJacobian


def _closed_form(sched, draws, stochastic):
    x = draws.x_T.double()
    for i, (a, c, sigma) in enumerate(affine_steps(sched, stochastic)):
        x = a * x + c + (sigma * draws.noises[i].double() if stochastic else 0.0)
    return x


def _window_counts(events, window, n_steps):
    """Live slots of each round, from the callback's window starts."""
    return [min(window, n_steps - e["start"]) for e in events]


@pytest.mark.parametrize("jacobian", ["jvp", "difference"])
@pytest.mark.parametrize("kind, steps", [("ddpm", 100), ("ddim", 16)])
def test_affine_chain_is_solved_in_one_newton_round(kind, steps, jacobian):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (3, 16, 2), torch.Generator().manual_seed(3))
    expected = _closed_form(sched, draws, stochastic=kind == "ddpm")
    out = solve(JacobianNewton(tolerance=1e-4, jacobian=jacobian), GaussianDenoiser(sched, MU, S), sched, draws.x_T,
                draws.noises)
    assert out.stats.sampler == "jacobian_newton" and out.stats.fallback is None
    assert (out.sample.double() - expected).abs().max() < 2e-5
    # one Newton round, one that confirms nothing moved (finite differences: float32 rounding, maybe one more)
    assert out.stats.rounds == 2 if jacobian == "jvp" else out.stats.rounds <= 3


@pytest.mark.parametrize("window, refresh", [(6, 1), (100, 3)])
def test_windows_and_chord_rounds_converge_to_the_closed_form(window, refresh):
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4))
    expected = _closed_form(sched, draws, stochastic=True)
    out = solve(JacobianNewton(window=window, tolerance=1e-4, refresh=refresh), GaussianDenoiser(sched, MU, S), sched,
                draws.x_T, draws.noises)
    assert (out.sample.double() - expected).abs().max() < 2e-5
    assert out.stats.rounds < 100


def test_nonlinear_denoiser_reaches_sequential_in_fewer_rounds_than_secant_newton():
    sched = make_scheduler("ddpm", 100)
    net = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(3))
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    out = solve(JacobianNewton(), net, sched, draws.x_T, draws.noises)
    secant = solve(NewtonPrior(), net, sched, draws.x_T, draws.noises)
    assert (out.sample - ref).abs().max() < 1e-4
    assert out.stats.rounds <= secant.stats.rounds - 3, (out.stats, secant.stats)


@pytest.mark.parametrize("refresh", [1, 2])
def test_nfe_counts_every_directional_derivative(refresh):
    """D + 1 evaluations per live state on Jacobian rounds (every ``refresh``-th), 1 on the others."""
    sched = make_scheduler("ddpm", 100)
    net = SmoothNetDenoiser(32, seed=2, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(5))
    events = []
    out = JacobianNewton(window=40, refresh=refresh, jacobian="difference").sample(
        parapolicy.samplers.DenoisingProblem(net, sched, draws.x_T, draws.noises, callback=events.append))
    counts = _window_counts(events, 40, 100)
    assert len(counts) == out.stats.rounds > 2
    assert out.stats.nfe == sum(c * (33 if r % refresh == 0 else 1) for r, c in enumerate(counts))


@pytest.mark.parametrize("method", ["jvp", "difference"])
def test_network_derivatives_match_the_gaussian_denoisers_slope(method):
    """eps = k_t (x - sqrt(a_t) mu) for Gaussian data, so d eps / dx along axis d is k_t e_d."""
    sched = make_scheduler("ddpm", 100)
    den = GaussianDenoiser(sched, MU, S)
    x, t = torch.randn(6, 4, 2), torch.tensor([99, 99, 50, 50, 3, 3])
    mask = torch.zeros(2, 4, 2, dtype=torch.bool)
    mask[1, 0, 1] = True  # an inpainted entry of sample 1 gets no direction
    net = NetworkJacobian((4, 2), mask, method, refresh=1)
    eps = net.evaluate(den, x, t)
    assert torch.equal(eps, den(x, t)) and net.extra_rows == 8 * 6
    a = sched.alphas_cumprod[t].view(-1, 1, 1)
    slope = (1 - a).sqrt() / (a * S**2 + 1 - a)
    expected = net.directions(6, x) * slope
    assert net.tangents.shape == (8, 6, 4, 2)
    assert (net.tangents - expected).abs().max() < (1e-5 if method == "jvp" else 2e-3)
    assert not net.tangents[1, 1::2].any()  # row b=1, axis (0, 1) is inpainted


def test_carry_corrections_is_the_sequential_recurrence():
    g = torch.Generator().manual_seed(0)
    residual, jac = torch.randn(13, 3, 4, generator=g), 0.5 * torch.randn(13, 3, 4, 4, generator=g)
    d, expected = torch.zeros(3, 4), []
    for k in range(13):
        d = residual[k] + (jac[k] @ d.unsqueeze(-1)).squeeze(-1)
        expected.append(d)
    assert torch.allclose(carry_corrections(residual, jac), torch.stack(expected), atol=1e-5)
    tracked = jac.clone().requires_grad_(True)  # a caller's gradient runs through it (no workspace in place)
    with torch.enable_grad():
        carried = carry_corrections(residual, tracked)
        carried.sum().backward()
    assert torch.allclose(carried.detach(), torch.stack(expected), atol=1e-5) and bool(tracked.grad.abs().sum() > 0)


def test_a_denoiser_with_a_gradient_samples_as_a_plain_one():
    """A caller sampling outside ``no_grad`` with a denoiser that carries a gradient gets the same chunk."""
    sched = make_scheduler("ddim", 16)
    net = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(3))
    plain = solve(JacobianNewton(), net, sched, draws.x_T, draws.noises).sample
    weight = torch.zeros((), requires_grad=True)
    with torch.enable_grad():
        tracked = solve(JacobianNewton(), lambda x, t: net(x, t) + weight * x, sched, draws.x_T, draws.noises)
    assert tracked.sample.requires_grad and (tracked.sample.detach() - plain).abs().max() < 1e-5


def test_non_finite_values_fall_back_to_sequential():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(32, seed=0, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(1))
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    out = solve(JacobianNewton(), nan_on_batches_above(net, 2), sched, draws.x_T, draws.noises)
    assert out.stats.sampler == "jacobian_newton"
    assert out.stats.fallback.startswith("sequential: non-finite")
    assert torch.equal(out.sample, ref)
    assert out.stats.nfe == 100 * 33 + 100  # the failed Jacobian round, then the chain


def test_inpainted_entries_are_kept_and_the_answer_is_sequential():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(32, seed=4, scheduler=sched)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4))
    cond_data, cond_mask = inpainting_condition((2, 16, 2), seed=4)
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises, cond_data, cond_mask).sample
    out = solve(JacobianNewton(tolerance=1e-5, jacobian="difference"), net, sched, draws.x_T, draws.noises,
                cond_data, cond_mask)
    assert torch.equal(out.sample[cond_mask], cond_data[cond_mask])
    assert (out.sample - ref).abs().max() < 1e-4
    assert out.stats.rounds < 10


def test_settings_registry_and_bad_input():
    assert isinstance(make_sampler("jacobian_newton"), JacobianNewton)
    assert make_sampler("jacobian_newton").config() == {"name": "jacobian_newton", "window": 100, "tolerance": 0.01,
                                                        "refresh": 1, "jacobian": "difference", "max_rows": None}
    with pytest.raises(SamplerConfigError, match="jacobian_newton jacobian must be one of jvp, difference, got 'fd'"):
        JacobianNewton(jacobian="fd")
    with pytest.raises(SamplerConfigError, match="jacobian_newton refresh must be an integer >= 1, got 0"):
        JacobianNewton(refresh=0)
    sched = make_scheduler("dpm")
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SamplerConfigError, match="needs a one-step scheduler .DDPM, DDIM., got the multistep "
                                                 "DPMSolverMultistepScheduler"):
        solve(JacobianNewton(), GaussianDenoiser(sched), sched, draws.x_T, draws.noises)


@pytest.mark.slow
def test_shipped_policy_matches_sequential_within_a_pixel():
    policy = parapolicy.load_policy(os.path.join(ASSETS_DIR, "pusht_keypoints_unet.ckpt"))
    g = torch.Generator().manual_seed(0)
    obs = {"obs": torch.rand(2, policy.spec.n_obs_steps, *policy.spec.obs_shapes["obs"], generator=g) * 400.0}
    ref = policy.set_sampler("sequential").predict_action(obs, generator=torch.Generator().manual_seed(1))
    out = policy.set_sampler("jacobian_newton").predict_action(
        obs, generator=torch.Generator().manual_seed(1))
    assert (out["action"] - ref["action"]).abs().max() < 1.0  # pixels
    assert out["stats"]["rounds"] <= 8 and out["stats"]["fallback"] is None
