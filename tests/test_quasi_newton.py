"""quasi_newton: Newton rounds under a row budget, with modelled network Jacobians.

Checked against closed forms (Gaussian data: every step is affine, the network's Jacobian
is a known scalar per step, and the sequential answer is computed in float64 from the
schedule), against the sequential sampler on a nonlinear denoiser, and by counting the
rows of every network call.
"""

import pytest
import torch
from diffusers import DDPMScheduler
from tests.support.helpers import (DP_SCHEDULE, CountingDenoiser, GaussianDenoiser, SmoothNetDenoiser, inpainting_condition,
                                   make_scheduler, nan_on_batches_above, solve)
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.analytic import MU, S, affine_steps

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers import (DenoisingProblem, QuasiNewton, Sequential, draw_noises, make_sampler, make_step_rule,
                                  quasi_newton)
from parapolicy.samplers.buffers import convergence_weights
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.quasi_newton import PROBE_STEP, STD_FLOOR, StepModels, evaluation_plan


def _closed_form(sched, draws, stochastic):
    x = draws.x_T.double()
    for i, (a, c, sigma) in enumerate(affine_steps(sched, stochastic)):
        x = a * x + c + (sigma * draws.noises[i].double() if stochastic else 0.0)
    return x


@pytest.mark.parametrize("probes", [False, True])
@pytest.mark.parametrize("kind, steps, rows", [("ddpm", 100, 64), ("ddpm", 100, 100), ("ddim", 16, 16)])
def test_converges_to_the_closed_form_sequential_answer(kind, steps, rows, probes):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (3, 16, 2), torch.Generator().manual_seed(3))
    expected = _closed_form(sched, draws, stochastic=kind == "ddpm")
    out = solve(QuasiNewton(tolerance=1e-4, max_rows=rows, probes=probes, reuse_jacobians=False),
                GaussianDenoiser(sched, MU, S), sched, draws.x_T, draws.noises)
    assert out.stats.sampler == "quasi_newton" and out.stats.fallback is None
    assert (out.sample.double() - expected).abs().max() < 5e-5
    assert out.stats.rounds <= {"ddpm": 10, "ddim": 6}[kind]


def test_one_secant_pair_makes_an_affine_step_exact():
    """Gaussian data: the network is affine with slope c_j != the stand-in's, so after one pair the
    multi-secant model is exact and the next round is exact Newton: DDIM-16 in three rounds. A
    thinned first round pairs the steps it skipped a round later (they first borrow a neighbour's
    pair, exact for the neighbour only): four rounds, the same answer."""
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(1))
    den = GaussianDenoiser(sched, MU, S)
    out = solve(QuasiNewton(tolerance=1e-3, probes=False, thin_start=False), den, sched, draws.x_T)
    no_secant = solve(QuasiNewton(tolerance=1e-3, probes=False, thin_start=False, history=1), den, sched, draws.x_T)
    thinned = solve(QuasiNewton(tolerance=1e-3, probes=False, thin_start=True), den, sched, draws.x_T)
    assert out.stats.rounds == 3, out.stats
    assert no_secant.stats.rounds == 3  # one pair is all an affine step needs
    assert thinned.stats.rounds == 4, thinned.stats
    expected = _closed_form(sched, draws, False)
    assert (out.sample.double() - expected).abs().max() < 1e-5
    assert (thinned.sample.double() - expected).abs().max() < 1e-5


@pytest.mark.parametrize("kind, steps, rows, guess, first", [("ddim", 16, 16, False, 8), ("ddim", 15, 64, False, 8),
                                                             ("ddim", 16, 16, True, 16), ("ddpm", 100, 64, False, 64)])
def test_a_cold_start_thins_its_first_round_only_where_the_whole_chain_fits(kind, steps, rows, guess, first):
    """On the CPU (``thin_start`` None) a cold start's first round evaluates every other step when
    the whole chain fits ``max_rows``: a stand-in state's output mostly anchors its step's model, and
    the neighbours' mean models the rest. A caller's guess or a chain beyond the budget is not thinned."""
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(6))
    den = SmoothNetDenoiser(32, seed=2, scheduler=sched)
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises)
    counting = CountingDenoiser(den)
    seed = make_step_rule(sched).trajectory_from_outputs(draws.x_T, draws.noises, ref.eps * 0.9) if guess else None
    problem = DenoisingProblem(counting, sched, draws.x_T, draws.noises, init_guess=seed)
    out = QuasiNewton(tolerance=1e-4, max_rows=rows, reuse_jacobians=False).sample(problem)
    assert counting.calls[0] == first * 2 and out.stats.settings["thin_start"] is True
    assert (out.sample - ref.sample).abs().max() < 1e-4


def test_a_step_first_evaluated_beside_a_paired_one_takes_its_secants():
    """A budgeted round skips steps; when one is first evaluated, its neighbour's secant pairs model
    it (not the stand-in's slope alone), so it need not wait a round for pairs of its own."""
    x_T = torch.zeros(1, 4, 2)
    models = StepModels(None, torch.tensor([0.5, 0.5, 0.5]), x_T, history=2)
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(2, 1, 8, generator=g), torch.randn(2, 1, 8, generator=g)
    models.record(torch.tensor([0, 2]), first, torch.randn(2, 1, 8, generator=g))
    models.record(torch.tensor([0, 2]), second, torch.randn(2, 1, 8, generator=g))
    assert models.count.tolist() == [1, 0, 1]
    models.count[2] = 2  # the neighbour with more pairs is the donor
    models.record(torch.tensor([1]), torch.randn(1, 1, 8, generator=g), torch.randn(1, 1, 8, generator=g))
    assert int(models.count[1]) == 2
    _, jacobian = models.affine(torch.tensor([1, 2]))
    assert torch.equal(jacobian[0], jacobian[1])
    models.record(torch.tensor([1]), torch.randn(1, 1, 8, generator=g), torch.randn(1, 1, 8, generator=g))
    assert int(models.count[1]) == 3  # its own pairs join, and in time replace the borrowed ones


def test_the_host_fits_equal_the_torch_fits():
    """On CPU states the fits run on NumPy views of the model's tensors; the torch path (GPU states,
    a caller's gradient) must fit the same models: pairs, borrowed pairs, slopes and corrections."""
    g = torch.Generator().manual_seed(5)
    x_T = torch.zeros(2, 4, 2)
    host, device = (StepModels(None, torch.full((6,), 0.7), x_T, history=2) for _ in range(2))
    device.views = None  # the torch path
    assert host.views is not None
    for steps in ([0, 2, 4], [0, 2, 4], [1, 2, 3, 4, 5], [2, 3, 4, 5], [3, 4, 5]):
        states, outputs = torch.randn(2, len(steps), 2, 8, generator=g)
        states[0] = host.anchor[steps[0]]  # an unmoved state gains no pair
        for models in (host, device):
            models.record(torch.tensor(steps), states.clone(), outputs.clone())
    for name in ("count", "known", "pairs", "points", "slopes", "left", "right"):
        assert torch.allclose(getattr(host, name), getattr(device, name), atol=1e-6), name
    assert host.count.tolist() == [0, 2, 2, 3, 4, 4]  # step 0 never moved; 1, 3, 5 borrowed, 3 and 5 then paired


@pytest.mark.parametrize("network, rows, most", [("smooth", 64, 9), ("gaussian", 32, 12)])
def test_borrowed_secants_save_rounds_where_the_budget_skips_steps(network, rows, most):
    """DDPM-100 under a row budget below the chain: fewer rounds than pairing every step on its own
    evaluations took (10 and 14 rounds), and still the sequential answer."""
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (3, 16, 2), torch.Generator().manual_seed(3))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched) if network == "smooth" else GaussianDenoiser(sched, MU, S)
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises).sample
    out = solve(QuasiNewton(tolerance=1e-4, max_rows=rows, reuse_jacobians=False), den, sched, draws.x_T, draws.noises)
    assert out.stats.rounds <= most and out.stats.max_rows_per_round <= rows
    assert (out.sample - ref).abs().max() < 1e-5


def test_probed_jacobian_columns_are_the_networks_derivative_and_are_reused():
    """Probes measure d eps/dx by finite differences: for Gaussian data that is c_j times the
    identity, column by column; a second call starts from them and needs no more rounds."""
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(2))
    den = GaussianDenoiser(sched, MU, S)
    sampler = QuasiNewton(tolerance=1e-3, max_rows=64, probes=True)
    first = solve(sampler, den, sched, draws.x_T, draws.noises)
    (store,) = sampler._stores.values()
    alphas = sched.alphas_cumprod[sched.timesteps.long()].double()
    slope = ((1 - alphas).sqrt() / (alphas * S**2 + 1 - alphas)).float()  # d eps/dx of GaussianDenoiser
    measured = store.matrix[99]  # the last step is probed first: all 32 columns in the first spare rows
    assert torch.allclose(measured, slope[99] * torch.eye(32), atol=PROBE_STEP)
    assert bool(store.measured[99].all()) and not bool(store.measured[0].any())  # never probed: the slope stands in
    second = solve(sampler, den, sched, draws.x_T, draws.noises)
    assert second.stats.rounds <= first.stats.rounds and first.stats.fallback is None


@pytest.mark.parametrize("probes", [False, True])
@pytest.mark.parametrize("kind, steps, rows, batch", [("ddpm", 100, 64, 1), ("ddpm", 100, 7, 3), ("ddim", 16, 16, 2),
                                                      ("ddim", 16, 5, 1)])
def test_no_call_exceeds_max_rows_per_sample(kind, steps, rows, batch, probes):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (batch, 16, 2), torch.Generator().manual_seed(4))
    counting = CountingDenoiser(SmoothNetDenoiser(32, scheduler=sched))
    out = solve(QuasiNewton(tolerance=1e-3, max_rows=rows, probes=probes), counting, sched, draws.x_T, draws.noises)
    assert counting.calls and max(counting.calls) <= rows * batch
    assert all(c % batch == 0 for c in counting.calls)
    assert len(counting.calls) == out.stats.rounds
    assert out.stats.nfe == sum(counting.calls) // batch
    assert out.stats.max_rows_per_round == max(counting.calls) // batch
    assert out.stats.as_dict()["rows_per_round"] == pytest.approx(out.stats.nfe / out.stats.rounds)


@settings(max_examples=200, deadline=None)
@given(n_steps=st.integers(1, 300), max_rows=st.integers(1, 128), thin=st.booleans(), data=st.data())
def test_evaluation_plan_is_a_budgeted_sorted_plan_that_starts_at_the_window(n_steps, max_rows, thin, data):
    start = data.draw(st.integers(0, n_steps - 1))
    plan = evaluation_plan(start, n_steps, max_rows, thin=thin).tolist()
    assert plan[0] == start and plan == sorted(set(plan)) and len(plan) <= max_rows
    assert start <= plan[-1] < n_steps
    if n_steps - start <= max_rows:
        assert plan == list(range(start, n_steps, 2 if thin else 1))
    elif n_steps - start < 2 * max_rows:  # every other step reaches the end: no gap wider than one step
        assert plan[-1] >= n_steps - 2 and all(b - a <= 2 for a, b in zip(plan, plan[1:]))


def test_convergence_weights_hold_the_noise_std_at_the_floor():
    """A state is judged against its step's noise std, or the floor where the std is smaller (the
    last DDIM-16 steps: 0.10 and 0.025); the final state still never blocks."""
    rule = make_step_rule(make_scheduler("ddim", 16))
    raw, floored = (convergence_weights(rule, (16, 2), 17, "cpu", std_floor=f) for f in (0.0, STD_FLOOR))
    std = rule.error_variance[:15].sqrt()
    assert torch.allclose(raw[1:16], 1 / (std**2 * 32))
    assert torch.allclose(floored[1:16], 1 / (std.clamp(min=STD_FLOOR) ** 2 * 32))
    assert bool((std[-2:] < STD_FLOOR).all()) and bool((floored[-3:-1] < raw[-3:-1]).all())
    assert raw[0] == floored[0] == raw[16] == floored[16] == 0


def test_the_floor_spares_the_last_round_and_keeps_the_answer_within_its_tolerance(monkeypatch):
    """DDPM-100's low-noise steps (from step 59) have noise stds below the floor, down to 0.02: judged
    against those, their states need a round more on a smooth nonlinear network; judged against the floor, the answer still lies within
    tolerance x STD_FLOOR of the sequential one."""
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(0))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises).sample
    sampler = QuasiNewton(tolerance=0.01, reuse_jacobians=False)
    floored = solve(sampler, den, sched, draws.x_T, draws.noises)
    monkeypatch.setattr(quasi_newton, "STD_FLOOR", 0.0)
    raw = solve(sampler, den, sched, draws.x_T, draws.noises)
    assert floored.stats.rounds == raw.stats.rounds - 1, (floored.stats, raw.stats)
    assert (floored.sample - ref).abs().max() < 0.01 * STD_FLOOR


def test_nonlinear_denoiser_reaches_the_sequential_answer_as_tolerance_shrinks():
    sched = make_scheduler("ddpm", 50)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(5))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises).sample
    errors = []
    for tol in (1.0, 0.1, 1e-3):
        out = solve(QuasiNewton(tolerance=tol, reuse_jacobians=False), den, sched, draws.x_T, draws.noises)
        errors.append(float((out.sample - ref).abs().max()))
        assert out.stats.rounds < 25
    assert errors[-1] < 1e-4 and errors[-1] <= errors[0]


def test_an_exact_initial_guess_is_certified_in_one_round():
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(6))
    den = SmoothNetDenoiser(32, seed=2, scheduler=sched)
    seq = solve(Sequential(), den, sched, draws.x_T, draws.noises)
    guess = make_step_rule(sched).trajectory_from_outputs(draws.x_T, draws.noises, seq.eps)
    out = QuasiNewton(max_rows=100).sample(DenoisingProblem(den, sched, draws.x_T, draws.noises, init_guess=guess))
    assert out.stats.rounds == 1 and out.stats.initial_guess and out.stats.settings["start"] == "warm"
    assert (out.sample - seq.sample).abs().max() < 1e-5


def test_inpainted_entries_are_held_and_the_answer_is_sequentials():
    sched = make_scheduler("ddpm", 50)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(7))
    cond_data, cond_mask = inpainting_condition((2, 16, 2))
    den = SmoothNetDenoiser(32, seed=3, scheduler=sched)
    ref = solve(Sequential(), den, sched, draws.x_T, draws.noises, cond_data, cond_mask).sample
    out = solve(QuasiNewton(tolerance=1e-3), den, sched, draws.x_T, draws.noises, cond_data, cond_mask)
    assert torch.equal(out.sample[cond_mask], cond_data[cond_mask])
    assert (out.sample - ref).abs().max() < 1e-3


def test_nan_in_a_parallel_round_falls_back_to_the_sequential_chain():
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(8))
    net = SmoothNetDenoiser(32, scheduler=sched)
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    out = solve(QuasiNewton(), nan_on_batches_above(net, 2), sched, draws.x_T, draws.noises)
    assert out.stats.fallback.startswith("sequential: non-finite values in Picard round 1")
    assert torch.equal(out.sample, ref) and out.stats.max_rows_per_round == 64


def bad_on_call(net, call: int, value: float):
    """``net``, its ``call``-th output (counting from 1) ``value`` everywhere (NaN, or +inf: one sign, so
    that no sum of two outputs is NaN)."""
    calls = []

    def denoise(x, t):
        calls.append(1)
        eps = net(x, t)
        return torch.full_like(eps, value) if len(calls) == call else eps

    return denoise


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_round_on_the_gpus_path_falls_back_in_that_round(value):
    """On the GPU path the outputs' finiteness is read with the round's changes, after the fits and the
    scan ran on them: the round that met NaN or inf falls back, and the answer is the sequential
    chain's. An inf output is caught too, though DDPM's clipping turns it into finite states."""
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(8))
    net = SmoothNetDenoiser(32, scheduler=sched)
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    sampler = QuasiNewton(scan=True, probes=True, thin_start=False)
    out = solve(sampler, bad_on_call(net, 1, value), sched, draws.x_T, draws.noises)
    assert out.stats.fallback.startswith("sequential: non-finite values in Picard round 1")
    assert torch.equal(out.sample, ref)


def test_a_probing_round_that_fails_leaves_the_store_as_it_found_it(monkeypatch):
    """The Jacobian store outlives the call: a round whose outputs turn out not finite (read at its
    end on the GPU's path), or that raises, puts back the columns it overwrote, measured ones
    included, so the next call starts from what the calls before measured."""
    sched = make_scheduler("ddpm", 50)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(8))
    net = SmoothNetDenoiser(32, scheduler=sched)
    ref = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    sampler = QuasiNewton(scan=True, probes=True, thin_start=False)
    solve(sampler, net, sched, draws.x_T, draws.noises)  # measures some columns
    (store,) = sampler._stores.values()
    before = store.matrix.clone(), store.measured.clone()
    assert bool(before[1].any())
    out = solve(sampler, bad_on_call(net, 2, float("nan")), sched, draws.x_T, draws.noises)  # round 2 probes
    assert out.stats.fallback.startswith("sequential: non-finite values in Picard round 2")
    assert torch.equal(out.sample, ref)
    assert torch.equal(store.matrix, before[0]) and torch.equal(store.measured, before[1])

    record, calls = StepModels.record, []

    def failing(self, *args, **kwargs):  # in round 2, after its probes were written
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return record(self, *args, **kwargs)

    monkeypatch.setattr(StepModels, "record", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        solve(sampler, net, sched, draws.x_T, draws.noises)
    assert torch.equal(store.matrix, before[0]) and torch.equal(store.measured, before[1])


def test_bad_settings_and_multistep_schedulers_are_one_clear_error():
    with pytest.raises(SamplerConfigError, match="quasi_newton max_rows must be an integer >= 1, got 0"):
        make_sampler("quasi_newton", max_rows=0)
    with pytest.raises(SamplerConfigError, match="quasi_newton probes must be true, false or null, got 'yes'"):
        QuasiNewton(probes="yes")
    with pytest.raises(SamplerConfigError, match="quasi_newton thin_start must be true, false or null, got 1"):
        QuasiNewton(thin_start=1)
    with pytest.raises(SamplerConfigError, match="quasi_newton scan must be true, false or null, got 'on'"):
        QuasiNewton(scan="on")
    with pytest.raises(SamplerConfigError, match="quasi_newton tolerance must be a finite number"):
        QuasiNewton(tolerance=float("nan"))
    sched = make_scheduler("dpm")
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(0))
    with pytest.raises(SamplerConfigError, match="needs a one-step scheduler .* DPMSolverMultistepScheduler"):
        solve(QuasiNewton(), GaussianDenoiser(sched), sched, draws.x_T, draws.noises)


@pytest.mark.parametrize("kind, steps, inpaint", [("ddpm", 100, False), ("ddim", 16, False), ("ddpm", 50, True)])
def test_the_gpus_path_forced_on_the_cpu_reaches_the_sequential_answer(kind, steps, inpaint):
    """``scan=True`` (the CUDA default: closed-form cold start, linearised scans, probes, a whole first
    round) gives the sequential answer on a nonlinear network, inpainted or not, within the row budget."""
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(3))
    cond_data, cond_mask = inpainting_condition((2, 16, 2)) if inpaint else (None, None)
    net = SmoothNetDenoiser(32, seed=5, scheduler=sched)
    ref = Sequential().sample(DenoisingProblem(net, sched, draws.x_T, draws.noises, cond_data, cond_mask)).sample
    den = CountingDenoiser(net)
    problem = DenoisingProblem(den, sched, draws.x_T, draws.noises, cond_data, cond_mask)
    out = QuasiNewton(tolerance=1e-4, scan=True, probes=True, thin_start=False, reuse_jacobians=False).sample(problem)
    assert out.stats.settings["scan"] is True and out.stats.fallback is None
    assert max(den.calls) <= 64 * 2 and out.stats.max_rows_per_round <= 64
    assert (out.sample - ref).abs().max() < 1e-4


@pytest.mark.parametrize("seed", [3, 4])
def test_the_gpus_scans_follow_a_sharp_networks_clipping_and_need_the_step_loops_rounds(seed):
    """A scan linearises each step's clipping where it stands; on a sharp network clean-sample
    predictions cross the clipping range along the scanned chain, which one scan misses (20-21
    rounds here). Scanning again until the pattern holds gives the models' own chain, as the CPU's
    step loop does, and its rounds (7-8)."""
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (1, 16, 2), torch.Generator().manual_seed(seed))
    net = SmoothNetDenoiser(32, seed=5, scheduler=sched)

    def sharp(x, t):
        return net(x, t) + 10.0 * torch.tanh(3 * x)

    ref = solve(Sequential(), sharp, sched, draws.x_T, draws.noises).sample
    rounds = {}
    for scan in (False, True):
        out = solve(QuasiNewton(scan=scan, probes=False, thin_start=False), sharp, sched, draws.x_T, draws.noises)
        assert out.stats.fallback is None and (out.sample - ref).abs().max() < 1e-3
        rounds[scan] = out.stats.rounds
    assert rounds[True] == rounds[False] <= 8


def test_a_prediction_clipped_on_the_other_side_counts_as_moved():
    """Entries clipped above where the scan linearised and below along its chain take another
    constant: the scan is off the models' own chain, the count says so, and more scans reach it."""
    sched = make_scheduler("ddim", 16)
    x_T = 3 * draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4)).x_T  # far out: the last step clips
    problem = DenoisingProblem(GaussianDenoiser(sched), sched, x_T, None)
    models = StepModels(None, quasi_newton.prior_slopes(problem.rule), x_T, 3)
    nothing = torch.zeros(17, dtype=torch.bool)
    stepped = quasi_newton.propagate(models, x_T.expand(17, *x_T.shape).clone(), 0, nothing, problem)
    offset, model = quasi_newton.round_models(models, 0, nothing)
    out = quasi_newton.modelled_outputs(offset, model, stepped[:-1].flatten(2)).view(stepped[:-1].shape)
    clipped = problem.rule.coefficients.clean_prediction(models.step_index, stepped[:-1], out).abs() >= 1.0
    assert int(clipped[15].sum()) > 0
    flipped = stepped.clone()
    flipped[15] = torch.where(clipped[15], -stepped[15], stepped[15])  # the same entries clip, on the other side
    scanned, moved = quasi_newton.propagate_linear(models, flipped, 0, nothing, problem)
    assert float(moved) == int(clipped[15].sum()) and (scanned - stepped).abs().max() > 1.0
    chain, settled = quasi_newton.settled_chain(models, flipped, 0, nothing, problem, None, 8)
    assert settled and (chain - stepped).abs().max() < 1e-5
    flipped[3, 0, 0, 0] = float("inf")  # a chain that is not finite never counts as settled
    assert not quasi_newton.settled_chain(models, flipped, 0, nothing, problem, None, 2)[1]


LINEAR_ROUNDS = 12


def test_the_linearised_scan_propagation_converges_to_the_same_answer():
    """The GPU's propagation (every step linearised, one doubling scan) has the sequential fixed point too."""
    from parapolicy.samplers import quasi_newton

    sched = make_scheduler("ddpm", 50)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(9))
    cond_data, cond_mask = inpainting_condition((2, 16, 2))
    den = SmoothNetDenoiser(32, seed=4, scheduler=sched)
    problem = DenoisingProblem(den, sched, draws.x_T, draws.noises, cond_data, cond_mask)
    ref = Sequential().sample(problem).sample
    models = quasi_newton.StepModels(None, quasi_newton.prior_slopes(problem.rule), draws.x_T, 3)
    fresh = torch.zeros(51, dtype=torch.bool)
    traj = draws.x_T.expand(51, 2, 16, 2).clone()
    fresh[:50] = True
    for rounds in range(1, 61):  # Newton on the exact network: evaluate everything, then propagate linearly
        imposed = impose(traj[:50], cond_data, cond_mask)
        out = den(imposed.reshape(-1, 16, 2), problem.rule.timesteps.repeat_interleave(2)).reshape(imposed.shape)
        models.record(torch.arange(50), imposed.flatten(2), out.flatten(2))
        new = quasi_newton.propagate_linear(models, traj, 0, fresh, problem)[0]
        moved, traj = float((new - traj).abs().max()), new
        if moved < 1e-6:
            break
    assert (impose(traj[-1], cond_data, cond_mask) - ref).abs().max() < 1e-4
    assert rounds <= LINEAR_ROUNDS  # superlinear: a damped or mis-indexed correction needs many more


@pytest.mark.parametrize("host_arrays", [True, False])
@pytest.mark.parametrize("model", ["low_rank", "measured_columns", "slope"])
@pytest.mark.parametrize("kind, steps, eta", [("ddpm", 50, 0.0), ("ddim", 16, 0.0), ("ddim", 16, 0.7)])
def test_the_propagation_is_the_schedulers_own_step_on_the_modelled_outputs(kind, steps, eta, model,
                                                                                      host_arrays, monkeypatch):
    """Stepping the rule's coefficients (NumPy on the CPU, torch elsewhere) changes the host work,
    not the chain: it equals the rule's own transition stepped on the models' outputs, clipping,
    noise, inpainting, slope-only models and skipped steps included, and leaves the caller's
    trajectory alone."""
    from parapolicy.samplers import quasi_newton

    monkeypatch.setattr(quasi_newton, "on_host_arrays", lambda *tensors: host_arrays)
    if model == "slope":
        monkeypatch.setattr(quasi_newton, "MAX_DENSE_ENTRIES", 0)
    dense = model != "slope"
    sched = make_scheduler(kind, steps)
    rule = make_step_rule(sched, eta=eta)
    draws = draw_noises(rule, (2, 16, 2), torch.Generator().manual_seed(5))
    cond_data, cond_mask = inpainting_condition((2, 16, 2))
    den = SmoothNetDenoiser(32, seed=2, scheduler=sched)
    problem = DenoisingProblem(den, rule, draws.x_T, draws.noises, cond_data, cond_mask)
    store = None
    if model == "measured_columns":  # probes' columns, on every other step
        store = quasi_newton.JacobianStore(steps, 32, "cpu")
        columns = torch.randn(steps // 2, 32, 1, 32, generator=torch.Generator().manual_seed(7))
        for column in range(32):
            store.write(list(range(0, steps, 2)), [column] * (steps // 2), columns[:, column])
    models = quasi_newton.StepModels(store, quasi_newton.prior_slopes(rule), draws.x_T, 3)
    assert models.dense == dense
    traj = 2.5 * torch.randn(steps + 1, 2, 16, 2, generator=torch.Generator().manual_seed(6))  # far enough to clip
    for shift in (0.0, 0.1):  # two evaluations: every step has a secant pair
        states = impose(traj[:steps] + shift, cond_data, cond_mask)
        out = den(states.reshape(-1, 16, 2), rule.timesteps.repeat_interleave(2)).reshape(states.shape)
        models.record(torch.arange(steps), states.flatten(2), out.flatten(2))
    fresh = torch.zeros(steps + 1, dtype=torch.bool)
    fresh[: steps : 2] = True  # the steps between are modelled by their neighbours' mean
    start, given = 4, traj.clone()  # a round starts at an evaluated step
    new = quasi_newton.propagate(models, traj, start, fresh, problem)
    assert torch.equal(traj, given)
    offset, jacobian = quasi_newton.round_models(models, start, fresh)
    memory, x, expected, clipped = rule.new_memory(draws.x_T), traj[start], traj.clone(), False
    for k, j in enumerate(range(start, steps)):
        x = impose(x, cond_data, cond_mask)
        flat = x.flatten(1)
        out = offset[k] + ((jacobian[k] @ flat.unsqueeze(-1)).squeeze(-1) if dense else jacobian[k] * flat)
        noise = None if problem.noises is None else problem.noises[j][None]
        scale = rule.coefficients
        clipped |= bool(((x - scale.eps_scale[j] * out.view(x.shape)) / scale.x_scale[j]).abs().max() > 1)
        x = rule.transition(j, x[None], out.view(x.shape)[None], noise, memory)[0]
        expected[j + 1] = x
    assert (problem.noises is not None) == (kind == "ddpm" or eta > 0)
    assert torch.equal(new[: start + 1], traj[: start + 1])
    assert (new - expected).abs().max() < 1e-5 * expected.abs().max()
    assert clipped  # the clean-sample prediction left [-1, 1] somewhere: clipping was exercised


def test_odd_inputs_keep_the_answer(monkeypatch):
    """A state laid out non-contiguously, and a denoiser whose output carries a gradient (a caller
    sampling outside ``no_grad``), run as a plain one does."""
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(3))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    plain = solve(QuasiNewton(probes=False), den, sched, draws.x_T).sample
    strided = draws.x_T.transpose(1, 2).contiguous().transpose(1, 2)
    assert not strided.is_contiguous()
    assert torch.equal(solve(QuasiNewton(probes=False), den, sched, strided).sample, plain)
    weight = torch.zeros((), requires_grad=True)
    for scan in (False, True):  # the GPU's scans too: their workspace is written in place, a gradient's is not
        with torch.enable_grad():
            tracked = QuasiNewton(probes=False, scan=scan).sample(
                DenoisingProblem(lambda x, t: den(x, t) + weight * x, sched, draws.x_T))
        assert tracked.sample.requires_grad and (tracked.sample.detach() - plain).abs().max() < 1e-5


@pytest.mark.parametrize("probes", [False, True])
@pytest.mark.parametrize("tracked", [False, True])
def test_double_precision_states_sample_in_double_precision(probes, tracked):
    """float64 states keep float64 models (the stand-in's slopes included) on every path: the fits
    on NumPy views, and on torch tensors with probes or a tracked gradient."""
    sched = make_scheduler("ddim", 16)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(3))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    weight = torch.zeros((), dtype=torch.float64, requires_grad=tracked)

    def double(x, t):
        return den(x.float(), t).double() + weight * x

    x_T = draws.x_T.double()
    ref = Sequential().sample(DenoisingProblem(double, sched, x_T)).sample.detach()
    with torch.set_grad_enabled(tracked):
        out = QuasiNewton(tolerance=1e-4, probes=probes, reuse_jacobians=False).sample(DenoisingProblem(double, sched,
                                                                                                         x_T))
    assert out.sample.dtype == torch.float64 and out.sample.requires_grad == tracked
    assert (out.sample.detach() - ref).abs().max() < 5e-5


def stand_in_setup(kind, steps, scale, monkeypatch):
    """A cold start's pieces on the Gaussian denoiser, with the GPU path's scans and the CPU's step
    loop counted."""
    from parapolicy.samplers import quasi_newton

    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4))
    x_T = scale * draws.x_T
    problem = DenoisingProblem(GaussianDenoiser(sched), sched, x_T, draws.noises if kind == "ddpm" else None)
    models = quasi_newton.StepModels(None, quasi_newton.prior_slopes(problem.rule), x_T, 3)
    stepped = quasi_newton.stand_in_chain(models, x_T, problem, linear=False)
    calls = {"loops": [], "scans": []}
    for name, key in (("propagate", "loops"), ("propagate_linear", "scans")):
        original = getattr(quasi_newton, name)
        monkeypatch.setattr(quasi_newton, name,
                            lambda *args, f=original, k=key, **kwargs: calls[k].append(1) or f(*args, **kwargs))
    return quasi_newton, problem, models, stepped, calls


@pytest.mark.parametrize("kind, steps", [("ddpm", 100), ("ddim", 16)])
def test_the_gpus_stand_in_chain_is_the_stepped_one_in_one_scan(kind, steps, monkeypatch):
    """On a GPU the cold start's chain is one linearised scan of the unclipped steps (each is then
    affine): where nothing clips, no more scans and no step loop, and the step loop's chain."""
    quasi_newton, problem, models, stepped, calls = stand_in_setup(kind, steps, 1, monkeypatch)
    scanned = quasi_newton.stand_in_chain(models, problem.x_T, problem, linear=True)
    assert calls["scans"] == [1] and not calls["loops"]
    assert (scanned - stepped).abs().max() < 1e-5


@pytest.mark.parametrize("kind, steps", [("ddpm", 100), ("ddim", 16)])
def test_the_gpus_stand_in_chain_uses_the_stored_jacobian_columns(kind, steps, monkeypatch):
    """With probes a GPU keeps measured Jacobian columns across calls; the cold start's chain is then
    the one the stored columns drive (as the step loop's), not the stand-in's slope alone."""
    from parapolicy.samplers import quasi_newton

    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(4))
    problem = DenoisingProblem(GaussianDenoiser(sched), sched, draws.x_T, draws.noises if kind == "ddpm" else None)
    store = quasi_newton.JacobianStore(steps, 32, "cpu")
    store.matrix.copy_(0.05 * torch.randn(steps, 32, 32, generator=torch.Generator().manual_seed(5)))
    store.measured[:] = True
    models = quasi_newton.StepModels(store, quasi_newton.prior_slopes(problem.rule), draws.x_T, 3)
    bare = quasi_newton.StepModels(None, quasi_newton.prior_slopes(problem.rule), draws.x_T, 3)
    stepped = quasi_newton.stand_in_chain(models, draws.x_T, problem, linear=False)
    scanned = quasi_newton.stand_in_chain(models, draws.x_T, problem, linear=True)
    assert (scanned - stepped).abs().max() < 1e-4
    assert (stepped - quasi_newton.stand_in_chain(bare, draws.x_T, problem, linear=False)).abs().max() > 1e-2


def test_where_the_stand_in_clips_the_gpus_scans_reach_the_stepped_chain(monkeypatch):
    """Where the chain's clean-sample prediction clips, the unclipped scan is not the chain; Newton
    scans from it reach the stepped chain, and one that has not settled is stepped instead."""
    quasi_newton, problem, models, stepped, calls = stand_in_setup("ddim", 16, 3, monkeypatch)
    start = problem.x_T.expand_as(stepped).clone()
    assert not quasi_newton.unclipped_chain(models, start, problem)[1]
    calls["scans"].clear()
    scanned = quasi_newton.stand_in_chain(models, problem.x_T, problem, linear=True)
    assert not calls["loops"] and len(calls["scans"]) > 1 and (scanned - stepped).abs().max() < 1e-4
    nothing = torch.zeros(17, dtype=torch.bool)
    first_scan = quasi_newton.propagate_linear(models, start, 0, nothing, problem)[0]
    assert (first_scan - stepped).abs().max() > 1e-2  # one scan from the constant chain misses the clipping
    monkeypatch.setattr(quasi_newton, "unclipped_chain", lambda models, traj, problem, workspace=None: (traj, False))
    monkeypatch.setattr(quasi_newton, "STAND_IN_SCANS", 1)
    assert torch.equal(quasi_newton.stand_in_chain(models, problem.x_T, problem, linear=True), stepped)
    assert calls["loops"] == [1]  # not settled after one scan: stepped


def test_a_rule_without_per_step_coefficients_is_stepped_through_its_own_transition():
    """Sample prediction has no ``StepCoefficients``: the propagation steps the rule's transition
    itself, and the answer is still the sequential one."""
    sched = DDPMScheduler(**{**DP_SCHEDULE, "prediction_type": "sample"}, variance_type="fixed_small")
    sched.set_timesteps(50)
    rule = make_step_rule(sched)
    assert rule.coefficients is None
    draws = draw_noises(rule, (2, 16, 2), torch.Generator().manual_seed(0))
    den = SmoothNetDenoiser(32, seed=1, scheduler=sched)
    ref = Sequential().sample(DenoisingProblem(den, rule, draws.x_T, draws.noises)).sample
    out = QuasiNewton(probes=False).sample(DenoisingProblem(den, rule, draws.x_T, draws.noises))
    assert out.stats.fallback is None and out.stats.rounds < 50
    assert (out.sample - ref).abs().max() < 1e-4
