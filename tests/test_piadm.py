"""PIADM in continuous time: the grid is the trained schedule read as a VP process, enough
sweeps give the sequential exponential integrator, and the output distribution approaches
the closed-form Gaussian target as the grid is refined."""

import pytest
import torch
from tests.support.helpers import (CountingDenoiser, GaussianDenoiser, SamplePredictionDenoiser, SmoothNetDenoiser,
                     make_scheduler, solve)

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers import PIADM, draw_noises, make_sampler, make_step_rule
from parapolicy.samplers.continuous_time import alpha_bar_at, grid_levels, grid_rule, ou_time

MU, S = 0.2, 0.15


def _run(sampler, denoise, scheduler, x_T, cond_data=None, cond_mask=None, **extra):
    """The sampler on a problem with the scheduler's own per-step draws (PIADM leaves them unused)."""
    noises = draw_noises(scheduler, tuple(x_T.shape), torch.Generator().manual_seed(9)).noises
    return solve(sampler, denoise, scheduler, x_T, noises, cond_data, cond_mask, **extra)


def _x_T(batch, shape=(4, 2), seed=0):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed))


def _pf_ode_map(sched, x_T):
    """Data N(MU, S^2): the probability-flow ODE maps x_T affinely onto the data distribution."""
    a_T = sched.alphas_cumprod.double()[int(sched.timesteps[0])]
    return MU + S * (x_T.double() - a_T.sqrt() * MU) / (a_T * S**2 + 1 - a_T).sqrt()


def _sequential_integrator(rule, net, x_T, brownian=None):
    """The grid's exponential integrator one step at a time, written out (DDIM / DDPM-posterior
    moves between levels, the clean estimate clipped to [-1, 1] as the scheduler clips it)."""
    x = x_T.double()
    levels = rule.levels
    for j in range(rule.num_steps):
        a, b = levels[j], levels[j + 1]
        eps = net(x.float(), rule.timesteps[j].expand(x.shape[0])).double()
        clean = ((x - (1 - a).sqrt() * eps) / a.sqrt()).clamp(-1, 1)
        if brownian is None:
            x = b.sqrt() * clean + (1 - b).sqrt() * eps
        else:
            keep = a / b
            x = (b.sqrt() * (1 - keep) / (1 - a)) * clean + (keep.sqrt() * (1 - b) / (1 - a)) * x \
                + ((1 - b) / (1 - a) * (1 - keep)).sqrt() * brownian[j].double()
    return x


def test_grid_runs_from_the_first_trained_timestep_to_clean_data_with_steps_shrinking_towards_it():
    sched = make_scheduler("ddpm")
    ac = sched.alphas_cumprod.double()
    levels = grid_levels(ac, 99.0, 18)
    assert levels.shape == (19,) and levels[-1] == 1.0
    assert torch.allclose(levels[[0, -2]], ac[[99, 0]], rtol=1e-12)
    rule = grid_rule(make_step_rule(sched), 18, sde=False)
    assert rule.timesteps[0] == 99 and abs(float(rule.timesteps[-1])) < 1e-4 and rule.timesteps.dtype == torch.float32
    # interpolated, not snapped: the network is told the continuous timestep of each level
    assert torch.allclose(alpha_bar_at(ac, rule.timesteps.double()), levels[:-1], rtol=1e-5)
    assert not torch.equal(rule.timesteps, rule.timesteps.round())
    s = ou_time(levels[:-1])
    lengths = s[:-1] - s[1:]
    assert (lengths[1:] < lengths[:-1] + 1e-12).all(), lengths  # every step no longer than the one before
    tail = s[-7:]  # within the last unit of OU time the steps are geometric
    ratios = tail[1:] / tail[:-1]
    assert float(ratios.max() - ratios.min()) < 0.15, ratios
    assert grid_rule(make_step_rule(sched), 18, sde=False) is not rule  # cached per rule object, not globally
    assert grid_rule(rule_a := make_step_rule(sched), 18, sde=True) is grid_rule(rule_a, 18, sde=True)


def test_the_network_is_called_once_per_sweep_at_the_grid_timesteps():
    sched = make_scheduler("ddpm")
    seen = []

    def net(x, t):
        seen.append(t.clone())
        return GaussianDenoiser(sched, MU, S)(x, t)

    out = _run(PIADM(blocks=3, points=4, iterations=2, mode="ode"), net, sched, _x_T(3))
    rule = grid_rule(make_step_rule(sched), 12, sde=False)
    assert out.stats.rounds == len(seen) == 3 * 2 and out.stats.nfe == 3 * 2 * 4
    assert torch.equal(seen[0], rule.timesteps[:4].repeat_interleave(3))
    assert torch.equal(seen[-1], rule.timesteps[8:].repeat_interleave(3))


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_enough_sweeps_give_the_sequential_exponential_integrator_on_the_grid(mode):
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(8, seed=3, scheduler=sched)
    sampler = PIADM(blocks=3, points=4, iterations=5, mode=mode)
    x_T = _x_T(3)
    extra = sampler.extra_draws(x_T, torch.Generator().manual_seed(1))
    rule = grid_rule(make_step_rule(sched), 12, sde=mode == "sde")
    want = _sequential_integrator(rule, net, x_T, extra.get("brownian"))
    counting = CountingDenoiser(net)
    out = _run(sampler, counting, sched, x_T, **extra)
    assert (out.sample.double() - want).abs().max() < 1e-5
    assert counting.calls == [4 * 3] * 12  # 4 sweeps solve a 4-step block


@pytest.mark.parametrize("mode", ["sde", "ode"])
def test_picard_error_shrinks_with_every_sweep(mode):
    sched = make_scheduler("ddpm")
    net = SmoothNetDenoiser(8, seed=4, scheduler=sched)
    x_T = _x_T(3)
    extra = PIADM(blocks=4, points=6, mode=mode).extra_draws(x_T, torch.Generator().manual_seed(2))
    exact = _run(PIADM(blocks=4, points=6, iterations=6, mode=mode), net, sched, x_T, **extra).sample
    errors = [float((_run(PIADM(blocks=4, points=6, iterations=k, mode=mode), net, sched, x_T, **extra).sample
                     - exact).abs().max()) for k in (1, 2, 4, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 10, errors


def test_ode_converges_to_the_closed_form_probability_flow_map_as_the_grid_is_refined():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    x_T = _x_T(512)
    exact = _pf_ode_map(sched, x_T)
    errors = [float((_run(PIADM(blocks=4, points=p, iterations=p, mode="ode"), den, sched, x_T).sample.double()
                     - exact).abs().mean()) for p in (2, 4, 8, 16)]
    assert errors == sorted(errors, reverse=True), errors
    assert errors[-1] < 0.01 and errors[-1] < errors[0] / 3, errors


def test_sde_output_distribution_approaches_the_gaussian_target_as_the_grid_is_refined():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    x_T = _x_T(2048)
    std_errors = []
    for p in (2, 4, 8, 16):
        sampler = PIADM(blocks=4, points=p, iterations=p, mode="sde")
        out = _run(sampler, den, sched, x_T, **sampler.extra_draws(x_T, torch.Generator().manual_seed(5))).sample
        assert abs(float(out.double().mean()) - MU) < 0.003  # 16k draws: standard error ~0.0012
        std_errors.append(abs(float(out.double().std()) - S))
    # the frozen clean-sample prediction drops variance per step: the deficit shrinks with the step size
    assert std_errors == sorted(std_errors, reverse=True) and std_errors[-1] < std_errors[0] / 3, std_errors


def test_the_sde_uses_its_brownian_draws_and_refuses_missing_ones():
    sched = make_scheduler("ddpm")
    den = GaussianDenoiser(sched, MU, S)
    sampler = PIADM(blocks=2, points=2, iterations=3)
    x_T = _x_T(2)
    a = _run(sampler, den, sched, x_T, **sampler.extra_draws(x_T, torch.Generator().manual_seed(0))).sample
    b = _run(sampler, den, sched, x_T, **sampler.extra_draws(x_T, torch.Generator().manual_seed(1))).sample
    assert not torch.allclose(a, b)
    with pytest.raises(SamplerConfigError, match=r"piadm sde needs its Brownian draws of shape \(4, 2, 4, 2\)"):
        _run(sampler, den, sched, x_T)


def test_sample_prediction_networks_give_the_same_answer():
    eps_sched, x0_sched = make_scheduler("ddpm"), make_scheduler("ddpm")
    x0_sched.register_to_config(prediction_type="sample")
    den = GaussianDenoiser(eps_sched, MU, S)
    x0_net = SamplePredictionDenoiser(den, eps_sched)
    x_T = _x_T(4)
    sampler = PIADM(blocks=2, points=4, iterations=2, mode="sde")
    extra = sampler.extra_draws(x_T, torch.Generator().manual_seed(3))
    a = _run(sampler, den, eps_sched, x_T, **extra).sample
    b = _run(sampler, x0_net, x0_sched, x_T, **extra).sample
    assert torch.allclose(a, b, atol=1e-4)


def test_piadm_by_name_and_bad_settings():
    assert make_sampler("piadm", blocks=3, points=2, iterations=2, mode="ode").config() == {
        "name": "piadm", "blocks": 3, "points": 2, "iterations": 2, "mode": "ode"}
    with pytest.raises(SamplerConfigError, match="piadm iterations must be an integer >= 1"):
        make_sampler("piadm", iterations=0)
    with pytest.raises(SamplerConfigError, match="piadm mode must be 'sde' or 'ode'"):
        make_sampler("piadm", mode="euler")


def test_piadm_on_a_loaded_policy(tmp_path):
    from tests.support.dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint

    import parapolicy

    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    policy = parapolicy.load_policy(tmp_path / "p.ckpt")
    obs = sample_obs(cfg, batch=2)
    for mode in ("sde", "ode"):
        policy.set_sampler("piadm", blocks=3, points=2, iterations=2, mode=mode)
        out = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
        again = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
        assert torch.equal(out["action"], again["action"]) and torch.isfinite(out["action"]).all()
        assert out["stats"]["rounds"] == 6
