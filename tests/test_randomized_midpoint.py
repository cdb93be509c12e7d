"""Parallel randomized midpoint: the sequential answer after enough rounds, the exact ODE
map as the grid is refined, and the policy's draw of the random nodes."""

import pytest
import torch
from tests.support.helpers import (CountingDenoiser, GaussianDenoiser, SamplePredictionDenoiser, SmoothNetDenoiser,
                     make_scheduler, solve)

import parapolicy
from parapolicy.errors import SamplerConfigError
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import RandomizedMidpoint, draw_noises, make_sampler, make_step_rule
from parapolicy.samplers.continuous_time import grid_rule
from parapolicy.samplers.randomized_midpoint import node_levels

MU, S = 0.2, 0.15


def _run(sampler, denoise, scheduler, x_T, cond_data=None, cond_mask=None, **extra):
    """The sampler on a problem with the scheduler's own per-step draws (this sampler leaves them unused)."""
    noises = draw_noises(scheduler, tuple(x_T.shape), torch.Generator().manual_seed(9)).noises
    return solve(sampler, denoise, scheduler, x_T, noises, cond_data, cond_mask, **extra)


def _offsets(steps, batch, seed=1):
    return torch.rand(steps, batch, generator=torch.Generator().manual_seed(seed))


def _x_T(batch, seed=0):
    return torch.randn(batch, 4, 2, generator=torch.Generator().manual_seed(seed))


def _sequential_scheme(sched, net, x_T, offsets, blocks, points):
    """The scheme's fixed point written out one interval at a time: node j sits at interval
    j's start moved along the slope of the point before it (the block's start for j = 0),
    and each interval moves along the slope at its node (DDIM moves, clean estimate clipped)."""
    rule = grid_rule(make_step_rule(sched), blocks * points, sde=False)
    node_level, node_t = node_levels(rule, offsets)
    levels = rule.levels

    def move(x, here, a, b, eps):
        here, a, b = (v.view(-1, 1, 1) if torch.is_tensor(v) and v.dim() else v for v in (here, a, b))
        clean = ((x - (1 - here).sqrt() * eps) / here.sqrt()).clamp(-1, 1)
        return (b.sqrt() - a.sqrt()) * clean + ((1 - b).sqrt() - (1 - a).sqrt()) * eps

    x = x_T.double()
    for j in range(blocks * points):
        if j % points == 0:  # a block starts: the point before its first node is the start itself
            prev, prev_level = x, levels[j].expand(x.shape[0])
            prev_eps = net(x.float(), rule.timesteps[j].expand(x.shape[0])).double()
        node = x + move(prev, prev_level, levels[j], node_level[j], prev_eps)
        eps = net(node.float(), node_t[j]).double()
        x = x + move(node, node_level[j], levels[j], levels[j + 1], eps)
        prev, prev_level, prev_eps = node, node_level[j], eps
    return x


def test_enough_rounds_give_the_sequential_scheme_and_the_error_shrinks_with_every_round():
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(8, seed=3, scheduler=sched)
    x_T, off = _x_T(3), _offsets(12, 3)
    exact = _run(RandomizedMidpoint(blocks=3, points=4, iterations=5), net, sched, x_T, offsets=off)
    assert exact.stats.rounds == 3 * 5
    want = _sequential_scheme(sched, net, x_T, off, blocks=3, points=4)
    assert (exact.sample.double() - want).abs().max() < 1e-5
    more = _run(RandomizedMidpoint(blocks=3, points=4, iterations=9), net, sched, x_T, offsets=off)
    assert torch.equal(more.sample, exact.sample) and more.stats.rounds == 3 * 5  # points + 1 rounds solve a block
    errors = [float((_run(RandomizedMidpoint(blocks=3, points=4, iterations=k), net, sched, x_T, offsets=off).sample
                     - exact.sample).abs().max()) for k in (1, 2, 3, 4)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 10, errors


def test_converges_to_the_closed_form_probability_flow_map_as_the_grid_is_refined():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    x_T = _x_T(512)
    a_T = sched.alphas_cumprod.double()[99]
    exact = MU + S * (x_T.double() - a_T.sqrt() * MU) / (a_T * S**2 + 1 - a_T).sqrt()
    errors = []
    for points in (2, 4, 8, 16):
        sampler = RandomizedMidpoint(blocks=4, points=points, iterations=points + 1)
        out = _run(sampler, den, sched, x_T, offsets=_offsets(sampler.steps, 512)).sample
        errors.append(float((out.double() - exact).abs().mean()))
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.003 and errors[-1] < errors[0] / 8, errors


def test_one_batched_call_per_round_over_the_block_start_and_its_nodes():
    sched = make_scheduler("ddim", 16)
    counting = CountingDenoiser(SmoothNetDenoiser(8, scheduler=sched))
    out = _run(RandomizedMidpoint(blocks=3, points=4, iterations=3), counting, sched, _x_T(3), offsets=_offsets(12, 3))
    assert counting.calls == [5 * 3] * 9
    assert out.stats.rounds == 9 and out.stats.nfe == 9 * 5


def test_sample_prediction_networks_give_the_same_answer():
    eps_sched, x0_sched = make_scheduler("ddpm"), make_scheduler("ddpm")
    x0_sched.register_to_config(prediction_type="sample")
    den = GaussianDenoiser(eps_sched, MU, S)
    x0_net = SamplePredictionDenoiser(den, eps_sched)
    x_T, off = _x_T(4), _offsets(8, 4)
    a = _run(RandomizedMidpoint(blocks=2, points=4, iterations=5), den, eps_sched, x_T, offsets=off).sample
    b = _run(RandomizedMidpoint(blocks=2, points=4, iterations=5), x0_net, x0_sched, x_T, offsets=off).sample
    assert torch.allclose(a, b, atol=1e-4)


def test_inpainted_entries_are_kept():
    sched = make_scheduler("ddim", 8)
    shape = (2, 8, 4)
    cond_data = torch.full(shape, 0.3)
    cond_mask = torch.zeros(shape, dtype=torch.bool)
    cond_mask[:, :2, 2:] = True
    draws = draw_noises(sched, shape, torch.Generator().manual_seed(2))
    out = _run(RandomizedMidpoint(blocks=2, points=3), SmoothNetDenoiser(32, scheduler=sched), sched, draws.x_T,
               cond_data=cond_data, cond_mask=cond_mask, offsets=_offsets(6, 2))
    assert torch.equal(out.sample[cond_mask], cond_data[cond_mask])


def test_policy_draws_the_nodes_after_x_T_and_the_noises():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    policy.set_sampler("randomized_midpoint", blocks=2, points=3, iterations=2)
    obs = {k: torch.zeros(2, policy.spec.n_obs_steps, *shape) for k, shape in policy.spec.obs_shapes.items()}
    got = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]
    again = policy.predict_action(obs, generator=torch.Generator().manual_seed(5))["action_pred"]
    other = policy.predict_action(obs, generator=torch.Generator().manual_seed(6))["action_pred"]
    assert torch.equal(got, again) and not torch.equal(got, other)

    problem = policy.prepare(obs, generator=torch.Generator().manual_seed(5))
    generator = torch.Generator().manual_seed(5)
    draws = draw_noises(problem.rule, tuple(problem.x_T.shape), generator)
    assert torch.equal(problem.x_T, draws.x_T)
    assert torch.equal(problem.extra["offsets"], torch.rand(6, 2, generator=generator))
    with torch.no_grad():
        assert torch.equal(policy.decode(policy.sampler.sample(problem))["action_pred"], got)


def test_bad_settings_and_offsets_are_one_clear_error():
    with pytest.raises(SamplerConfigError, match="randomized_midpoint points must be an integer >= 1"):
        make_sampler("randomized_midpoint", points=0)
    sched = make_scheduler("ddim", 8)
    with pytest.raises(SamplerConfigError, match=r"offsets must be \(20, 2\) values in \[0, 1\]"):
        _run(RandomizedMidpoint(blocks=5, points=4), SmoothNetDenoiser(8, scheduler=sched), sched, _x_T(2),
             offsets=torch.rand(20, 3))
