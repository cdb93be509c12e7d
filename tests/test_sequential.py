"""The sequential sampler reproduces upstream DiffusionPolicy's loop bit for bit."""

import copy

import pytest
import torch
from tests.support.helpers import SmoothNetDenoiser, make_scheduler, solve, upstream_conditional_sample

from parapolicy.samplers import Sequential, draw_noises

SHAPE = (3, 16, 4)


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_sequential_equals_upstream_loop_for_same_seed(kind):
    sched = make_scheduler(kind)
    net = SmoothNetDenoiser(SHAPE[1] * SHAPE[2])
    expected = upstream_conditional_sample(net, copy.deepcopy(sched), SHAPE, torch.Generator().manual_seed(7))
    draws = draw_noises(sched, SHAPE, torch.Generator().manual_seed(7))
    got = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    assert torch.equal(got, expected)


def test_sequential_reimposes_inpainting_condition_like_upstream():
    sched = make_scheduler("ddim", 8)
    net = SmoothNetDenoiser(SHAPE[1] * SHAPE[2])
    cond_data = torch.zeros(SHAPE)
    cond_data[:, :2, 2:] = torch.linspace(-0.5, 0.5, 3 * 2 * 2).reshape(3, 2, 2)
    cond_mask = torch.zeros(SHAPE, dtype=torch.bool)
    cond_mask[:, :2, 2:] = True
    expected = upstream_conditional_sample(net, sched, SHAPE, torch.Generator().manual_seed(1), cond_data, cond_mask)
    draws = draw_noises(sched, SHAPE, torch.Generator().manual_seed(1))
    got = solve(Sequential(), net, sched, draws.x_T, draws.noises, cond_data, cond_mask).sample
    assert torch.equal(got, expected)
    assert torch.equal(got[cond_mask], cond_data[cond_mask])


def test_ddpm_draw_order_is_x_T_then_one_per_step_above_zero():
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, SHAPE, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    assert torch.equal(draws.x_T, torch.randn(SHAPE, generator=g))
    for i, t in enumerate(sched.timesteps):
        if t > 0:
            assert torch.equal(draws.noises[i], torch.randn(SHAPE, generator=g))
        else:
            assert torch.count_nonzero(draws.noises[i]) == 0
    assert draws.noises.shape == (100, *SHAPE)


def test_ode_schedulers_draw_only_x_T():
    for kind in ("ddim", "dpm"):
        draws = draw_noises(make_scheduler(kind), SHAPE, torch.Generator().manual_seed(0))
        assert draws.noises is None


def test_sampling_leaves_inputs_and_scheduler_untouched():
    sched = make_scheduler("dpm", 10)
    timesteps = sched.timesteps.clone()
    draws = draw_noises(sched, SHAPE, torch.Generator().manual_seed(0))
    x_T = draws.x_T.clone()
    net = SmoothNetDenoiser(SHAPE[1] * SHAPE[2])
    first = solve(Sequential(), net, sched, draws.x_T).sample
    second = solve(Sequential(), net, sched, draws.x_T).sample
    assert torch.equal(first, second)
    assert torch.equal(draws.x_T, x_T)
    assert torch.equal(sched.timesteps, timesteps)
    assert sched.step_index is None
