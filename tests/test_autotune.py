"""Window autotuning: a latency curve measured once, rounds counted per window, smallest expected wins."""

import torch

import parapolicy
from parapolicy import autotune
from parapolicy.autotune import autotune_window, call_latency_curve
from parapolicy.rollout import ASSETS_DIR


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
