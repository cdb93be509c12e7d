"""Parallel randomized midpoint: exact sequential answer with enough rounds, the exact ODE
map as the step count grows, and the policy's draw of the random midpoints."""

import os

import pytest
import torch
from helpers import CountingDenoiser, GaussianDenoiser, SmoothNetDenoiser, make_scheduler, solve

import parapolicy
from parapolicy.errors import SamplerConfigError
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import RandomizedMidpoint, draw_noises, make_sampler

MU, S = 0.2, 0.15


def _offsets(steps, batch, seed=1):
    return torch.rand(steps, batch, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("block_size", [2, 4, 16])
def test_enough_rounds_give_the_sequential_randomized_midpoint_answer(block_size):
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(16, seed=3, scheduler=sched)
    draws = draw_noises(sched, (3, 8, 2), torch.Generator().manual_seed(0))
    off = _offsets(16, 3)
    sequential = solve(RandomizedMidpoint(steps=16, block_size=1, iterations=2), net, sched, draws.x_T, draws.noises,
                       offsets=off)
    parallel = solve(RandomizedMidpoint(steps=16, block_size=block_size, iterations=2 * block_size),
                     net, sched, draws.x_T, draws.noises, offsets=off)
    assert torch.allclose(parallel.sample, sequential.sample, atol=1e-5)
    assert parallel.stats.rounds == (16 // block_size) * 2 * block_size


def test_error_to_the_exact_answer_shrinks_with_rounds():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    draws = draw_noises(sched, (64, 8, 2), torch.Generator().manual_seed(0))
    off = _offsets(16, 64)

    def run(iterations):
        return solve(RandomizedMidpoint(steps=16, block_size=8, iterations=iterations), den, sched, draws.x_T,
                     draws.noises, offsets=off)

    exact = run(16).sample
    errors = [float((run(r).sample - exact).abs().max()) for r in (2, 4, 8, 12)]
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 1e-4


def test_converges_to_the_closed_form_probability_flow_map_as_steps_grow():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    draws = draw_noises(sched, (256, 8, 2), torch.Generator().manual_seed(0))
    a_T = sched.alphas_cumprod.double()[int(sched.timesteps[0])]
    # data N(MU, S^2): the ODE maps x_T affinely onto the data distribution
    exact = MU + S * (draws.x_T.double() - a_T.sqrt() * MU) / (a_T * S**2 + 1 - a_T).sqrt()
    errors = {}
    for steps in (8, 32, 64):
        out = solve(RandomizedMidpoint(steps=steps, block_size=1, iterations=2), den, sched, draws.x_T, draws.noises,
                    offsets=_offsets(steps, 256))
        errors[steps] = float((out.sample.double() - exact).abs().max())
    assert errors[64] < errors[32] < errors[8], errors
    assert errors[64] < 0.03


def test_one_batched_call_per_round_with_starts_and_midpoints():
    sched = make_scheduler("ddim", 16)
    counting = CountingDenoiser(SmoothNetDenoiser(16, scheduler=sched))
    draws = draw_noises(sched, (3, 8, 2), torch.Generator().manual_seed(0))
    out = solve(RandomizedMidpoint(steps=12, block_size=4, iterations=3), counting, sched, draws.x_T, draws.noises,
                offsets=_offsets(12, 3))
    assert counting.calls == [2 * 4 * 3] * 9
    assert out.stats.rounds == 9 and out.stats.nfe == 9 * 8


def test_sample_prediction_networks_give_the_same_answer():
    eps_sched = make_scheduler("ddpm")
    x0_sched = make_scheduler("ddpm")
    x0_sched.register_to_config(prediction_type="sample")
    den = GaussianDenoiser(eps_sched, MU, S)

    def x0_net(x, t):
        from parapolicy.samplers.continuous_time import alpha_bar_at

        a = alpha_bar_at(eps_sched.alphas_cumprod, t).float().view(-1, 1, 1)
        return (x - (1 - a).sqrt() * den(x, t)) / a.sqrt()

    draws = draw_noises(eps_sched, (4, 8, 2), torch.Generator().manual_seed(0))
    off = _offsets(8, 4)
    exact_rm = RandomizedMidpoint(steps=8, block_size=8, iterations=16)
    a = solve(exact_rm, den, eps_sched, draws.x_T, draws.noises, offsets=off).sample
    b = solve(exact_rm, x0_net, x0_sched, draws.x_T, draws.noises, offsets=off).sample
    assert torch.allclose(a, b, atol=1e-4)


def test_inpainted_entries_are_kept():
    sched = make_scheduler("ddim", 8)
    shape = (2, 8, 4)
    cond_data = torch.full(shape, 0.3)
    cond_mask = torch.zeros(shape, dtype=torch.bool)
    cond_mask[:, :2, 2:] = True
    draws = draw_noises(sched, shape, torch.Generator().manual_seed(2))
    out = solve(RandomizedMidpoint(steps=8), SmoothNetDenoiser(32, scheduler=sched), sched, draws.x_T, draws.noises,
                                             cond_data=cond_data, cond_mask=cond_mask, offsets=_offsets(8, 2))
    assert torch.equal(out.sample[cond_mask], cond_data[cond_mask])


def test_policy_draws_the_midpoints_after_x_T_and_the_noises():
    policy = parapolicy.load_policy(os.path.join(ASSETS_DIR, "toy_reach_unet.ckpt"))
    policy.set_sampler("randomized_midpoint", steps=8, block_size=4, iterations=8)
    obs = {k: torch.zeros(2, policy.spec.n_obs_steps, *shape) for k, shape in policy.spec.obs_shapes.items()}
    got = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]
    again = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]
    other = policy.predict_action(obs, generator=torch.Generator().manual_seed(6))["action_pred"]
    assert torch.equal(got, again) and not torch.equal(got, other)

    generator = torch.Generator().manual_seed(5)
    draws = draw_noises(policy.rule, (2, policy.spec.horizon, policy.spec.action_dim), generator)
    offsets = torch.rand(8, 2, generator=generator)
    sampler = policy.sampler
    problem = policy.prepare(obs).replace(x_T=draws.x_T, noises=draws.noises, extra={"offsets": offsets})
    with torch.no_grad():
        by_hand = sampler.sample(problem).sample
    expected = policy.normalizer.unnormalize("action", by_hand[..., : policy.spec.action_dim])
    assert torch.equal(got, expected)


def test_bad_settings_and_offsets_are_one_clear_error():
    with pytest.raises(SamplerConfigError, match="randomized_midpoint block_size must be an integer >= 1"):
        make_sampler("randomized_midpoint", block_size=0)
    sched = make_scheduler("ddim", 8)
    x_T = torch.zeros(2, 8, 2)
    with pytest.raises(SamplerConfigError, match=r"offsets must be \(16, 2\) values in \[0, 1\]"):
        solve(RandomizedMidpoint(), SmoothNetDenoiser(16, scheduler=sched), sched, x_T, offsets=torch.rand(16, 3))
