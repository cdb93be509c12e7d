"""Seeded episode batches: failure isolation in every stepping mode, Ctrl-C, true counts."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import parapolicy
from parapolicy.eval.build import make_env_factory
from parapolicy.chunk_log import ChunkLog, ChunkRecord
from parapolicy.eval.episodes import EpisodeResult, RunResult, run_batch, run_episodes
from parapolicy.eval.isolation import DONE_KEY, ERROR_KEY, IsolatedEnv

TOY = OmegaConf.create({"id": "parapolicy/ToyReach-v0", "kwargs": {}, "max_episode_steps": 60, "obs_key": "obs"})
SEEDS = [100000, 100001, 100002]
BAD = 100001


class FailsFor(gym.Wrapper):
    """Raises for one seed: at reset, or at its ninth control step."""

    def __init__(self, env, phase):
        super().__init__(env)
        self.phase, self.seed, self.t = phase, None, 0

    def reset(self, *, seed=None, options=None):
        self.seed, self.t = seed, 0
        if self.phase == "reset" and seed == BAD:
            raise RuntimeError("simulator exploded")
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        if self.phase == "step" and self.seed == BAD and self.t == 9:
            raise RuntimeError("simulator exploded")
        return self.env.step(action)


@pytest.fixture(scope="module")
def policy(toy_ckpt):
    return parapolicy.load_policy(toy_ckpt)


@pytest.fixture(scope="module")
def reference(policy):
    return run_batch(policy, make_env_factory(TOY, policy.spec), SEEDS, generator=torch.Generator().manual_seed(0),
                     record_actions=True)


def _episode(e):
    return (e.seed, e.max_reward, e.sum_reward, e.success, e.steps, e.status)


@pytest.mark.parametrize("vector", ["list", "sync", "async"])
@pytest.mark.parametrize("phase", ["reset", "step"])
def test_a_failing_env_is_one_failed_episode_and_the_others_are_unchanged(policy, reference, vector, phase):
    make = make_env_factory(TOY, policy.spec, wrappers=[lambda env: FailsFor(env, phase)])
    run = run_batch(policy, make, SEEDS, generator=torch.Generator().manual_seed(0), record_actions=True,
                    vector=vector)
    bad = run.episodes[1]
    assert bad.status == "failed" and bad.error == f"{phase}: RuntimeError: simulator exploded"
    assert [_episode(e) for e in run.episodes if e.seed != BAD] == [_episode(e) for e in reference.episodes
                                                                    if e.seed != BAD]
    assert all(e.status == "completed" for e in reference.episodes)
    assert len(run.actions) == len(reference.actions)
    assert all(np.array_equal(a[[0, 2]], b[[0, 2]]) for a, b in zip(run.actions, reference.actions))
    summary = run.to_json()
    assert (summary["n_completed"], summary["n_failed"], summary["n_episodes"]) == (2, 1, 3)
    assert summary["mean_score"] == np.mean([e.max_reward for e in reference.episodes if e.seed != BAD])
    assert summary["errors"] == {str(BAD): bad.error} and str(BAD) not in summary["rewards_by_seed"]


def test_a_crashed_sub_env_is_rebuilt_for_the_next_seed():
    made = []

    class Crashy(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,))
        action_space = gym.spaces.Box(-1, 1, (1,))

        def reset(self, *, seed=None, options=None):
            return np.ones(2, np.float32), {}

        def step(self, action):
            raise ValueError("boom")

    env = IsolatedEnv(lambda: made.append(1) or Crashy())
    obs, _ = env.reset(seed=1)
    out = env.step(np.zeros(1))
    assert out[4] == {ERROR_KEY: "step: ValueError: boom", DONE_KEY: True} and np.array_equal(out[0], obs)
    assert out[2] is False  # the end is reported in info: vector envs refuse to step a terminated env
    assert env.step(np.zeros(1))[4] == {}  # reported once; the broken env is not stepped again
    env.reset(seed=2)
    assert len(made) == 2 and not env.broken


def test_ctrl_c_keeps_the_finished_part_and_counts_the_rest(policy):
    make = make_env_factory(TOY, policy.spec)

    class Interrupting:
        calls = 0

        def predict_action(self, obs, generator=None):
            Interrupting.calls += 1
            if Interrupting.calls == 3:
                raise KeyboardInterrupt
            return policy.predict_action(obs, generator=generator)

    run = run_episodes(Interrupting(), make, [5, 6, 7, 8], batch_size=2)
    assert run.interrupted and len(run.chunks) == 2
    summary = run.to_json()
    assert (summary["n_episodes"], summary["n_completed"], summary["n_not_finished"]) == (4, 0, 4)
    assert summary["mean_score"] is None and summary["steps_by_seed"] == {}


@pytest.mark.parametrize("vector", ["list", "sync", "async"])
def test_a_real_ctrl_c_interrupts_every_vector_mode_and_keeps_finished_episodes(policy, vector):
    """gymnasium's AsyncVectorEnv builds the first env in this process: the workers' SIGINT-ignore
    must not leak here, or Ctrl-C is silently ignored and the run ends as if nothing happened."""
    import os
    import signal

    class CtrlCInSecondBatch:
        spec, calls = policy.spec, 0

        def predict_action(self, obs, generator=None):
            CtrlCInSecondBatch.calls += 1
            if CtrlCInSecondBatch.calls == 3:  # the first batch (two 8-step chunks) has finished
                os.kill(os.getpid(), signal.SIGINT)
            return policy.predict_action(obs, generator=generator)

    short = OmegaConf.merge(TOY, {"max_episode_steps": 16})
    # Python's Ctrl-C handler, as a terminal-started run has it (a run started with `cmd &` ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = run_episodes(CtrlCInSecondBatch(), make_env_factory(short, policy.spec), SEEDS + [100003],
                           batch_size=2, vector=vector)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)
    summary = run.to_json()
    assert run.interrupted and summary["interrupted"]
    assert (summary["n_completed"], summary["n_not_finished"]) == (2, 2)
    assert sorted(summary["rewards_by_seed"]) == ["100000", "100001"]


def test_merge_keeps_every_episode_and_chunk():
    a = RunResult(episodes=[], chunks=ChunkLog([ChunkRecord(1.0, 3, 10, 4, "nan")]), wall_s=1.0)
    b = RunResult(episodes=[], chunks=ChunkLog([ChunkRecord(2.0, 5, 10, 2)]), wall_s=2.0, interrupted=True)
    m = RunResult.merge([a, b])
    assert (m.chunks.latency_ms, m.chunks.rounds, m.chunks.fallbacks, m.wall_s, m.interrupted) == (
        [1.0, 2.0], [3, 5], ["nan"], 3.0, True)
    summary = m.to_json()
    assert (summary["n_fallbacks"], summary["rounds_per_chunk"], summary["nfe_per_chunk"]) == (1, 4.0, 10.0)
    assert (summary["rows_per_round"], summary["max_rows_per_round"]) == (20 / 8, 4)  # all rows over all rounds


def test_an_empty_run_reports_counts_and_never_a_score_or_a_latency():
    summary = RunResult(episodes=[EpisodeResult(seed=1)], interrupted=True).to_json()
    assert (summary["n_episodes"], summary["n_completed"], summary["n_not_finished"], summary["n_chunks"]) == (1, 0, 1, 0)
    for key in ("mean_score", "success_rate", "latency_chunk_ms", "latency_step_ms", "rounds_per_chunk",
                "rows_per_round", "max_rows_per_round", "nfe_per_chunk"):
        assert summary[key] is None, key


def test_fallbacks_are_counted_with_their_reasons(policy):
    class FallingBack:
        def predict_action(self, obs, generator=None):
            out = policy.predict_action(obs, generator=generator)
            out["stats"] = dict(out["stats"], fallback="non-finite state in round 2")
            return out

    run = run_batch(FallingBack(), make_env_factory(TOY, policy.spec), [100000],
                    generator=torch.Generator().manual_seed(0))
    summary = run.to_json()
    assert summary["n_fallbacks"] == summary["n_chunks"] == len(run.chunks) > 0
    assert summary["fallback_reasons"] == ["non-finite state in round 2"]
    assert run_batch(policy, make_env_factory(TOY, policy.spec), [100000], max_chunks=1).to_json()["n_fallbacks"] == 0
