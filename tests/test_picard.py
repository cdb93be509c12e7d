"""Picard (ParaDiGMS) converges to the sequential answer and batches each round."""

import re

import pytest
import torch
from tests.support.helpers import CountingDenoiser, GaussianDenoiser, SmoothNetDenoiser, make_scheduler, solve

from parapolicy.errors import NonFiniteSampleError, SamplerConfigError, UnsupportedSchedulerError
from parapolicy.samplers import Picard, Sequential, draw_noises, make_sampler

TOLERANCES = [1e-1, 1e-2, 1e-3, 1e-5]


def _case(kind, batch):
    sched = make_scheduler(kind)
    shape = (batch, 16, 2)
    net = SmoothNetDenoiser(32, seed=batch, scheduler=sched)
    draws = draw_noises(sched, shape, torch.Generator().manual_seed(11))
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    return sched, net, draws, ref


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("window", ["all", 7])
def test_picard_converges_to_sequential_as_tolerance_shrinks(kind, batch, window):
    sched, net, draws, ref = _case(kind, batch)
    width = len(sched.timesteps) if window == "all" else window
    errors = []
    for tol in TOLERANCES:
        out = solve(Picard(window=width, tolerance=tol), net, sched, draws.x_T, draws.noises)
        errors.append(float((out.sample - ref).abs().max() / ref.abs().max()))
        assert out.stats.fallback is None
    assert errors[-1] < 2e-6  # float32 rounding of the cumulative sums, relative to the sample
    assert errors[-1] <= errors[0]
    assert all(b <= a * 1.5 + 1e-6 for a, b in zip(errors, errors[1:])), errors


@pytest.mark.parametrize("kind", ["ddim", "dpm"])
def test_ode_picard_with_full_window_is_one_call_per_round_and_at_most_steps_rounds(kind):
    sched, net, draws, _ = _case(kind, 3)
    counting = CountingDenoiser(net)
    steps = len(sched.timesteps)
    out = solve(Picard(window=steps + 5, tolerance=1e-7), counting, sched, draws.x_T, draws.noises)
    assert out.stats.rounds == len(counting.calls) <= steps
    assert out.stats.rounds == len(counting.calls)
    assert counting.calls[0] == steps * 3  # the first round evaluates every step of every sample
    assert sum(counting.calls) == out.stats.nfe * 3


def test_window_slides_and_batches_window_times_batch_rows():
    sched, net, draws, _ = _case("ddpm", 4)
    counting = CountingDenoiser(net)
    out = solve(Picard(window=10, tolerance=0.05), counting, sched, draws.x_T, draws.noises)
    assert max(counting.calls) == 10 * 4
    assert all(c % 4 == 0 for c in counting.calls)
    assert out.stats.settings["window"] == 10


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_picard_needs_fewer_rounds_than_sequential_nfe_on_smooth_denoiser(kind):
    sched = make_scheduler(kind)
    draws = draw_noises(sched, (8, 16, 2), torch.Generator().manual_seed(0))
    den = GaussianDenoiser(sched)
    seq = solve(Sequential(), den, sched, draws.x_T, draws.noises)
    par = solve(Picard(window=len(sched.timesteps), tolerance=0.1), den, sched, draws.x_T, draws.noises)
    assert par.stats.rounds < seq.stats.nfe
    if kind == "ddpm":
        assert par.stats.rounds <= 40  # DDPM-100 in well under half the calls


def test_picard_respects_inpainting_condition():
    sched = make_scheduler("ddim", 8)
    shape = (2, 16, 4)
    net = SmoothNetDenoiser(64)
    cond_data = torch.full(shape, 0.3)
    cond_mask = torch.zeros(shape, dtype=torch.bool)
    cond_mask[:, :2, 2:] = True
    draws = draw_noises(sched, shape, torch.Generator().manual_seed(2))
    ref = solve(Sequential(), net, sched, draws.x_T, None, cond_data, cond_mask).sample
    out = solve(Picard(window=8, tolerance=1e-6), net, sched, draws.x_T, None, cond_data, cond_mask).sample
    assert torch.equal(out[cond_mask], cond_data[cond_mask])
    assert (out - ref).abs().max() < 1e-5


def test_nan_in_a_parallel_round_falls_back_to_sequential():
    sched, net, draws, ref = _case("ddpm", 2)

    def breaks_on_big_batches(x, t):
        eps = net(x, t)
        return eps * float("nan") if x.shape[0] > 2 else eps

    out = solve(Picard(window=10, tolerance=0.1), breaks_on_big_batches, sched, draws.x_T, draws.noises)
    assert out.stats.fallback.startswith("sequential: non-finite")
    assert torch.equal(out.sample, ref)


def test_nan_everywhere_is_one_clear_error():
    sched, net, draws, _ = _case("ddim", 2)
    with pytest.raises(NonFiniteSampleError, match="NaN/inf"):
        solve(Picard(window=4, tolerance=0.1), lambda x, t: x * float("nan"), sched, draws.x_T)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"window": 0}, "window must be an integer >= 1"),
        ({"window": 2.5}, "window must be an integer >= 1"),
        ({"tolerance": 0.0}, "tolerance must be a finite number > 0"),
        ({"tolerance": -1.0}, "tolerance must be a finite number > 0"),
        ({"tolerance": float("nan")}, "tolerance must be a finite number > 0"),
        ({"windw": 3}, "bad settings for sampler 'picard'"),
    ],
)
def test_bad_picard_settings_are_rejected(settings, message):
    with pytest.raises(SamplerConfigError, match=message):
        make_sampler("picard", **settings)


def test_unknown_sampler_name_lists_choices():
    from parapolicy.samplers.registry import SAMPLERS

    assert {"picard", "sequential", "quasi_newton", "auto"} <= set(SAMPLERS)
    choices = ", ".join(sorted(SAMPLERS))
    with pytest.raises(SamplerConfigError, match=re.escape(f"unknown sampler 'parallel'; choose one of: {choices}")):
        make_sampler("parallel")


def test_unsupported_scheduler_is_named():
    from diffusers import EulerDiscreteScheduler

    sched = EulerDiscreteScheduler(num_train_timesteps=100)
    sched.set_timesteps(10)
    with pytest.raises(UnsupportedSchedulerError, match="EulerDiscreteScheduler has no step rule"):
        solve(Sequential(), lambda x, t: x, sched, torch.zeros(1, 2))


def test_ddpm_without_noises_or_with_wrong_shape_is_rejected():
    sched, net, draws, _ = _case("ddpm", 2)
    with pytest.raises(SamplerConfigError, match="pass the `noises`"):
        solve(Picard(), net, sched, draws.x_T)
    with pytest.raises(SamplerConfigError, match=r"noises has shape \(100, 1, 16, 2\), expected \(100, 2, 16, 2\)"):
        solve(Picard(), net, sched, draws.x_T, draws.noises[:, :1])
