"""Closed-loop evaluation: seeded episodes driven by one batched policy.

Like upstream's env runners: every env is wrapped in a MultiStepWrapper, a batch of envs is
stepped in lockstep until each episode is done (so the policy always sees the same batch
size), and an episode's score is its max reward. Every sub-env is an :class:`IsolatedEnv`,
so in all three stepping modes (``list``, ``sync``, ``async``) an env that raises is one
failed episode and the others run on exactly as they would without it.

Two hooks keep the loop open for extension: ``obs_adapter`` maps the env's batched
observation to the policy's keys, and ``driver`` turns an observation batch into an action
chunk (the default :class:`ChunkDriver` calls ``predict_action`` once per chunk).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from parapolicy.chunk_log import ChunkLog, ChunkRecord
from parapolicy.eval.isolation import DONE_KEY, ERROR_KEY, RETURN_KEY, IsolatedEnv
from parapolicy.metrics import latency_summary

VECTOR_MODES = ("list", "sync", "async")


@dataclass
class EpisodeResult:
    seed: int
    max_reward: float = 0.0
    sum_reward: float | None = None
    success: bool = False
    steps: int = 0
    error: str | None = None
    finished: bool = False

    @property
    def status(self) -> str:
        """``completed``, ``failed`` (its env raised) or ``not_finished`` (interrupted first)."""
        if self.error is not None:
            return "failed"
        return "completed" if self.finished else "not_finished"


@dataclass
class RunResult:
    """Episodes and chunks of one evaluation pass, in every mode (batched, simulated clock).

    ``step_latency_ms`` is None where steps are not timed (the simulated clock decides when a
    chunk lands, so a step's wait is not a measurement there).
    """

    episodes: list
    chunks: ChunkLog = field(default_factory=ChunkLog)
    step_latency_ms: list | None = field(default_factory=list)
    actions: list = field(default_factory=list)  # per chunk (B, Ta, Da), when recorded
    wall_s: float = 0.0
    interrupted: bool = False

    @classmethod
    def merge(cls, runs) -> "RunResult":
        runs = list(runs)
        timed = all(r.step_latency_ms is not None for r in runs)
        merged = cls(episodes=[], step_latency_ms=[] if timed else None)
        for r in runs:
            merged.episodes.extend(r.episodes)
            merged.chunks.extend(r.chunks)
            merged.actions.extend(r.actions)
            if timed:
                merged.step_latency_ms.extend(r.step_latency_ms)
            merged.wall_s += r.wall_s
            merged.interrupted = merged.interrupted or r.interrupted
        return merged

    def completed(self) -> list:
        return [e for e in self.episodes if e.status == "completed"]

    @property
    def mean_score(self) -> float | None:
        """Upstream's metric over the completed episodes (None when none completed)."""
        done = self.completed()
        return float(np.mean([e.max_reward for e in done])) if done else None

    def to_json(self) -> dict:
        """The run's part of results.json: counts, scores, latency, sampler work, per-seed maps.
        With no completed episode the score and success are None, never a number."""
        done = self.completed()
        chunks = self.chunks.summary()
        return {
            "mean_score": self.mean_score,
            "success_rate": float(np.mean([e.success for e in done])) if done else None,
            "n_episodes": len(self.episodes),
            "n_completed": len(done),
            "n_failed": sum(e.status == "failed" for e in self.episodes),
            "n_not_finished": sum(e.status == "not_finished" for e in self.episodes),
            "latency_chunk_ms": chunks.pop("latency_chunk_ms"),
            "latency_step_ms": latency_summary(self.step_latency_ms) if self.step_latency_ms else None,
            **chunks,
            "wall_s": self.wall_s,
            "interrupted": self.interrupted,
            "rewards_by_seed": {str(e.seed): e.max_reward for e in self.episodes if e.status == "completed"},
            "success_by_seed": {str(e.seed): e.success for e in self.episodes if e.status == "completed"},
            "steps_by_seed": {str(e.seed): e.steps for e in self.episodes if e.status != "not_finished"},
            "errors": {str(e.seed): e.error for e in self.episodes if e.error is not None},
        }


def keyed_obs(obs_key: str = "obs"):
    """The default observation adapter: dict observations keep their keys, arrays get ``obs_key``."""

    def adapt(obs):
        if isinstance(obs, dict):
            return {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}
        return {obs_key: torch.as_tensor(np.asarray(obs))}

    return adapt


class ChunkDriver:
    """Plans one action chunk per call with a batched ``predict_action``."""

    def __init__(self, policy, generator=None):
        self.policy, self.generator = policy, generator

    def __call__(self, obs: dict):
        out = self.policy.predict_action(obs, generator=self.generator)
        return out["action"].detach().cpu().numpy(), ChunkRecord.from_stats(out["stats"])


class _ListEnvs:
    """Sub-envs stepped one by one in this process (a finished one is parked, not stepped)."""

    def __init__(self, make_env, n):
        self.envs = [IsolatedEnv(make_env) for _ in range(n)]

    def reset(self, seeds):
        pairs = [env.reset(seed=int(s)) for env, s in zip(self.envs, seeds)]
        return _stack([o for o, _ in pairs]), [i for _, i in pairs]

    def step(self, actions):
        out = [env.step(a) for env, a in zip(self.envs, actions)]
        return _stack([o[0] for o in out]), [o[1] for o in out], [o[4] for o in out]

    def close(self):
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass


class _VectorEnvs:
    """gymnasium's SyncVectorEnv / AsyncVectorEnv (one process per env) over isolated sub-envs."""

    def __init__(self, make_env, n, mode):
        import gymnasium as gym
        from gymnasium.vector import AutoresetMode

        if mode == "async":
            parent = os.getpid()  # gymnasium builds the first env here too, to read its spaces
            fns = [lambda: _ignoring_ctrl_c(parent, IsolatedEnv, make_env) for _ in range(n)]
            self.vec = gym.vector.AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED, shared_memory=False)
        else:
            fns = [lambda: IsolatedEnv(make_env) for _ in range(n)]
            self.vec = gym.vector.SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)
        self.n = n

    def reset(self, seeds):
        obs, info = self.vec.reset(seed=[int(s) for s in seeds])
        return obs, [_env_info(info, i) for i in range(self.n)]

    def step(self, actions):
        obs, reward, _, _, info = self.vec.step(actions)
        return obs, [float(r) for r in reward], [_env_info(info, i) for i in range(self.n)]

    def close(self):
        self.vec.close()


def _ignoring_ctrl_c(parent: int, build, *args):
    """In an async worker, Ctrl-C is the main process's to handle (it ends the batch and closes
    the workers); a worker killed by it first would break the pipe mid-step. In ``parent``
    itself (where gymnasium also calls the env factory) Ctrl-C keeps working."""
    import signal

    if os.getpid() != parent:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return build(*args)


def _env_info(info: dict, i: int) -> dict:
    """Env ``i``'s entries of a vector env's batched info dict (``_key`` masks say who set ``key``)."""
    out = {}
    for key, value in info.items():
        mask = info.get("_" + key)
        if not key.startswith("_") and (mask is None or bool(mask[i])):
            out[key] = value[i]
    return out


def _stack(obs_list):
    if isinstance(obs_list[0], dict):
        return {k: np.stack([o[k] for o in obs_list]) for k in obs_list[0]}
    return np.stack(obs_list)


def _record_step(run: RunResult, res: EpisodeResult, chunk_ms, env_ms, reward, info) -> int:
    """Update one episode after a chunk; returns the control steps it executed. Per-step latency:
    the first action of a chunk waits for inference, the rest come from the queue."""
    steps = int(info.get("episode_steps", res.steps))
    executed = max(1, steps - res.steps)
    run.step_latency_ms.append(chunk_ms + env_ms / executed)
    run.step_latency_ms.extend([env_ms / executed] * (executed - 1))
    res.max_reward = max(res.max_reward, float(reward))
    res.success = res.success or bool(info.get("is_success", False))
    if info.get(RETURN_KEY) is not None:
        res.sum_reward = float(info[RETURN_KEY])
    advanced = steps - res.steps
    res.steps = steps
    return advanced


def run_batch(policy, make_env, seeds, generator=None, obs_adapter=None, record_actions=False, on_chunk=None,
              max_chunks=None, vector: str = "list", driver=None, obs_key: str = "obs") -> RunResult:
    """One episode per seed, all in lockstep; ``make_env()`` returns a MultiStepWrapper env.

    ``vector``: ``list`` steps the envs in this process one by one; ``sync``/``async`` use
    gymnasium's SyncVectorEnv/AsyncVectorEnv (async: one process per env, stepped in parallel).
    ``on_chunk(steps, finished)`` is called after every chunk with the control steps executed and
    the episodes that ended in it. Ctrl-C ends the batch early with ``interrupted`` set.
    """
    if vector not in VECTOR_MODES:
        from parapolicy.errors import RolloutConfigError

        raise RolloutConfigError(f"vector must be one of {VECTOR_MODES}, got {vector!r}")
    adapt = obs_adapter or keyed_obs(obs_key)
    plan = driver or ChunkDriver(policy, generator)
    started = time.perf_counter()
    results = [EpisodeResult(seed=int(s)) for s in seeds]
    run = RunResult(episodes=results)
    envs = _ListEnvs(make_env, len(seeds)) if vector == "list" else _VectorEnvs(make_env, len(seeds), vector)
    done = [False] * len(seeds)
    try:
        obs, infos = envs.reset(seeds)
        for i, info in enumerate(infos):
            if info.get(ERROR_KEY):
                results[i].error, done[i] = str(info[ERROR_KEY]), True
        report_chunk(on_chunk, 0, [r for r in results if r.error is not None])
        chunks = 0
        while not all(done):
            actions, stats = plan(adapt(obs))
            run.chunks.append(stats)
            if record_actions:
                run.actions.append(actions)
            t0 = time.perf_counter()
            obs, rewards, infos = envs.step(actions)
            active = len(seeds) - sum(done)
            env_ms = (time.perf_counter() - t0) * 1000.0 / (max(1, active) if vector == "list" else 1)
            steps, finished = 0, []
            for i, res in enumerate(results):
                if done[i]:
                    continue
                if infos[i].get(ERROR_KEY):
                    res.error, done[i] = str(infos[i][ERROR_KEY]), True
                    finished.append(res)
                    continue
                steps += _record_step(run, res, stats.latency_ms, env_ms, rewards[i], infos[i])
                if infos[i].get(DONE_KEY):
                    res.finished, done[i] = True, True
                    finished.append(res)
            chunks += 1
            report_chunk(on_chunk, steps, finished)
            if max_chunks is not None and chunks >= max_chunks:
                break
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        envs.close()
    run.wall_s = time.perf_counter() - started
    return run


def report_chunk(on_chunk, steps, finished):
    """Tell a progress callback what one chunk (or tick) did, if it did anything."""
    if on_chunk is not None and (steps or finished):
        on_chunk(steps, finished)


def run_episodes(policy, make_env, seeds, *, noise_seed: int = 0, batch_size: int | None = None,
                 vector: str = "list", obs_adapter=None, on_chunk=None, obs_key: str = "obs",
                 make_driver=ChunkDriver) -> RunResult:
    """All seeds in batches of ``batch_size`` (None: one batch), one noise generator across the run.

    ``make_driver(policy, generator)`` builds the per-chunk policy driver (default: ChunkDriver).
    After Ctrl-C the remaining seeds are listed as ``not_finished``, so counts stay true.
    """
    generator = torch.Generator().manual_seed(int(noise_seed))
    driver = make_driver(policy, generator)
    size = len(seeds) if not batch_size else int(batch_size)
    runs = []
    for start in range(0, len(seeds), size):
        batch = seeds[start : start + size]
        if runs and runs[-1].interrupted:
            runs.append(RunResult(episodes=[EpisodeResult(seed=int(s)) for s in batch], interrupted=True))
            continue
        runs.append(run_batch(policy, make_env, batch, obs_adapter=obs_adapter, on_chunk=on_chunk, vector=vector,
                              driver=driver, obs_key=obs_key))
    return RunResult.merge(runs)
