"""Window autotuning: a latency curve measured once, rounds counted per window, smallest expected wins."""

import torch

import parapolicy
from parapolicy import autotune
from parapolicy.autotune import autotune_window, call_latency_curve
from parapolicy.eval.build import ASSETS_DIR


def toy_policy():
    return parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")


def test_autotune_scores_every_candidate_by_rounds_times_call_cost_and_applies_the_best():
    policy = toy_policy()
    obs = {"obs": torch.zeros(2, 2, 4)}
    result = autotune_window(policy, obs, windows=[4, 50], repeats=1)
    names = [(row["name"], row.get("window")) for row in result["table"]]
    assert names == [("sequential", None), ("picard", 4), ("picard", 50)]
    assert set(result["curve"]) == {2, 8, 100}  # rows = window x batch
    for row in result["table"]:
        rows = 2 * row.get("window", 1)
        assert row["call_ms"] == result["curve"][rows] > 0
        assert row["expected_ms"] == row["rounds"] * row["call_ms"]
    assert result["table"][0]["rounds"] == 50  # sequential: one call per step
    policy.set_sampler("picard", window=4, tolerance=0.1)
    assert result["table"][1]["rounds"] == policy.predict_action(obs, generator=torch.Generator().manual_seed(0))[
        "stats"]["rounds"]
    best = min(result["table"], key=lambda row: row["expected_ms"])
    assert result["best"]["name"] == best["name"] and result["best"].get("window") == best.get("window")


def test_autotune_applies_the_winner_or_leaves_the_sampler_alone():
    policy = toy_policy()
    obs = {"obs": torch.zeros(1, 2, 4)}
    result = autotune_window(policy, obs, windows=[4], repeats=1)
    assert policy.sampler.name == result["best"]["name"]
    policy.set_sampler("newton_picard")
    autotune_window(policy, obs, windows=[4], repeats=1, apply=False)
    assert policy.sampler.name == "newton_picard"


def test_latency_curve_is_measured_once_per_network_and_shape(monkeypatch):
    policy = toy_policy()
    obs = {"obs": torch.zeros(1, 2, 4)}
    first = call_latency_curve(policy, obs, [1, 3], repeats=1)
    calls = []
    monkeypatch.setattr(autotune.time, "perf_counter", lambda: calls.append(1) or 0.0)
    again = call_latency_curve(policy, obs, [3, 1], repeats=1)
    assert again == first and not calls  # served from the cache: no timing at all
    call_latency_curve(policy, obs, [1, 5], repeats=1)
    assert calls  # a new row count is measured


def test_expected_chunk_cost_pays_one_sync_per_k_rounds_and_the_masked_rounds():
    from parapolicy.autotune import expected_chunk_ms

    assert expected_chunk_ms(10, 3.0, 1.0, 1) == (30.0, 10)  # k = 1: rounds x measured call
    assert expected_chunk_ms(10, 3.0, 1.0, 4) == (3 * 1.0 + 12 * 2.0, 12)  # 3 syncs, 12 rounds run, 2 wasted
    assert expected_chunk_ms(10, 3.0, 1.0, 10) == (1.0 + 10 * 2.0, 10)


def test_autotune_picks_window_and_rounds_per_sync_together_from_the_curve(monkeypatch):
    """A fake GPU-like curve: flat up to 32 rows, then 4x; syncs cost most of a small call."""
    policy = toy_policy()
    obs = {"obs": torch.zeros(1, 2, 4)}
    fake = lambda rows: 1.0 if rows <= 32 else 4.0  # noqa: E731
    monkeypatch.setattr(autotune, "call_latency_curve", lambda p, o, rows, repeats=5: {int(r): fake(r) for r in rows})
    result = autotune_window(policy, obs, windows=[8, 32, 50], rounds_per_sync=(1, 2, 4, 8), sync_ms=0.6,
                             repeats=1, apply=True)
    rows = {(r["name"], r.get("window"), r.get("rounds_per_sync")): r for r in result["table"]}
    assert len(rows) == 1 + 3 * 4 and result["sync_ms"] == 0.6
    for (name, window, k), row in rows.items():
        if name == "sequential":
            continue
        syncs = -(-int(row["rounds"]) // k)
        assert row["executed_rounds"] == syncs * k
        assert abs(row["expected_ms"] - (syncs * 0.6 + syncs * k * (fake(window) - 0.6))) < 1e-9
    best = min(result["table"], key=lambda row: row["expected_ms"])
    assert result["best"] == {k: best[k] for k in ("name", "window", "max_rows", "tolerance", "rounds_per_sync")}
    assert best["window"] == 32 and best["rounds_per_sync"] > 1  # the knee, with syncs amortised
    assert policy.sampler.rounds_per_sync == best["rounds_per_sync"] and policy.sampler.window == 32 == policy.sampler.max_rows
    # free syncs: one round per sync wastes nothing and wins
    again = autotune_window(policy, obs, windows=[32], rounds_per_sync=(1, 8), sync_ms=0.0, repeats=1, apply=False)
    assert again["best"]["rounds_per_sync"] == 1
