"""The CUDA-graph samplers' logic, run eagerly on the CPU: same rounds and answers as the eager samplers.

On a GPU ``GraphedDenoiser.captured`` captures the round function once and replays it;
here a stand-in runs the same function directly, so everything but the capture is checked
without a GPU (the capture itself is checked by tests/test_gpu.py).
"""

import pytest
import torch
from helpers import make_scheduler

import parapolicy
from parapolicy.policy import BoundDenoiser
from parapolicy.rollout import ASSETS_DIR
from parapolicy.samplers import draw_noises, make_step_rule
from parapolicy.samplers.graphed import sample_picard_graphed, sample_sequential_graphed
from parapolicy.samplers.picard import sample_picard
from parapolicy.samplers.sequential import sample_sequential


class RunWithoutCapture:
    """``captured`` as on a GPU, minus the graph: build once per key, replay = call."""

    def __init__(self):
        self.built = {}

    def captured(self, key, build, device):
        if key not in self.built:
            self.built[key] = build()
        return self.built[key]


@pytest.fixture(scope="module")
def toy():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    cond = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    return policy.model, cond


def _denoisers(model, cond):
    eager = BoundDenoiser(model, model, None, global_cond=cond)
    graphed = BoundDenoiser(model, model, RunWithoutCapture(), global_cond=cond)
    return eager, graphed


@pytest.mark.parametrize("kind", ["ddpm", "ddim"])
def test_step_coefficients_give_the_bits_of_diffusers_step(kind):
    rule = make_step_rule(make_scheduler(kind))
    n = rule.num_steps
    g = torch.Generator().manual_seed(1)
    x, eps = 2 * torch.randn(n, 3, 16, 2, generator=g), torch.randn(n, 3, 16, 2, generator=g)
    noise = torch.randn(n, 3, 16, 2, generator=g) if any(rule.draws_noise) else None
    expected, _ = rule.transition(0, x, eps, noise)
    got = rule.step_coefficients("cpu").transition(torch.arange(n), x, eps, noise)
    assert torch.equal(got, expected)


def test_multistep_rules_have_no_coefficients():
    assert make_step_rule(make_scheduler("dpm")).step_coefficients("cpu") is None


@pytest.mark.parametrize("kind,window,newton", [("ddpm", 30, False), ("ddpm", 7, False), ("ddpm", 30, True),
                                                ("ddim", 5, True)])
def test_graphed_picard_round_matches_the_eager_sampler(toy, kind, window, newton):
    model, cond = toy
    rule = make_step_rule(make_scheduler(kind, steps=30 if kind == "ddpm" else None))
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(2))
    eager, graphed = _denoisers(model, cond)
    with torch.no_grad():
        want = sample_picard(eager, rule, draws.x_T, draws.noises, window=window, tolerance=1e-3, newton=newton)
        coefficients = rule.step_coefficients("cpu")
        got = sample_picard_graphed(graphed, rule, coefficients, draws.x_T, draws.noises, window=window,
                                    tolerance=1e-3, newton=newton)
        again = sample_picard_graphed(graphed, rule, coefficients, draws.x_T, draws.noises, window=window,
                                      tolerance=1e-3, newton=newton)  # buffers reused: no state leaks
    assert got.stats["parallel_iters"] == want.stats["parallel_iters"] and got.stats["nfe"] == want.stats["nfe"]
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.extras["eps"], want.extras["eps"], rtol=1e-5, atol=1e-5)
    assert torch.equal(again.sample, got.sample) and len(graphed.graphs.built) == 1


def test_graphed_sequential_chain_matches_the_eager_loop(toy):
    model, cond = toy
    rule = make_step_rule(make_scheduler("ddpm", steps=20))
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(3))
    eager, graphed = _denoisers(model, cond)
    with torch.no_grad():
        want = sample_sequential(eager, rule, draws.x_T, draws.noises)
        got = sample_sequential_graphed(graphed, rule, rule.step_coefficients("cpu"), draws.x_T, draws.noises)
    torch.testing.assert_close(got.sample, want.sample, rtol=1e-6, atol=1e-6)
    assert got.stats["nfe"] == 20


def test_graphed_picard_falls_back_to_sequential_on_nan(toy):
    model, cond = toy

    def nan_when_batched(x, t, **c):  # finite one step at a time, NaN in a window
        out = model(x, t, **c)
        return out * float("nan") if x.shape[0] > 3 else out

    rule = make_step_rule(make_scheduler("ddpm", steps=20))
    draws = draw_noises(rule, (3, 16, 2), torch.Generator().manual_seed(4))
    graphed = BoundDenoiser(model, nan_when_batched, RunWithoutCapture(), global_cond=cond)
    with torch.no_grad():
        result = sample_picard_graphed(graphed, rule, rule.step_coefficients("cpu"), draws.x_T, draws.noises,
                                       window=20, tolerance=1e-3)
        want = sample_sequential(BoundDenoiser(model, model, None, global_cond=cond), rule, draws.x_T, draws.noises)
    assert result.stats["fallback"] == "sequential: non-finite values in Picard round 1"
    assert torch.equal(result.sample, want.sample)
