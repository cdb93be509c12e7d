"""Several window rounds per kernel call (``rounds_per_sync``): the same iterates as one round per sync.

The multi-round kernel keeps acceptance, slide, slot initialisation and counters on the
device; run eagerly and through ``GraphExecutor`` without capture (``RunWithoutCapture``),
it must give the one-round-per-sync driver's rounds, NFE, answer and fallback.
"""

import pytest
import torch
from tests.support.helpers import make_scheduler
from tests.support.capture import RunWithoutCapture

import parapolicy
from parapolicy.acceleration import GraphExecutor
from parapolicy.errors import SamplerConfigError
from parapolicy.policy import BoundDenoiser
from parapolicy.eval.build import ASSETS_DIR
from parapolicy.samplers import DenoisingProblem, NewtonPicard, Picard, draw_noises, make_sampler, make_step_rule
from parapolicy.samplers.kernels import PicardUpdate


@pytest.fixture(scope="module")
def toy():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    cond = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    return policy.model, cond


def _problem(model, cond, kind, steps, seed, inpaint=False, network=None, captured=False):
    rule = make_step_rule(make_scheduler(kind, steps=steps))
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(seed))
    data = mask = None
    if inpaint:
        data = torch.randn(3, 16, 2, generator=torch.Generator().manual_seed(seed + 1))
        mask = torch.zeros(3, 16, 2, dtype=torch.bool)
        mask[:, :4] = True
    problem = DenoisingProblem(BoundDenoiser(network or model, global_cond=cond), rule, draws.x_T, draws.noises,
                               cond_data=data, cond_mask=mask)
    if captured:
        problem = problem.replace(executor=GraphExecutor(RunWithoutCapture(), network or model,
                                                         {"global_cond": cond}, "cpu"))
    return problem


def _same(got, want, k):
    assert (got.stats.rounds, got.stats.nfe) == (want.stats.rounds, want.stats.nfe), k
    assert got.stats.fallback == want.stats.fallback
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.eps, want.eps, rtol=1e-5, atol=1e-5)
    assert abs(got.stats.max_error - want.stats.max_error) <= 1e-4 * (1 + want.stats.max_error)


@pytest.mark.parametrize("kind,steps,window,newton,inpaint", [
    ("ddpm", 20, 7, False, False), ("ddpm", 20, 20, True, True), ("ddim", None, 5, False, True),
    ("ddim", None, 16, True, False)])
def test_k_rounds_per_sync_give_the_one_round_iterates(toy, kind, steps, window, newton, inpaint):
    model, cond = toy
    problem = _problem(model, cond, kind, steps, seed=2, inpaint=inpaint)
    cls = NewtonPicard if newton else Picard
    with torch.no_grad():
        want = cls(window=window, tolerance=1e-3).sample(problem)
        assert want.stats.rounds > 3  # several slides, so slot entry and acceptance are exercised
        for k in (3, 8):
            _same(cls(window=window, tolerance=1e-3, rounds_per_sync=k).sample(problem), want, k)


def test_k_one_through_the_synced_kernel_matches_too(toy):
    """k = 1 normally takes the old path; the synced kernel at k = 1 must agree with it."""
    from parapolicy.samplers.driver import solve_windowed_synced

    model, cond = toy
    problem = _problem(model, cond, "ddpm", 20, seed=3)
    with torch.no_grad():
        want = Picard(window=6, tolerance=1e-3).sample(problem)
        got = solve_windowed_synced(problem, PicardUpdate(), name="picard", window=6, tolerance=1e-3,
                                    rounds_per_sync=1)
    _same(got, want, 1)


def test_synced_rounds_respect_an_initial_guess(toy):
    model, cond = toy
    problem = _problem(model, cond, "ddpm", 20, seed=4)
    with torch.no_grad():
        exact = Picard(window=20, tolerance=1e-4).sample(problem)
        guess = torch.cat([problem.x_T[None], exact.sample.expand(20, *exact.sample.shape)])  # not the trajectory
        warm = problem.replace(init_guess=guess)
        want = Picard(window=8, tolerance=1e-3).sample(warm)
        got = Picard(window=8, tolerance=1e-3, rounds_per_sync=4).sample(warm)
    assert got.stats.initial_guess
    _same(got, want, 4)


def test_captured_multi_round_kernel_is_one_build_and_reusable(toy):
    model, cond = toy
    eager = _problem(model, cond, "ddpm", 20, seed=5, inpaint=True)
    captured = _problem(model, cond, "ddpm", 20, seed=5, inpaint=True, captured=True)
    sampler = NewtonPicard(window=8, tolerance=1e-3, rounds_per_sync=4)
    with torch.no_grad():
        want = NewtonPicard(window=8, tolerance=1e-3).sample(eager)
        got = sampler.sample(captured)
        again = sampler.sample(captured)  # buffers, counters and the secant memory are reset per call
    assert got.stats.captured
    _same(got, want, 4)
    assert torch.equal(again.sample, got.sample) and again.stats.rounds == got.stats.rounds
    assert len(captured.executor.graphs.built) == 1


def test_rounds_are_counted_once_per_sync_by_the_callback(toy):
    model, cond = toy
    events = []
    problem = _problem(model, cond, "ddpm", 20, seed=6).replace(callback=events.append)
    with torch.no_grad():
        result = Picard(window=7, tolerance=1e-3, rounds_per_sync=3).sample(problem)
    assert [e["round"] for e in events] == [min(3 * (i + 1), result.stats.rounds) for i in range(len(events))]
    assert sum(e["accepted"] for e in events) == 20 and len(events) == -(-result.stats.rounds // 3)


@pytest.mark.parametrize("captured", [False, True])
def test_non_finite_values_fall_back_at_the_same_round(toy, captured):
    model, cond = toy
    calls = []

    def nan_on_third_window(x, t, **c):  # finite one step at a time and in the first two windows
        out = model(x, t, **c)
        if x.shape[0] > 3:
            calls.append(1)
            if len(calls) >= 3:
                return out * float("nan")
        return out

    with torch.no_grad():
        calls.clear()
        want = Picard(window=5, tolerance=1e-3).sample(_problem(model, cond, "ddpm", 20, 7, network=nan_on_third_window))
        calls.clear()
        problem = _problem(model, cond, "ddpm", 20, 7, network=nan_on_third_window, captured=captured)
        got = Picard(window=5, tolerance=1e-3, rounds_per_sync=4).sample(problem)
    assert want.stats.fallback == "sequential: non-finite values in Picard round 3"
    _same(got, want, 4)


def test_rounds_per_sync_is_checked_and_reported():
    with pytest.raises(SamplerConfigError, match="rounds_per_sync must be an integer >= 1, got 0"):
        make_sampler("picard", rounds_per_sync=0)
    assert make_sampler("newton_picard", rounds_per_sync=4).config() == {
        "name": "newton_picard", "window": 100, "tolerance": 0.002, "rounds_per_sync": 4, "max_rows": 64}
    assert "rounds_per_sync" not in make_sampler("picard").config()
