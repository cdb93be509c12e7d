"""The shipped checkpoints load, are small enough to ship, and act in their environments."""

import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import parapolicy
import parapolicy_envs  # noqa: F401
from parapolicy.eval.build import ASSETS_DIR


@pytest.mark.parametrize("name, env_id", [("pusht_keypoints_unet.ckpt", "parapolicy/PushT-keypoints-v0"),
                                          ("toy_reach_unet.ckpt", "parapolicy/ToyReach-v0")])
def test_shipped_checkpoint_loads_and_acts(name, env_id):
    path = os.path.join(ASSETS_DIR, name)
    assert os.path.getsize(path) <= 25 * 1024 * 1024
    assert os.path.isfile(path.replace(".ckpt", ".md"))  # the model card
    policy = parapolicy.load_policy(path)
    assert policy.spec.source["weights"] == "ema_model" and policy.spec.family == "unet_lowdim"
    env = gym.make(env_id)
    obs, _ = env.reset(seed=100000)
    out = policy.predict_action({"obs": torch.as_tensor(np.stack([obs, obs]))[None]},
                                generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (1, policy.spec.n_action_steps, env.action_space.shape[0])
    low, high = env.action_space.low, env.action_space.high
    assert ((out["action"].numpy() >= low - 0.05 * (high - low)) & (out["action"].numpy() <= high + 0.05 * (high - low))).all()
