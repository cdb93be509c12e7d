"""The real-time controller: sync parity with the runner, async queue, warm starts, shutdown."""

import threading
import time

import numpy as np
import pytest
import torch
from test_rollout_cli import toy_ckpt  # noqa: F401  (shared fixture)

import parapolicy
from parapolicy.controller import ControllerError
from parapolicy.runner import run_batch
from parapolicy_envs import MultiStepWrapper
from parapolicy_envs.toy import ToyReachEnv


def test_sync_controller_reproduces_the_rollout_runner(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    run = run_batch(policy, lambda: MultiStepWrapper(ToyReachEnv(), 2, 8, 60), [100000],
                    generator=torch.Generator().manual_seed(0), record_actions=True)
    expected = np.concatenate([chunk[0] for chunk in run.actions])[: run.episodes[0].steps]
    env = ToyReachEnv()
    obs, _ = env.reset(seed=100000)
    got = []
    with parapolicy.Controller(policy, control_hz=10, mode="sync", generator=torch.Generator().manual_seed(0)) as c:
        for _ in range(len(expected)):
            action = c.act(obs)
            got.append(action)
            obs, _, terminated, _, _ = env.step(action)
            if terminated:
                break
    assert np.array_equal(np.stack(got), expected[: len(got)])
    assert c.stats["chunk_latency_ms"]["count"] == int(np.ceil(len(got) / 8))


def test_async_controller_never_runs_dry_at_the_toy_control_rate(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    env = ToyReachEnv()
    obs, _ = env.reset(seed=100001)
    with parapolicy.Controller(policy, control_hz=ToyReachEnv.control_hz, mode="async") as c:
        next_tick = time.perf_counter()
        for _ in range(40):
            obs, *_ = env.step(c.act(obs))
            next_tick += c.period_s
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        stats = c.stats
    assert stats["empty_queue_waits"] == 0
    assert stats["ticks"] == 40 and stats["chunk_latency_ms"]["count"] >= 5


def test_warm_started_picard_matches_cold_picard_with_no_more_rounds(toy_ckpt):  # noqa: F811
    observations = [np.array([0.1 * np.sin(i / 5), -0.6 + 0.03 * i, 0.2, 0.3], dtype=np.float32) for i in range(48)]

    def drive(warm):
        policy = parapolicy.load_policy(toy_ckpt).set_sampler("picard", window=10, tolerance=0.01)
        with parapolicy.Controller(policy, mode="sync", warm_start=warm, generator=torch.Generator().manual_seed(3)) as c:
            actions = np.stack([c.act(o) for o in observations])
        return actions, c.rounds

    cold_actions, cold_rounds = drive(False)
    warm_actions, warm_rounds = drive(True)
    assert np.abs(warm_actions - cold_actions).max() < 1e-2
    assert np.mean(warm_rounds) <= np.mean(cold_rounds)


class _SlowPolicy:
    def __init__(self, policy, delay, fail=False):
        self.policy, self.delay, self.fail, self.spec = policy, delay, fail, policy.spec

    def predict_action(self, obs, generator=None, initial_guess=None):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("GPU fell off the bus")
        return self.policy.predict_action(obs, generator=generator)


def test_close_with_inference_in_flight_does_not_hang(toy_ckpt):  # noqa: F811
    slow = _SlowPolicy(parapolicy.load_policy(toy_ckpt), delay=0.3)
    c = parapolicy.Controller(slow, control_hz=10, mode="async")
    c.act(np.zeros(4, dtype=np.float32))  # first chunk (waits)
    for _ in range(6):
        c.act(np.zeros(4, dtype=np.float32))  # the refill starts in the background
    closer = threading.Thread(target=c.close)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()
    with pytest.raises(ControllerError, match="closed"):
        c.act(np.zeros(4, dtype=np.float32))


def test_background_error_surfaces_on_act(toy_ckpt):  # noqa: F811
    broken = _SlowPolicy(parapolicy.load_policy(toy_ckpt), delay=0.0, fail=True)
    with parapolicy.Controller(broken, mode="async") as c:
        with pytest.raises(ControllerError, match="inference failed: RuntimeError: GPU fell off the bus"):
            c.act(np.zeros(4, dtype=np.float32))
