"""Closed-loop evaluation: a batch of seeded episodes driven by one batched policy.

Like upstream's env runners: every env is wrapped in a MultiStepWrapper, the whole batch
is stepped until every episode is done (so the policy always sees the same batch size),
and an episode's score is its max reward. An env that raises is recorded as a failed
episode with its error and the others carry on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from parapolicy.metrics import latency_summary


@dataclass
class EpisodeResult:
    seed: int
    max_reward: float = 0.0
    success: bool = False
    steps: int = 0
    error: str | None = None


@dataclass
class RunResult:
    episodes: list
    chunk_latency_ms: list = field(default_factory=list)
    step_latency_ms: list = field(default_factory=list)
    nfe: list = field(default_factory=list)
    rounds: list = field(default_factory=list)
    actions: list = field(default_factory=list)  # per chunk (B, Ta, Da), when recorded
    wall_s: float = 0.0
    interrupted: bool = False

    def summary(self) -> dict:
        rewards = [e.max_reward for e in self.episodes]
        return {
            "mean_score": float(np.mean(rewards)) if rewards else 0.0,
            "success_rate": float(np.mean([e.success for e in self.episodes])) if self.episodes else 0.0,
            "n_episodes": len(self.episodes),
            "n_failed_with_error": sum(e.error is not None for e in self.episodes),
            "latency_chunk_ms": latency_summary(self.chunk_latency_ms),
            "latency_step_ms": latency_summary(self.step_latency_ms),
            "nfe_per_chunk": float(np.mean(self.nfe)) if self.nfe else 0.0,
            "rounds_per_chunk": float(np.mean(self.rounds)) if self.rounds else 0.0,
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
        }


def _plan_chunk(policy, batch, generator, run: RunResult, record_actions: bool):
    """One batched predict_action; records its latency and sampler stats on ``run``."""
    out = policy.predict_action(batch, generator=generator)
    stats = out["stats"]
    run.chunk_latency_ms.append(stats["latency_ms"])
    run.nfe.append(stats.get("nfe", 0))
    run.rounds.append(stats.get("rounds", 0))
    actions = out["action"].detach().cpu().numpy()
    if record_actions:
        run.actions.append(actions)
    return stats["latency_ms"], actions


def _record_step(run: RunResult, res: EpisodeResult, chunk_ms, env_ms, reward, success, episode_steps) -> None:
    """Update one episode after a chunk; per-step latency: the first action of a chunk waits
    for inference, the rest come from the queue."""
    executed = max(1, int(episode_steps) - res.steps)
    run.step_latency_ms.append(chunk_ms + env_ms / executed)
    run.step_latency_ms.extend([env_ms / executed] * (executed - 1))
    res.max_reward = max(res.max_reward, float(reward))
    res.success = res.success or bool(success)
    res.steps = int(episode_steps)


def _batch_obs(obs_list, obs_key):
    if isinstance(obs_list[0], dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in obs_list])) for k in obs_list[0]}
    return {obs_key: torch.as_tensor(np.stack(obs_list))}


def run_batch(policy, make_env, seeds, generator=None, obs_key="obs", record_actions=False,
              on_chunk=None, max_chunks=None, vector: str = "list") -> RunResult:
    """Run one episode per seed, all in lockstep; ``make_env()`` returns a MultiStepWrapper env.

    ``vector``: ``"list"`` steps the envs in this process one by one, isolating errors per
    env; ``"sync"``/``"async"`` use gymnasium's SyncVectorEnv/AsyncVectorEnv (async: one
    process per env, stepped in parallel; an error there fails the batch's open episodes).
    """
    if vector in ("sync", "async"):
        return _run_vector(policy, make_env, seeds, generator, obs_key, record_actions, on_chunk, vector)
    if vector != "list":
        raise ValueError(f"vector must be 'list', 'sync' or 'async', got {vector!r}")
    started = time.perf_counter()
    envs = [make_env() for _ in seeds]
    results = [EpisodeResult(seed=int(s)) for s in seeds]
    obs, done = [], []
    for env, res in zip(envs, results):
        try:
            o, _ = env.reset(seed=res.seed)
            obs.append(o)
            done.append(False)
        except Exception as exc:  # noqa: BLE001 - recorded per episode
            res.error = f"reset: {type(exc).__name__}: {exc}"
            obs.append(None)
            done.append(True)
    template = next((o for o in obs if o is not None), None)
    obs = [o if o is not None else template for o in obs]
    run = RunResult(episodes=results)
    chunks = 0
    try:
        while not all(done) and template is not None:
            chunk_ms, actions = _plan_chunk(policy, _batch_obs(obs, obs_key), generator, run, record_actions)
            for i, (env, res) in enumerate(zip(envs, results)):
                if done[i]:
                    continue
                t0 = time.perf_counter()
                try:
                    o, reward, terminated, truncated, info = env.step(actions[i])
                except Exception as exc:  # noqa: BLE001
                    res.error = f"step: {type(exc).__name__}: {exc}"
                    done[i] = True
                    continue
                env_ms = (time.perf_counter() - t0) * 1000.0
                _record_step(run, res, chunk_ms, env_ms, reward, info.get("is_success", False),
                             info.get("episode_steps", res.steps + len(actions[i])))
                obs[i] = o
                done[i] = bool(terminated or truncated)
            chunks += 1
            if on_chunk is not None:
                on_chunk(chunks, sum(done), len(done))
            if max_chunks is not None and chunks >= max_chunks:
                break
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        for env in envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
    run.wall_s = time.perf_counter() - started
    return run


def _run_vector(policy, make_env, seeds, generator, obs_key, record_actions, on_chunk, vector) -> RunResult:
    import gymnasium as gym
    from gymnasium.vector import AutoresetMode

    started = time.perf_counter()
    results = [EpisodeResult(seed=int(s)) for s in seeds]
    run = RunResult(episodes=results)
    cls = gym.vector.AsyncVectorEnv if vector == "async" else gym.vector.SyncVectorEnv
    kwargs = {"shared_memory": False} if vector == "async" else {}
    envs = cls([make_env] * len(seeds), autoreset_mode=AutoresetMode.DISABLED, **kwargs)
    done = np.zeros(len(seeds), dtype=bool)
    chunks = 0
    try:
        obs, _ = envs.reset(seed=[int(s) for s in seeds])
        while not done.all():
            batch = {k: torch.as_tensor(v) for k, v in obs.items()} if isinstance(obs, dict) else {obs_key: torch.as_tensor(obs)}
            chunk_ms, actions = _plan_chunk(policy, batch, generator, run, record_actions)
            t0 = time.perf_counter()
            obs, reward, terminated, truncated, info = envs.step(actions)
            env_ms = (time.perf_counter() - t0) * 1000.0
            steps = info.get("episode_steps", np.zeros(len(seeds), dtype=int))
            success = info.get("is_success", np.zeros(len(seeds), dtype=bool))
            for i, res in enumerate(results):
                if done[i]:
                    continue
                _record_step(run, res, chunk_ms, env_ms, reward[i], success[i], steps[i])
                done[i] = bool(terminated[i] or truncated[i])
            chunks += 1
            if on_chunk is not None:
                on_chunk(chunks, int(done.sum()), len(done))
    except KeyboardInterrupt:
        run.interrupted = True
    except Exception as exc:  # noqa: BLE001 - the vector env cannot isolate one env's failure
        for i, res in enumerate(results):
            if not done[i]:
                res.error = f"vector env: {type(exc).__name__}: {exc}"
    finally:
        envs.close()
    run.wall_s = time.perf_counter() - started
    return run
