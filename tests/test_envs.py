"""Environments, the multi-step wrapper and the scripted experts."""

import json
import os

import gymnasium as gym
import numpy as np
import pytest

import parapolicy_envs  # noqa: F401  (registers the parapolicy/ envs)
from parapolicy_envs import MultiStepWrapper
from parapolicy_envs.pusht import PushTDPEnv, upstream_initial_state
from parapolicy_envs.pusht_expert import PushTExpert
from parapolicy_envs.toy import ToyReachEnv, ToyReachExpert

KEYPOINTS_JSON = os.path.join(os.path.dirname(parapolicy_envs.__file__), "data", "pusht_dp_keypoints.json")


def test_registered_env_ids_make_the_right_spaces():
    toy = gym.make("parapolicy/ToyReach-v0")
    assert toy.observation_space.shape == (4,) and toy.action_space.shape == (2,)
    kp = gym.make("parapolicy/PushT-keypoints-v0")
    obs, info = kp.reset(seed=100000)
    assert obs.shape == (20,) and info["state"].shape == (5,)
    img = gym.make("parapolicy/PushT-image-v0")
    obs, _ = img.reset(seed=100000)
    assert obs["image"].shape == (3, 96, 96) and obs["image"].dtype == np.float32
    assert 0.0 <= obs["image"].min() and obs["image"].max() <= 1.0 and obs["agent_pos"].shape == (2,)


def test_same_seed_same_episode_and_different_seeds_differ():
    def rollout(seed):
        env = PushTDPEnv("keypoints")
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for a in ([100.0, 100.0], [300.0, 250.0], [256.0, 256.0]):
            out.append(env.step(np.array(a))[0])
        return np.stack(out)

    assert np.array_equal(rollout(100003), rollout(100003))
    assert not np.allclose(rollout(100003), rollout(100004))


def test_pusht_seed_gives_upstream_initial_state():
    env = PushTDPEnv("keypoints")
    obs, info = env.reset(seed=100000)
    drawn = upstream_initial_state(100000)
    rs = np.random.RandomState(100000)
    assert list(drawn[:4]) == [rs.randint(50, 450), rs.randint(50, 450), rs.randint(100, 400), rs.randint(100, 400)]
    assert np.array_equal(obs[18:20], drawn[:2])  # the kinematic agent sits exactly where it was put


def test_keypoint_obs_is_the_transformed_upstream_keypoint_map():
    local = np.asarray(json.load(open(KEYPOINTS_JSON))["local_keypoint_map"]["block"])
    env = PushTDPEnv("keypoints")
    obs, _ = env.reset(seed=100001)
    obs, *_ = env.step(np.array([250.0, 250.0]))
    block = env.sim.block
    c, s = np.cos(block.angle), np.sin(block.angle)
    expected = np.stack([block.position.x + c * local[:, 0] - s * local[:, 1],
                         block.position.y + s * local[:, 0] + c * local[:, 1]], axis=1)
    assert local.shape == (9, 2)
    np.testing.assert_allclose(obs[:18], expected.reshape(-1), rtol=0, atol=1e-9)
    np.testing.assert_allclose(obs[18:20], np.asarray(env.sim.agent.position), atol=0)


class _Counter(gym.Env):
    """obs = step count; reward = step/10; done after `length` steps."""

    observation_space = gym.spaces.Box(0, 1e6, shape=(1,), dtype=np.float64)
    action_space = gym.spaces.Box(-1, 1, shape=(1,), dtype=np.float64)

    def __init__(self, length=5, rewards=None):
        self.length, self.rewards = length, rewards

    def reset(self, *, seed=None, options=None):
        self.t = 0
        return np.array([0.0]), {}

    def step(self, action):
        self.t += 1
        reward = self.rewards[self.t - 1] if self.rewards else self.t / 10
        return np.array([float(self.t)]), reward, self.t >= self.length, False, {}


def test_wrapper_pads_history_runs_chunks_and_aggregates_max_reward():
    env = MultiStepWrapper(_Counter(length=5, rewards=[0.1, 0.9, 0.2, 0.3, 0.1]), n_obs_steps=3, n_action_steps=2)
    obs, _ = env.reset(seed=0)
    assert obs.tolist() == [[0.0], [0.0], [0.0]]  # padded with the first observation
    obs, reward, terminated, truncated, info = env.step(np.zeros((2, 1)))
    assert obs.tolist() == [[0.0], [1.0], [2.0]] and reward == 0.9 and info["episode_steps"] == 2
    obs, reward, *_ = env.step(np.zeros((2, 1)))
    assert obs.tolist() == [[2.0], [3.0], [4.0]] and reward == 0.9  # max over the whole episode
    obs, reward, terminated, truncated, info = env.step(np.zeros((2, 1)))
    assert terminated and info["episode_steps"] == 5  # stopped after one action: the episode ended
    obs2, *_ = env.step(np.zeros((2, 1)))
    assert np.array_equal(obs, obs2) and env.done


def test_wrapper_truncates_at_max_episode_steps():
    env = MultiStepWrapper(_Counter(length=100), n_obs_steps=2, n_action_steps=4, max_episode_steps=6)
    env.reset()
    env.step(np.zeros((4, 1)))
    _, _, terminated, truncated, info = env.step(np.zeros((4, 1)))
    assert truncated and not terminated and info["episode_steps"] == 6


def test_toy_expert_reaches_a_goal_on_fixed_seeds():
    successes = 0
    for seed in range(5):
        env, expert = ToyReachEnv(), ToyReachExpert(np.random.default_rng(seed))
        obs, _ = env.reset(seed=seed)
        expert.reset()
        for _ in range(60):
            obs, reward, terminated, _, info = env.step(expert.act(obs))
            if terminated:
                break
        successes += info["is_success"]
    assert successes == 5


@pytest.mark.parametrize("seed", [100000, 100001])
def test_pusht_expert_solves_fixed_seeds(seed):
    env = PushTDPEnv("keypoints")
    env.reset(seed=seed)
    expert = PushTExpert(np.random.default_rng(seed))
    for _ in range(300):
        _, reward, terminated, _, info = env.step(expert.act(env))
        if terminated:
            break
    assert info["is_success"] and reward == 1.0
