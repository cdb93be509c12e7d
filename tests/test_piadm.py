"""PIADM block Picard: exact once each block gets enough iterations, and better with more."""

import pytest
import torch
from helpers import CountingDenoiser, GaussianDenoiser, SmoothNetDenoiser, make_scheduler, solve
from test_analytic import MU, S, _affine_steps

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers import PIADM, Sequential, draw_noises, make_sampler


def _setup(kind, batch=3):
    sched = make_scheduler(kind)
    net = SmoothNetDenoiser(32, seed=4, scheduler=sched)
    draws = draw_noises(sched, (batch, 16, 2), torch.Generator().manual_seed(2))
    return sched, net, draws


def test_sde_mode_with_enough_iterations_is_the_sequential_ddpm_answer():
    sched, net, draws = _setup("ddpm")
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    counting = CountingDenoiser(net)
    out = solve(PIADM(block_size=10, iterations=10), counting, sched, draws.x_T, draws.noises)
    assert (out.sample - ref).abs().max() / ref.abs().max() < 2e-6
    assert out.stats.rounds == len(counting.calls) == 10 * 10  # 10 blocks x 10 iterations
    assert counting.calls[0] == 10 * 3


def test_error_shrinks_as_inner_iterations_grow():
    sched, net, draws = _setup("ddpm")
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    errors = [float((solve(PIADM(block_size=20, iterations=k), net, sched, draws.x_T, draws.noises).sample - ref)
                    .abs().max()) for k in (1, 3, 8, 20)]
    assert errors[-1] < 1e-5 and errors[0] > errors[1] > errors[2] > errors[-1]


def test_ode_mode_is_ddim_on_the_same_grid_and_matches_the_closed_form():
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (64, 2), torch.Generator().manual_seed(0))
    x = draws.x_T.double()
    for a, c, _ in _affine_steps(sched, stochastic=False):
        x = a * x + c
    den = GaussianDenoiser(sched, MU, S)
    ddpm16 = make_scheduler("ddpm", 16)  # the same grid; ODE mode turns it into DDIM
    ddpm_draws = draw_noises(ddpm16, (64, 2), torch.Generator().manual_seed(0))  # same x_T, plus SDE noises
    out = solve(PIADM(block_size=4, iterations=4, mode="ode"), den, ddpm16, ddpm_draws.x_T, ddpm_draws.noises)
    assert (out.sample.double() - x).abs().max() < 2e-5


def test_piadm_by_name_and_bad_settings():
    assert make_sampler("piadm", block_size=5, iterations=2, mode="ode").config()["mode"] == "ode"
    with pytest.raises(SamplerConfigError, match="piadm iterations must be an integer >= 1"):
        make_sampler("piadm", iterations=0)
    with pytest.raises(SamplerConfigError, match="piadm mode must be 'sde' or 'ode'"):
        make_sampler("piadm", mode="euler")


def test_piadm_on_a_loaded_policy(tmp_path):
    from dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint

    import parapolicy

    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    policy = parapolicy.load_policy(tmp_path / "p.ckpt")
    obs = sample_obs(cfg, batch=2)
    seq = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    exact = policy.set_sampler("piadm", block_size=5, iterations=5).predict_action(
        obs, generator=torch.Generator().manual_seed(0))
    assert (exact["action"] - seq).abs().max() < 1e-4 and exact["stats"]["rounds"] == 20
    ode = policy.set_sampler("piadm", block_size=5, iterations=5, mode="ode").predict_action(
        obs, generator=torch.Generator().manual_seed(0))
    assert ode["action"].shape == seq.shape and torch.isfinite(ode["action"]).all()


def test_a_multistep_scheduler_gets_a_clear_error():
    from parapolicy.errors import UnsupportedSchedulerError

    sched = make_scheduler("dpm")
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedSchedulerError, match="DPMSolverMultistepScheduler is a multistep solver"):
        solve(PIADM(), SmoothNetDenoiser(16, seed=0, scheduler=sched), sched, draws.x_T, draws.noises)
