"""Accelerated (secant-Newton) Picard: same fixed point as Picard, fewer rounds."""

import pytest
import torch
from tests.support.helpers import CountingDenoiser, GaussianDenoiser, SmoothNetDenoiser, make_scheduler, solve

from parapolicy.samplers import NewtonPicard, Picard, Sequential, draw_noises, make_sampler
from parapolicy.samplers.secant import SecantMemory, newton_states


def _problem(kind, batch, den="smooth"):
    sched = make_scheduler(kind)
    net = SmoothNetDenoiser(32, seed=batch, scheduler=sched) if den == "smooth" else GaussianDenoiser(sched)
    draws = draw_noises(sched, (batch, 16, 2), torch.Generator().manual_seed(11))
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    return sched, net, draws, ref


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("window", [100, 7])
def test_newton_picard_converges_to_sequential_as_tolerance_shrinks(kind, window):
    sched, net, draws, ref = _problem(kind, 3)
    errors = []
    for tol in [1e-1, 1e-3, 1e-5]:
        out = solve(NewtonPicard(window=window, tolerance=tol), net, sched, draws.x_T, draws.noises)
        assert out.stats.sampler == "newton_picard" and out.stats.fallback is None
        errors.append(float((out.sample - ref).abs().max() / ref.abs().max()))
    assert errors[-1] < 5e-6
    assert errors[-1] <= errors[0]


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("den", ["smooth", "gaussian"])
def test_newton_picard_needs_fewer_rounds_than_picard_at_the_same_tolerance(kind, den):
    sched, net, draws, _ = _problem(kind, 4, den)
    for tol in [0.1, 1e-3]:
        plain = solve(Picard(window=100, tolerance=tol), net, sched, draws.x_T, draws.noises)
        newton = solve(NewtonPicard(window=100, tolerance=tol), net, sched, draws.x_T, draws.noises)
        assert newton.stats.rounds < plain.stats.rounds, (tol, newton.stats, plain.stats)


def test_newton_picard_is_one_batched_call_per_round():
    sched, net, draws, _ = _problem("ddpm", 4)
    counting = CountingDenoiser(net)
    out = solve(NewtonPicard(window=10, tolerance=0.05), counting, sched, draws.x_T, draws.noises)
    assert len(counting.calls) == out.stats.rounds == out.stats.rounds
    assert max(counting.calls) == 10 * 4


def test_unit_slopes_reproduce_the_picard_update():
    first = torch.randn(3, 5)
    old_next, outputs = torch.randn(6, 3, 5), torch.randn(6, 3, 5)
    old = torch.cat([first[None], old_next[:-1]])
    picard = first + torch.cumsum(outputs - old, dim=0)
    newton = newton_states(first, old_next, outputs, torch.ones(6, 3))
    assert torch.allclose(newton, picard, atol=1e-5)


def test_secant_slope_is_exact_for_a_linear_step_and_falls_back_to_one():
    memory = SecantMemory(n_steps=2, x_T=torch.zeros(2, 4))
    x1, x2 = torch.randn(2, 2, 4), torch.randn(2, 2, 4)
    big = torch.full((2, 2, 4), 10.0)
    first = memory.slopes(0, x1, 0.7 * x1, big)
    assert torch.equal(first, torch.ones(2, 2))  # nothing to difference against yet
    second = memory.slopes(0, x2, 0.7 * x2, big * 0.5)
    assert torch.allclose(second, torch.full((2, 2), 0.7), atol=1e-5)
    grown = memory.slopes(0, x1, 0.7 * x1, big * 100)  # residual grew: back to plain Picard
    assert torch.equal(grown, torch.ones(2, 2))
    steep_memory = SecantMemory(n_steps=2, x_T=torch.zeros(2, 4))
    steep_memory.slopes(0, x1, 3.0 * x1, big)
    steep = steep_memory.slopes(0, x2, 3.0 * x2, big * 0.5)  # slope 3 is outside the trusted range
    assert torch.equal(steep, torch.ones(2, 2))


def test_newton_picard_settings_errors_and_registry():
    assert isinstance(make_sampler("newton_picard", window=8), NewtonPicard)
    assert make_sampler("newton_picard").config() == {"name": "newton_picard", "window": 100, "tolerance": 0.002,
                                                      "max_rows": 64}
    with pytest.raises(Exception, match="newton_picard tolerance must be"):
        NewtonPicard(tolerance=-1.0)


def test_newton_picard_falls_back_to_sequential_on_nan():
    sched, net, draws, _ = _problem("ddim", 2)

    def broken(x, t):
        out = net(x, t)
        return out if x.shape[0] <= 2 else out * float("nan")  # only batched window calls break

    out = solve(NewtonPicard(window=8, tolerance=0.1), broken, sched, draws.x_T, draws.noises)
    assert out.stats.fallback.startswith("sequential")
    assert torch.isfinite(out.sample).all()


def test_the_doubling_scan_solves_the_correction_recurrence():
    g = torch.Generator().manual_seed(3)
    for k in (1, 2, 5, 16, 100):
        first, old_next, outputs = torch.randn(2, 4, generator=g), torch.randn(k, 2, 4, generator=g), torch.randn(
            k, 2, 4, generator=g)
        slopes = 2 * torch.rand(k, 2, generator=g)
        correction, expected = torch.zeros(2, 4), []
        for i in range(k):  # d_i = r_i + J_i d_{i-1}, the definition, one step at a time
            correction = outputs[i] - old_next[i] + slopes[i, :, None] * correction
            expected.append(old_next[i] + correction)
        torch.testing.assert_close(newton_states(first, old_next, outputs, slopes), torch.stack(expected),
                                   rtol=1e-5, atol=1e-4)
