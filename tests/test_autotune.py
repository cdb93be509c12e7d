"""Window autotuning measures candidates and applies the fastest."""

import torch

import parapolicy
from parapolicy.autotune import autotune_window
from parapolicy.rollout import ASSETS_DIR


def test_autotune_times_every_candidate_and_applies_the_fastest():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    obs = {"obs": torch.zeros(1, 2, 4)}
    result = autotune_window(policy, obs, windows=[4, 50], repeats=1)
    names = [(row["name"], row.get("window")) for row in result["table"]]
    assert names == [("sequential", None), ("picard", 4), ("picard", 50)]
    fastest = min(result["table"], key=lambda row: row["latency_ms_p50"])
    assert result["best"]["name"] == fastest["name"] and result["best"].get("window") == fastest.get("window")
    assert policy.sampler.name == fastest["name"]
    assert all(row["latency_ms_p50"] > 0 and row["rounds"] >= 1 for row in result["table"])
