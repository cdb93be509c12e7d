"""``auto``: the fastest exact sampler for this network on this device, chosen by measurement.

A chunk's latency is the sum over its rounds of one batched call's cost, and that cost grows
with the rows in the call at a rate only the device knows (a CPU pays for every row, a GPU
barely until it is full). So on the first call for a schedule and batch shape, ``auto``
1. times the network on this problem at a few row counts (the cost curve),
2. runs each exact candidate once on the problem's first sample, and those still in the race
   after step 3 again on its first TRIAL_SAMPLES samples (a batch's rounds follow its worst
   sample), for its rounds and rows per round (sequential needs no run: N rounds of one
   row), timing the host work around the network (model updates, propagation) apart from
   the network itself,
3. predicts each candidate's chunk time at the real batch as rounds x cost(rows per round x
   batch) + host time, and keeps the fastest, sequential included (the curve is held
   non-decreasing in rows: a noisy point must not make more rows look cheaper; predictions
   within 5% of the fastest are settled by the fewest rows per chunk).
The curve is timed fewest rows first, at each candidate's rows per round rounded up (so a point
timed later moves no prediction made before), and a candidate whose rounds at the cost of the
most rows timed so far already lose to the fastest prediction is not timed at its own rows (a
call never costs less on more rows); a call that takes LONG_CALL_MS or more is timed once after
its warm-up. At a large batch on a CPU, where each call on a parallel candidate's rows takes
seconds, this keeps the calibration to a few seconds.
Later calls run the choice. Every candidate is exact, so the choice moves the latency, never
the answer beyond the candidates' tolerance. ``calibration`` holds the cost curve, each
candidate's prediction, the choice and the measured time of the choice's later calls
(results.json's ``auto`` block); ``calibrations`` has one per batch shape met.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.problem import DenoisingProblem, SampleResult
from parapolicy.samplers.registry import make_sampler
from parapolicy.timing import median_call_ms, timed_call

CANDIDATES = (  # (label, sampler name, settings): exact samplers under one row budget and one tolerance rule
    ("quasi_newton", "quasi_newton", {"probes": False}),
    ("quasi_newton_probes", "quasi_newton", {"probes": True}),
)
REPEATS = 3  # timed calls per row count (the median is kept), after one warm-up call
LONG_CALL_MS = 100.0  # a call this long is timed once after its warm-up: its noise is small beside it


def cost_curve(problem: DenoisingProblem, rows_per_sample, repeats: int = REPEATS) -> dict[int, float]:
    """Median milliseconds of one network call on ``r`` x batch rows, for each r (made monotone)."""
    x_T, batch = problem.x_T, problem.batch
    t = problem.rule.timesteps[:1].to(x_T.device)
    curve = {}
    for rows in rows_per_sample:
        x = x_T.repeat(rows, *([1] * (x_T.dim() - 1)))
        curve[rows] = median_call_ms(lambda: problem.denoise(x, t.repeat(rows * batch)), x.device, repeats,
                                     long_ms=LONG_CALL_MS)
    return monotone(curve)


def monotone(curve: dict[int, float]) -> dict[int, float]:
    """The curve with each point raised to the most any smaller row count cost.

    A call on more rows never costs less than one on fewer (it does the same work and more), so
    a point measured below a smaller one is timing noise (another process, a clock step); left
    in, it would make the candidate with more rows per round look cheaper than one with fewer
    at the same rounds.
    """
    out, highest = {}, float("-inf")
    for rows, ms in sorted(curve.items()):
        highest = max(highest, ms)
        out[rows] = highest
    return out


def call_cost(curve: dict[int, float], rows: float) -> float:
    """The curve's cost at ``rows`` per sample: linear between measured points, and beyond the last
    point extended along its last segment."""
    points = sorted(curve.items())
    if rows <= points[0][0] or len(points) == 1:
        return points[0][1]
    for (r0, c0), (r1, c1) in zip(points, points[1:]):
        if rows <= r1 or (r1, c1) == points[-1]:
            return c0 + (c1 - c0) * (rows - r0) / (r1 - r0)
    return points[-1][1]


class TimedDenoiser:
    """The problem's denoiser, with the milliseconds spent inside it summed."""

    def __init__(self, denoise):
        self.denoise, self.ms = denoise, 0.0

    def __call__(self, x, t):
        out, ms = timed_call(lambda: self.denoise(x, t), x.device)
        self.ms += ms
        return out


TRIAL_SAMPLES = 8  # samples a candidate's trial run sees (at most the batch)


def leading_samples(problem: DenoisingProblem, count: int) -> DenoisingProblem:
    """The problem restricted to its first ``count`` samples. A batch's rounds follow its worst
    sample (a state is accepted when every sample's change is small: on the shipped PushT policy
    10 rounds at batch 40 against 7.4 at batch 1), so the trial sees several, not one."""
    if count >= problem.batch:
        return problem.replace(callback=None)
    pick = (lambda v: None if v is None else v[:count])
    denoise, batch = problem.denoise, problem.batch
    if hasattr(denoise, "first_samples"):  # the policy's bound network: rebind those samples' conditioning
        leading = denoise.first_samples(count)
    else:  # any other denoiser is bound to the whole batch: each block of ``count`` rows is padded to
        def leading(x, t):  # it with copies of its first row (a real input), the padding's outputs dropped
            blocks, shape = x.shape[0] // count, x.shape[1:]
            rows, times = x.view(blocks, count, *shape), t.view(blocks, count)
            full = rows[:, :1].repeat(1, batch, *([1] * len(shape)))
            full[:, :count] = rows
            times = torch.cat([times, times[:, :1].expand(blocks, batch - count)], dim=1)
            return denoise(full.view(blocks * batch, *shape), times.view(-1)).view(blocks, batch, *shape)[:, :count] \
                .reshape(x.shape)

    return problem.replace(denoise=leading, x_T=problem.x_T[:count], noises=None if problem.noises is None else
                           problem.noises[:, :count], cond_data=pick(problem.cond_data),
                           cond_mask=pick(problem.cond_mask),
                           init_guess=None if problem.init_guess is None else problem.init_guess[:, :count],
                           extra={}, callback=None)


TIE = 0.05  # predictions this close (relative) are within timing noise of each other


def chunk_ms(candidate: dict, curve: dict[int, float], rows: float | None = None) -> float:
    """A candidate's chunk time under ``curve``: rounds x one call's cost + host time."""
    rows = candidate["rows_per_round"] if rows is None else rows
    return candidate["rounds"] * call_cost(curve, rows) + candidate["host_ms"]


def predict(problem: DenoisingProblem, predictions: dict, curve: dict[int, float] | None = None) -> dict[int, float]:
    """Time the cost curve at the candidates' rows, fewest first (points already in ``curve`` are
    kept), and write each timed candidate's ``predicted_ms``; returns the curve. A candidate is
    not timed when its ``lower_bound_ms`` (its time at the cost of the most rows timed so far:
    more rows never cost less) is already beyond the fastest prediction by more than ``TIE``."""
    curve = dict(curve or {})
    order = sorted(predictions, key=lambda k: predictions[k]["rows_per_round"])
    for label in order:
        p = predictions[label]
        rows = max(1, math.ceil(p["rows_per_round"] - 1e-9))  # a point at or above: later points change nothing
        timed = [r for r in curve if r <= rows]
        if timed and label != order[0]:  # the fewest rows are always predicted: the others' yardstick
            bound = chunk_ms(p, curve, min(p["rows_per_round"], max(timed)))
            if bound > min(q["predicted_ms"] for q in predictions.values() if "predicted_ms" in q) * (1 + TIE):
                p["lower_bound_ms"] = bound
                continue
        if rows not in curve:
            curve = monotone({**curve, **cost_curve(problem, [rows])})
        p["predicted_ms"] = chunk_ms(p, curve)
    return curve


def with_measured(entry: dict) -> dict:
    """A calibration's report with the median time of the choice's later calls (``None`` before any)."""
    measured = sorted(entry["measured_ms"])
    return {**entry["report"], "measured_ms_p50": measured[len(measured) // 2] if measured else None,
            "measured_chunks": len(measured)}


def choose(predictions: dict) -> str:
    """The fastest prediction; among those within ``TIE`` of it, the one with the fewest network rows
    per chunk. Host time is measured once and is noisy, so a near-tie is settled by the work that
    does not depend on the clock: fewer rows cost less on every device."""
    fastest = min(p["predicted_ms"] for p in predictions.values())
    close = [k for k, p in predictions.items() if p["predicted_ms"] <= fastest * (1 + TIE)]
    return min(close, key=lambda k: (predictions[k]["rounds"] * predictions[k]["rows_per_round"],
                                     predictions[k]["predicted_ms"]))


@dataclass(frozen=True)
class Auto(SamplerBase):
    """Settings: ``tolerance_scale`` (multiplies every candidate's default tolerance; 1 keeps them)."""

    tolerance_scale: float = 1.0
    _chosen: dict = field(default_factory=dict, compare=False, repr=False)
    name = "auto"
    exact = True
    accepts_initial_guess = True
    supports_prefix = True

    def __post_init__(self):
        if isinstance(self.tolerance_scale, bool) or not isinstance(self.tolerance_scale, (int, float)) \
                or not 0 < self.tolerance_scale <= 100:
            from parapolicy.errors import SamplerConfigError

            raise SamplerConfigError(f"auto tolerance_scale must be a number in (0, 100], got {self.tolerance_scale!r}")

    @property
    def calibration(self) -> dict | None:
        """The latest calibration: cost curve, each candidate's prediction, the choice, and the
        measured time of the later calls it served."""
        return with_measured(list(self._chosen.values())[-1]) if self._chosen else None  # kept in calibration order

    @property
    def calibrations(self) -> list[dict]:
        """Every calibration, one per schedule and batch shape met, in order (``calibration``'s form)."""
        return [with_measured(entry) for entry in self._chosen.values()]

    def candidates(self) -> list[tuple[str, object]]:
        out = []
        for label, name, settings in CANDIDATES:
            sampler = make_sampler(name, **settings)
            if self.tolerance_scale != 1.0:
                sampler = make_sampler(name, **settings, tolerance=sampler.tolerance * self.tolerance_scale)
            out.append((label, sampler))
        return out

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        key = (problem.rule.scheduler_name, tuple(problem.rule.timesteps.tolist()), tuple(problem.x_T.shape),
               str(problem.x_T.device))
        calibrating = key not in self._chosen
        if calibrating:
            self._chosen[key] = {**self._calibrate(problem), "measured_ms": []}
        entry = self._chosen[key]
        result, ms = timed_call(lambda: entry["sampler"].sample(problem), problem.x_T.device)
        if not calibrating:  # what the prediction is compared with: the choice's calls, calibration apart
            entry["measured_ms"].append(ms)
        result.stats.settings = {**result.stats.settings, "chosen": entry["report"]["chosen"]}
        result.stats.sampler = self.name
        return result

    def _calibrate(self, problem: DenoisingProblem) -> dict:
        """Trials on the first sample, the curve, then trials on the first TRIAL_SAMPLES samples for
        the candidates still in the race, within TIE of the fastest (a batch needs at least its
        first sample's rounds, so one that loses at those rounds is out without the larger,
        costlier trial), and the choice among sequential and those."""
        started = time.perf_counter()
        batch, n_steps = problem.batch, problem.rule.num_steps
        predictions = {"sequential": {"rounds": n_steps, "rows_per_round": 1.0, "host_ms": 0.0}}
        samplers = {"sequential": make_sampler("sequential")}
        first = leading_samples(problem, 1)
        for label, sampler in self.candidates():
            predictions[label], samplers[label] = trial_run(sampler, first), sampler
        runnable = {k: v for k, v in predictions.items() if not v.get("fallback")}
        curve = predict(problem, runnable)  # at the rows the candidates need, times this batch
        fastest = min(v["predicted_ms"] for v in runnable.values() if "predicted_ms" in v)
        racing = [k for k, v in runnable.items()
                  if k != "sequential" and v.get("predicted_ms", math.inf) <= fastest * (1 + TIE)]
        if batch > 1 and racing:
            leading = leading_samples(problem, TRIAL_SAMPLES)
            for label in racing:
                predictions[label] = trial_run(samplers[label], leading)
            runnable = {k: v for k, v in predictions.items()
                        if (k == "sequential" or k in racing) and not v.get("fallback")}
            for v in runnable.values():
                v.pop("predicted_ms", None)
            curve = predict(problem, runnable, curve)
        chosen = choose({k: v for k, v in runnable.items() if "predicted_ms" in v})
        report = {"chosen": chosen, "config": samplers[chosen].config(),
                  "batch": batch, "cost_curve_ms": {str(k): v for k, v in curve.items()}, "candidates": predictions,
                  "calibration_s": time.perf_counter() - started}
        return {"sampler": samplers[chosen], "report": report}


def trial_run(sampler, problem: DenoisingProblem) -> dict:
    """One run of ``sampler`` on ``problem``: its rounds, rows per round and host time (the run's
    time outside the network), and the samples it saw."""
    timed = TimedDenoiser(problem.denoise)
    result, total_ms = timed_call(lambda: sampler.sample(problem.replace(denoise=timed)), problem.x_T.device)
    stats, host_ms = result.stats, max(0.0, total_ms - timed.ms)
    return {"rounds": stats.rounds, "rows_per_round": stats.nfe / stats.rounds, "host_ms": host_ms,
            "fallback": stats.fallback, "trial_samples": problem.batch}
