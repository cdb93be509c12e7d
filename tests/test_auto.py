"""sampler=auto: the choice follows the measured cost of rows, the answer stays exact.

The cost curve is what ``auto`` measures on the device; replacing it with a known curve makes
the choice a closed-form question: when a row costs as much as a call, sequential wins; when
rows are free, the candidate with the fewest rounds wins.
"""

import math
from types import SimpleNamespace

import pytest
import torch
from tests.support.helpers import CountingDenoiser, SmoothNetDenoiser, make_scheduler, solve
from hydra import compose, initialize_config_dir

from parapolicy import timing
from parapolicy.errors import SamplerConfigError
from parapolicy.eval.build import CONFIG_DIR
from parapolicy.eval.report import summary_table
from parapolicy.eval.run import run_rollout
from parapolicy.samplers import DenoisingProblem, Sequential, draw_noises, make_sampler
from parapolicy.samplers import auto as auto_module
from parapolicy.samplers.auto import call_cost, cost_curve, monotone


def _problem(kind="ddpm", steps=100, batch=2, seed=0):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (batch, 16, 2), torch.Generator().manual_seed(seed))
    return sched, draws, SmoothNetDenoiser(32, seed=1, scheduler=sched)


def _with_curve(monkeypatch, per_call, per_row):
    """``auto`` measures this curve instead of timing the network (ms = per_call + per_row * rows)."""
    monkeypatch.setattr(auto_module, "cost_curve",
                        lambda problem, rows, repeats=1: {r: per_call + per_row * r * problem.batch for r in rows})


def test_call_cost_is_linear_between_points_and_extends_the_last_segment():
    curve = {1: 2.0, 9: 6.0, 41: 22.0}
    assert call_cost(curve, 1) == 2.0 and call_cost(curve, 0.5) == 2.0
    assert call_cost(curve, 5) == pytest.approx(4.0)
    assert call_cost(curve, 25) == pytest.approx(14.0)
    assert call_cost(curve, 57) == pytest.approx(30.0)  # beyond 41: the slope of the 9..41 segment
    assert call_cost({4: 3.0}, 100) == 3.0


def test_a_near_tie_goes_to_the_candidate_with_fewer_rows():
    predictions = {"sequential": {"rounds": 100, "rows_per_round": 1.0, "predicted_ms": 1000.0},
                   "plain": {"rounds": 8, "rows_per_round": 40.0, "predicted_ms": 420.0},
                   "probes": {"rounds": 8, "rows_per_round": 64.0, "predicted_ms": 410.0}}
    assert auto_module.choose(predictions) == "plain"  # 410 vs 420: noise; 320 rows vs 512
    predictions["probes"]["predicted_ms"] = 300.0
    assert auto_module.choose(predictions) == "probes"  # a real difference wins
    predictions["sequential"]["predicted_ms"] = 310.0
    assert auto_module.choose(predictions) == "sequential"  # within 5% of 300 and 100 rows per chunk


def test_a_noisy_point_never_makes_more_rows_look_cheaper(monkeypatch):
    assert monotone({1: 2.0, 40: 9.0, 64: 7.5, 128: 12.0}) == {1: 2.0, 40: 9.0, 64: 9.0, 128: 12.0}
    timings = iter([2.0, 9.0, 7.5])  # the 64-row call timed while something else held the CPU less
    monkeypatch.setattr(auto_module, "median_call_ms", lambda call, device, repeats, long_ms=None: next(timings))
    sched, draws, net = _problem(batch=1)
    problem = DenoisingProblem(net, sched, draws.x_T, draws.noises)
    curve = cost_curve(problem, [1, 40, 64])
    assert curve == {1: 2.0, 40: 9.0, 64: 9.0}
    assert call_cost(curve, 64) >= call_cost(curve, 40)


@pytest.mark.parametrize("per_call, per_row, expected", [(0.0, 1000.0, "sequential"), (1000.0, 0.0, "fewest rounds")])
def test_the_choice_is_the_fastest_under_the_measured_cost(monkeypatch, per_call, per_row, expected):
    _with_curve(monkeypatch, per_call, per_row)
    sched, draws, net = _problem()
    sampler = make_sampler("auto")
    out = solve(sampler, net, sched, draws.x_T, draws.noises)
    report = sampler.calibration
    candidates = report["candidates"]
    assert set(candidates) == {"sequential", "quasi_newton", "quasi_newton_probes"}
    assert candidates["sequential"]["rounds"] == 100 and candidates["sequential"]["rows_per_round"] == 1.0
    timed = {k: c for k, c in candidates.items() if "predicted_ms" in c}
    fastest = min(c["predicted_ms"] for c in timed.values())
    for c in candidates.values():  # the curve is linear, so interpolation is exact at fractional rows
        cost = c["rounds"] * (per_call + per_row * c["rows_per_round"] * 2) + c["host_ms"]
        if "predicted_ms" in c:
            assert c["predicted_ms"] == pytest.approx(cost)
        else:  # not timed: a bound below its true cost already lost to the fastest
            assert fastest * (1 + auto_module.TIE) < c["lower_bound_ms"] <= cost + 1e-6
    assert report["chosen"] == auto_module.choose(timed)
    assert candidates[report["chosen"]]["predicted_ms"] <= fastest * (1 + auto_module.TIE)
    if expected == "sequential":
        assert report["chosen"] == "sequential" and report["config"] == {"name": "sequential"}
    else:  # rows are free: a parallel candidate's few rounds beat sequential's 100 calls
        assert report["chosen"] != "sequential" and candidates[report["chosen"]]["rounds"] < 20
    assert out.stats.sampler == "auto" and out.stats.settings["chosen"] == report["chosen"]


def test_rows_that_cannot_win_are_never_timed(monkeypatch):
    """When a row costs as much as a call, sequential's 100 one-row calls win and the parallel
    candidates' rows (seconds a call at a large batch on a CPU) are timed at most once, the
    fewest first: after the first one, the probes' rounds at that cost already lose."""
    asked = []

    def curve(problem, rows, repeats=1):
        asked.extend(rows)
        return {r: 1000.0 * r * problem.batch for r in rows}

    monkeypatch.setattr(auto_module, "cost_curve", curve)
    sched, draws, net = _problem()
    sampler = make_sampler("auto")
    solve(sampler, net, sched, draws.x_T, draws.noises)
    candidates = sampler.calibration["candidates"]
    plain, probes = candidates["quasi_newton"], candidates["quasi_newton_probes"]
    assert sampler.calibration["chosen"] == "sequential"
    assert plain["rows_per_round"] < probes["rows_per_round"] and "predicted_ms" not in probes
    assert asked == [1, math.ceil(plain["rows_per_round"])]  # the probes' rows were never timed
    assert sorted(map(int, sampler.calibration["cost_curve_ms"])) == asked


def _fake_clock(monkeypatch, durations_s):
    """``time.perf_counter`` advancing by the next duration at each call's end; returns the calls."""
    now, durations, calls = [0.0], iter(durations_s), []

    def perf_counter():
        return now[0]

    def call():
        calls.append(1)
        now[0] += next(durations)

    monkeypatch.setattr(timing.time, "perf_counter", perf_counter)
    return call, calls


@pytest.mark.parametrize("durations, long_ms, expected_calls, median", [
    ([1.0] * 4, 500.0, 2, 1000.0),  # long: the warm-up and one timed call
    ([1.0] * 4, 2000.0, 4, 1000.0),  # short against long_ms: the warm-up and three timed calls
    ([1.0] * 4, None, 4, 1000.0),  # without long_ms, as before
    ([5.0, 0.01, 0.03, 0.02], 500.0, 4, 20.0),  # a slow first call (a compile) does not cut the timing
])
def test_a_long_call_is_timed_once_after_its_warm_up(monkeypatch, durations, long_ms, expected_calls, median):
    call, calls = _fake_clock(monkeypatch, durations)
    assert timing.median_call_ms(call, "cpu", repeats=3, long_ms=long_ms) == pytest.approx(median)
    assert len(calls) == expected_calls


def test_repeats_below_one_is_refused():
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        timing.median_call_ms(lambda: None, "cpu", repeats=0)


def test_a_bound_is_never_above_the_prediction_on_a_bent_curve(monkeypatch):
    """A GPU-like concave curve (rows nearly free, then compute): a candidate left untimed has a
    bound below what it would have been predicted, and every prediction uses a point at or above
    its rows (timed later points move none)."""
    def concave(problem, rows, repeats=1):
        return {r: 2.0 + 40.0 * math.sqrt(r) for r in rows}

    monkeypatch.setattr(auto_module, "cost_curve", concave)
    problem = SimpleNamespace(batch=1)
    predictions = {"sequential": {"rounds": 100, "rows_per_round": 1.0, "host_ms": 0.0},
                   "few_rows": {"rounds": 8, "rows_per_round": 9.5, "host_ms": 0.0},
                   "many_rows": {"rounds": 9, "rows_per_round": 60.0, "host_ms": 0.0}}
    curve = auto_module.predict(problem, predictions)
    assert sorted(curve) == [1, 10]  # 9.5 rows timed at 10; 60 rows never timed
    full = {r: 2.0 + 40.0 * math.sqrt(r) for r in (1, 10, 60)}
    many = predictions["many_rows"]
    assert "predicted_ms" not in many and many["lower_bound_ms"] <= auto_module.chunk_ms(many, full)
    assert predictions["few_rows"]["predicted_ms"] == pytest.approx(auto_module.chunk_ms(predictions["few_rows"], full))
    assert auto_module.choose({k: v for k, v in predictions.items() if "predicted_ms" in v}) == "few_rows"


def test_the_answer_is_exact_and_calibration_runs_once_per_schedule_and_shape(monkeypatch):
    _with_curve(monkeypatch, 1000.0, 0.0)  # a parallel candidate is chosen
    sched, draws, net = _problem(batch=2)
    expected = solve(Sequential(), net, sched, draws.x_T, draws.noises).sample
    counting = CountingDenoiser(net)
    sampler = make_sampler("auto")
    first = solve(sampler, counting, sched, draws.x_T, draws.noises)
    report = sampler.calibration
    assert report["chosen"] != "sequential"
    assert (first.sample - expected).abs().max() < 0.05  # the chosen candidate's tolerance, in sample units
    calls_after_first = len(counting.calls)
    second = solve(sampler, counting, sched, draws.x_T, draws.noises)
    assert len(sampler.calibrations) == 1 and sampler.calibration["calibration_s"] == report["calibration_s"]
    assert sampler.calibration["measured_chunks"] == 1  # the second call, timed; the calibrating one is not
    assert len(counting.calls) - calls_after_first == second.stats.rounds  # one call per round, nothing else
    assert (second.sample - expected).abs().max() < 0.05  # kept Jacobians change the path, not the answer
    ddim = make_scheduler("ddim", 16)
    solve(sampler, net, ddim, draws.x_T)
    assert len(sampler.calibrations) == 2 and sampler.calibration["candidates"]["sequential"]["rounds"] == 16


@pytest.mark.parametrize("scale", [0, -1, 101, True, "1", float("nan")])
def test_bad_tolerance_scale_is_refused(scale):
    with pytest.raises(SamplerConfigError, match="auto tolerance_scale must be a number in \\(0, 100\\]"):
        make_sampler("auto", tolerance_scale=scale)


def test_results_json_records_the_choice_the_curve_and_predicted_vs_measured(toy_ckpt, tmp_path):  # noqa: F811
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "n_envs=1",
                                            "logger=disabled", "sampler=auto"])
    results = run_rollout(cfg, str(tmp_path))
    block = results["auto"]
    assert results["sampler"] == {"name": "auto", "tolerance_scale": 1.0}
    assert block["chosen"] in block["candidates"] and block["batch"] == 1
    assert block["predicted_ms"] == block["candidates"][block["chosen"]]["predicted_ms"] > 0
    assert "1" in block["cost_curve_ms"] and all(v > 0 for v in block["cost_curve_ms"].values())
    assert block["measured_chunks"] == results["n_chunks"] - 1 > 0 and block["measured_ms_p50"] > 0
    assert results["metrics"]["rollout/auto/predicted_ms"] == block["predicted_ms"]  # what wandb logs
    assert results["metrics"]["rollout/auto/measured_ms_p50"] == block["measured_ms_p50"]
    (line,) = [line for line in summary_table(results).splitlines() if line.startswith("sampler=auto chose")]
    assert line == (f"sampler=auto chose {block['chosen']} at batch 1: predicted {block['predicted_ms']:.1f} ms per "
                    f"chunk, measured {block['measured_ms_p50']:.1f} ms (sampling, median of its "
                    f"{block['measured_chunks']} later chunks); calibration {block['calibration_s']:.1f} s")
    assert "other_batches" not in block


def test_a_last_smaller_batch_is_calibrated_and_reported_apart(toy_ckpt, tmp_path):  # noqa: F811
    """Three episodes in batches of two: the last batch has one row, so auto calibrates again; the
    block is the batch that ran the most chunks, the other is listed, and every chunk is counted
    once (each calibrating chunk apart)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=3", "n_envs=2",
                                            "logger=disabled", "sampler=auto", "progress=false"])
    results = run_rollout(cfg, str(tmp_path))
    block = results["auto"]
    (other,) = block["other_batches"]
    assert {block["batch"], other["batch"]} == {1, 2} and block["measured_chunks"] >= other["measured_chunks"]
    assert block["measured_chunks"] + other["measured_chunks"] + 2 == results["n_chunks"]
    lines = [line for line in summary_table(results).splitlines() if line.startswith("sampler=auto")]
    assert lines[0].startswith(f"sampler=auto chose {block['chosen']} at batch {block['batch']}: ")
    assert lines[1].startswith(f"sampler=auto also chose {other['chosen']} at batch {other['batch']}: ")


class PerSampleScale:
    """A denoiser bound to a batch: row r of each block of ``batch`` rows is scaled by its sample's
    factor, so a row evaluated under another sample's conditioning comes out wrong."""

    def __init__(self, batch):
        self.scale = torch.arange(1.0, batch + 1.0)
        self.batch = batch

    def __call__(self, x, t):
        factor = self.scale.repeat(x.shape[0] // self.batch).view(-1, *([1] * (x.dim() - 1)))
        return x * factor + t.view(-1, *([1] * (x.dim() - 1))) * 1e-3


@pytest.mark.parametrize("count", [1, 3])
def test_the_trial_keeps_each_leading_sample_under_its_own_conditioning(count):
    sched, draws, _ = _problem(batch=5)
    net = PerSampleScale(5)
    problem = DenoisingProblem(net, sched, draws.x_T, draws.noises)
    trial = auto_module.leading_samples(problem, count)
    assert trial.batch == count and torch.equal(trial.x_T, draws.x_T[:count])
    assert torch.equal(trial.noises, draws.noises[:, :count])
    rows = torch.randn(2 * count, 16, 2)  # two steps' blocks of ``count`` samples
    t = torch.tensor([7] * count + [3] * count)
    full = torch.zeros(2, 5, 16, 2)
    full[:, :count] = rows.view(2, count, 16, 2)
    expected = net(full.view(10, 16, 2), torch.tensor([7] * 5 + [3] * 5)).view(2, 5, 16, 2)[:, :count]
    assert torch.allclose(trial.denoise(rows, t), expected.reshape(2 * count, 16, 2))


def test_the_predicted_rounds_are_those_of_the_first_samples_together(monkeypatch):
    """A batch's rounds follow its worst sample, so a candidate still in the race after its trial
    on the first sample runs again on the first TRIAL_SAMPLES samples (here all 3) at once, and
    the choice is predicted from that run."""
    _with_curve(monkeypatch, 1000.0, 0.0)  # rows free: the parallel candidates race
    sched, draws, net = _problem(batch=3)
    sampler = make_sampler("auto")
    solve(sampler, net, sched, draws.x_T, draws.noises)
    report = sampler.calibration
    chosen = report["candidates"][report["chosen"]]
    together = make_sampler(**report["config"]).sample(DenoisingProblem(net, sched, draws.x_T, draws.noises)).stats
    assert report["chosen"] != "sequential" and chosen["trial_samples"] == 3
    assert chosen["rounds"] == together.rounds and chosen["rows_per_round"] == together.nfe / together.rounds
    assert auto_module.TRIAL_SAMPLES >= 3


def test_a_candidate_that_loses_on_one_sample_gets_no_larger_trial(monkeypatch):
    """When a row costs as much as a call the parallel candidates lose at their first sample's
    rounds already; a batch needs at least those, so their costlier trial on more samples is skipped."""
    _with_curve(monkeypatch, 0.0, 1000.0)
    sched, draws, net = _problem(batch=3)
    sampler = make_sampler("auto")
    solve(sampler, net, sched, draws.x_T, draws.noises)
    report = sampler.calibration
    assert report["chosen"] == "sequential"
    assert all(c["trial_samples"] == 1 for k, c in report["candidates"].items() if k != "sequential")
