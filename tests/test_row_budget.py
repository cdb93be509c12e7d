"""The row budget: every exact parallel sampler takes ``max_rows`` and no network call exceeds it.

A round's cost grows with the rows in its one batched call, so the budget is what keeps a
sampler that saves rounds from losing time. Rows are counted at the network, per call.
"""

import dataclasses

import pytest
import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers import SAMPLERS, draw_noises, make_sampler
from tests.support.helpers import CountingDenoiser, SmoothNetDenoiser, make_scheduler, solve

ONE_ROW = {"sequential"}  # one row per call by construction
CHOOSERS = {"auto"}  # runs one of the others, each with its own budget
BUDGETED = sorted(name for name, cls in SAMPLERS.items() if cls.exact and name not in ONE_ROW | CHOOSERS)


def test_every_exact_parallel_sampler_declares_a_row_budget():
    assert BUDGETED, "no exact parallel sampler registered"
    for name in BUDGETED:
        assert "max_rows" in {f.name for f in dataclasses.fields(SAMPLERS[name])}, name


@pytest.mark.parametrize("name", [n for n in BUDGETED if n != "jacobian_newton"])
def test_the_window_samplers_default_to_64_rows(name):
    assert SAMPLERS[name]().max_rows == 64


@pytest.mark.parametrize("name", BUDGETED)
@pytest.mark.parametrize("kind, steps, rows, batch", [("ddpm", 100, 64, 1), ("ddpm", 100, 7, 2), ("ddim", 16, 5, 3)])
def test_no_call_exceeds_the_budget_and_the_stats_count_every_row(name, kind, steps, rows, batch):
    sched = make_scheduler(kind, steps)
    draws = draw_noises(sched, (batch, 4, 2), torch.Generator().manual_seed(7))
    counting = CountingDenoiser(SmoothNetDenoiser(8, scheduler=sched))
    if name == "jacobian_newton":  # every state costs its value and one row per state entry (4 x 2)
        rows = max(rows, 9)
    sampler = make_sampler(name, max_rows=rows, tolerance=1e-3)
    out = solve(sampler, counting, sched, draws.x_T, draws.noises)
    assert counting.calls and max(counting.calls) <= rows * batch, (name, max(counting.calls))
    assert all(c % batch == 0 for c in counting.calls)
    assert out.stats.max_rows_per_round <= rows and out.stats.fallback is None
    assert out.stats.nfe == sum(counting.calls) // batch


@pytest.mark.parametrize("name", ["picard", "newton_picard"])
def test_a_window_wider_than_the_budget_runs_at_the_budget_and_says_so(name):
    sched = make_scheduler("ddpm", 100)
    draws = draw_noises(sched, (1, 4, 2), torch.Generator().manual_seed(1))
    counting = CountingDenoiser(SmoothNetDenoiser(8, scheduler=sched))
    out = solve(make_sampler(name, window=100, max_rows=10), counting, sched, draws.x_T, draws.noises)
    assert max(counting.calls) == 10 and out.stats.settings["window"] == 10 and out.stats.settings["max_rows"] == 10


def test_a_jacobian_budget_below_one_state_is_refused_naming_both_numbers():
    sched = make_scheduler("ddpm", 10)
    draws = draw_noises(sched, (1, 4, 2), torch.Generator().manual_seed(1))
    with pytest.raises(SamplerConfigError, match=r"expected >= 9, got 8"):
        solve(make_sampler("jacobian_newton", max_rows=8), SmoothNetDenoiser(8, scheduler=sched), sched, draws.x_T,
              draws.noises)


@pytest.mark.parametrize("name", BUDGETED)
def test_a_bad_budget_is_one_clear_error(name):
    with pytest.raises(SamplerConfigError, match=f"{name} max_rows must be an integer >= 1, got 0"):
        make_sampler(name, max_rows=0)
