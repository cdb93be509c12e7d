"""The captured (CUDA-graph) execution of the round kernels, run on the CPU without capture.

On a GPU ``GraphExecutor`` captures a kernel once per key and replays it, with fixed-width
windows and conditioning in buffers it owns; here ``RunWithoutCapture`` does everything but
the capture, so the padding, buffer reuse and fixed shapes are checked without a GPU (the
capture itself is checked by tests/test_gpu.py).
"""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import parapolicy
from parapolicy.acceleration import GraphExecutor
from parapolicy.policy import BoundDenoiser
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import (DenoisingProblem, NewtonPicard, Picard, PIADM, RandomizedMidpoint, Sequential,
                                 draw_noises, make_step_rule)
from tests.support.capture import RunWithoutCapture
from tests.support.helpers import DP_SCHEDULE, make_scheduler


@pytest.fixture(scope="module")
def toy():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    cond = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    return policy.model, cond


def _problems(toy, kind, steps, seed, network=None):
    """One problem (toy network, batch 3) run eagerly and by a capturing executor (``network`` stands in)."""
    model, cond = toy
    rule = make_step_rule(make_scheduler(kind, steps=steps))
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(seed))
    eager = DenoisingProblem(BoundDenoiser(model, global_cond=cond), rule, draws.x_T, draws.noises)
    executor = GraphExecutor(RunWithoutCapture(), network or model, {"global_cond": cond}, "cpu")
    return eager, eager.replace(executor=executor)


@pytest.mark.parametrize("kind,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
def test_step_coefficients_give_the_bits_of_diffusers_step(kind, eta):
    sched = make_scheduler(kind)
    rule = make_step_rule(sched, eta=eta)
    n = rule.num_steps
    g = torch.Generator().manual_seed(1)
    x, eps = 2 * torch.randn(n, 3, 16, 2, generator=g), torch.randn(n, 3, 16, 2, generator=g)
    noise = torch.stack([torch.randn(3, 16, 2, generator=torch.Generator().manual_seed(100 + i)) for i in range(n)])
    expected = []
    for i, t in enumerate(sched.timesteps):  # diffusers' own step, drawing its noise from the same seed
        kwargs = {"eta": eta} if kind == "ddim" else {}
        out = sched.step(eps[i], t, x[i], generator=torch.Generator().manual_seed(100 + i), **kwargs).prev_sample
        expected.append(out)
    used = noise if any(rule.draws_noise) else None
    assert torch.equal(rule.transition(torch.arange(n), x, eps, used), torch.stack(expected))


@pytest.mark.parametrize("kind,eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 0.7)])
def test_step_partials_are_the_transitions_derivatives(kind, eta):
    """The closed-form partials the Newton propagation uses equal autograd's, clipped entries and
    the clipping range's edges included."""
    rule = make_step_rule(make_scheduler(kind), eta=eta)
    coefficients, n = rule.coefficients, rule.num_steps
    g = torch.Generator().manual_seed(2)
    x, eps = 2 * torch.randn(n, 3, 16, 2, generator=g), torch.randn(n, 3, 16, 2, generator=g)
    noise = torch.randn(n, 3, 16, 2, generator=g) if any(rule.draws_noise) else None
    eps[:, 0, 0], x[:, 0, 0] = 0.0, torch.stack([coefficients.x_scale, -coefficients.x_scale], -1)  # x0 on the edges
    steps, ones = torch.arange(n), torch.ones_like(x)
    _, along_x = torch.func.jvp(lambda v: coefficients.transition(steps, v, eps, noise), (x,), (ones,))
    _, along_eps = torch.func.jvp(lambda v: coefficients.transition(steps, x, v, noise), (eps,), (ones,))
    nxt, partial_x, partial_eps, sides = coefficients.linearised(steps, x, eps, noise)
    assert torch.equal(nxt, coefficients.transition(steps, x, eps, noise))
    x0 = (x - coefficients.eps_scale.view(-1, 1, 1, 1) * eps) / coefficients.x_scale.view(-1, 1, 1, 1)
    assert coefficients.clip is not None and bool((x0.abs() > coefficients.clip).any())  # clipping is exercised
    assert torch.equal(sides, torch.where(x0.abs() < coefficients.clip, 0.0, x0.sign()))  # kept, or clipped which way
    assert torch.allclose(partial_x, along_x, rtol=1e-6, atol=1e-7)
    assert torch.allclose(partial_eps, along_eps, rtol=1e-6, atol=1e-7)


def test_multistep_rules_have_no_coefficients():
    assert not make_step_rule(make_scheduler("dpm")).graphable


@pytest.mark.parametrize("kind,window,newton", [("ddpm", 30, False), ("ddpm", 7, False), ("ddpm", 30, True),
                                                ("ddim", 5, True)])
def test_captured_picard_round_matches_the_eager_sampler(toy, kind, window, newton):
    eager, captured = _problems(toy, kind, 30 if kind == "ddpm" else None, 2)
    sampler = (NewtonPicard if newton else Picard)(window=window, tolerance=1e-3)
    with torch.no_grad():
        want = sampler.sample(eager)
        got = sampler.sample(captured)
        again = sampler.sample(captured)  # buffers reused: no state leaks
    assert got.stats.rounds == want.stats.rounds and got.stats.nfe == want.stats.nfe
    assert got.stats.captured and not want.stats.captured
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.eps, want.eps, rtol=1e-5, atol=1e-5)
    assert torch.equal(again.sample, got.sample) and len(captured.executor.graphs.built) == 1


@pytest.mark.parametrize("sampler", [PIADM(blocks=3, points=4, iterations=3, mode="sde"),
                                     PIADM(blocks=2, points=5, iterations=2, mode="ode"),
                                     RandomizedMidpoint(blocks=3, points=4, iterations=3)], ids=str)
def test_captured_continuous_time_blocks_match_the_eager_sampler(toy, sampler):
    """PIADM and the randomized midpoint run their rounds as captured kernels on their own
    grid (float timesteps, per-call Brownian draws or random nodes in buffers)."""
    eager, captured = _problems(toy, "ddpm", 30, 5)
    runs = []
    for seed in (0, 1):  # a second call reuses the captured kernel with new draws
        extra = sampler.extra_draws(eager.x_T, torch.Generator().manual_seed(seed))
        with torch.no_grad():
            runs.append([sampler.sample(p.replace(extra=extra)) for p in (eager, captured)])
    for want, got in runs:
        assert got.stats.rounds == want.stats.rounds == sampler.blocks * sampler.iterations
        assert got.stats.captured and not want.stats.captured
        torch.testing.assert_close(got.sample, want.sample, rtol=1e-5, atol=1e-5)
    if sampler.extra_draws(eager.x_T, None):  # new draws, new answer from the same captured kernel
        assert not torch.allclose(runs[0][1].sample, runs[1][1].sample)
    assert len(captured.executor.graphs.built) == 1


def test_captured_sequential_chain_matches_the_eager_loop(toy):
    eager, captured = _problems(toy, "ddpm", 20, 3)
    with torch.no_grad():
        want, got = Sequential().sample(eager), Sequential().sample(captured)
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-6, atol=1e-6)
    assert got.stats.nfe == 20 and got.stats.captured


def test_captured_picard_falls_back_to_sequential_on_nan(toy):
    model, cond = toy

    def nan_when_batched(x, t, **c):  # finite one step at a time, NaN in a window
        out = model(x, t, **c)
        return out * float("nan") if x.shape[0] > 3 else out

    eager, captured = _problems(toy, "ddpm", 20, 4, network=nan_when_batched)
    with torch.no_grad():
        result = Picard(window=20, tolerance=1e-3).sample(captured)
        want = Sequential().sample(eager)
    assert result.stats.fallback == "sequential: non-finite values in Picard round 1"
    assert torch.equal(result.sample, want.sample)


def test_ddim_with_eta_converges_to_upstreams_ddim_eta_answer():
    """Upstream DDIM policies may pass eta > 0: x_T, then one draw per step, all exact samplers agree."""
    from tests.support.helpers import SmoothNetDenoiser, upstream_conditional_sample

    sched = DDIMScheduler(**DP_SCHEDULE, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(16)
    rule = make_step_rule(sched, eta=0.5)
    net = SmoothNetDenoiser(32)
    expected = upstream_conditional_sample(net, sched, (3, 16, 2), torch.Generator().manual_seed(9), eta=0.5)
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(9))
    problem = DenoisingProblem(net, rule, draws.x_T, draws.noises)
    assert torch.equal(Sequential().sample(problem).sample, expected)
    for sampler in (Picard(window=16, tolerance=1e-4), NewtonPicard(window=16, tolerance=1e-4)):
        assert (sampler.sample(problem).sample - expected).abs().max() < 1e-4, sampler.name


def test_noises_a_rule_will_not_use_are_rejected():
    from parapolicy.errors import SamplerConfigError

    sched = DDIMScheduler(**DP_SCHEDULE, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(8)
    with_eta = draw_noises(make_step_rule(sched, eta=1.0), (2, 16, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SamplerConfigError, match="noises were given but this step rule draws none"):
        DenoisingProblem(lambda x, t: x, sched, with_eta.x_T, with_eta.noises)


def test_eta_on_a_scheduler_without_it_is_refused():
    from parapolicy.errors import UnsupportedSchedulerError

    sched = DDPMScheduler(**DP_SCHEDULE)
    sched.set_timesteps(10)
    with pytest.raises(UnsupportedSchedulerError, match="eta=0.5 is DDIM's setting; DDPMScheduler takes none"):
        make_step_rule(sched, eta=0.5)
