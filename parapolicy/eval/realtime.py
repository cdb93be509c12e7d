"""Episodes on a simulated clock: inference takes exactly ``delay_ticks`` env ticks.

Real-time control is judged by what the robot does while a chunk is being computed, which
depends on the machine. Here the clock is simulated instead, so results are reproducible
anywhere: the env advances one tick per action, and a chunk planned from the observation
at tick k becomes usable at tick k + d. Every episode of the batch ticks in lockstep and
shares each batched inference.

Chunk n >= 1 is planned at tick n * s and executes its steps d .. d + s - 1 (chunk 0 is
planned at tick 0 and executes steps 0 .. s + d - 1: the robot waits once at the start).
The execution horizon s = max(n_action_steps - d, d): the next inference starts as soon
as the last one lands, or when it must to land before the plan runs out; one inference at
a time, as on the robot.

* ``sync``: the env waits for every chunk (as if d = 0; s = n_action_steps).
* ``async`` (naive): switch to the new chunk at its index d.
* ``ensemble``: ACT's temporal ensembling, every tick averages all landed chunks that
  cover it with weights exp(-m * i), i = 0 for the oldest.
* ``rtc``: real-time chunking, the new chunk is sampled with its first d actions fixed to
  the ones executed meanwhile (``guidance`` hard or soft, ``parapolicy.samplers.prefix``).

A switch is the first tick a chunk's own (not frozen) action executes; its jump is the L2
distance between that action and the previous tick's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from parapolicy.chunking import (MODES, Plan, PlannedSample, check_guidance, ensemble_action, executed_slice,
                                 rtc_prefix, stack_observations)
from parapolicy.errors import ControllerConfigError
from parapolicy.eval.episodes import EpisodeResult, RunResult, report_chunk
from parapolicy.eval.isolation import DONE_KEY, ERROR_KEY, RETURN_KEY, IsolatedEnv
from parapolicy.samplers.prefix import DEFAULT_MAX_GUIDANCE_WEIGHT, ActionPrefix


@dataclass(frozen=True)
class RealtimeSettings:
    mode: str = "rtc"
    delay_ticks: int = 0
    guidance: str = "soft"
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT  # soft guidance only (RTC's beta)
    ensemble_decay: float = 0.01  # ACT's m
    warm_start: bool = False  # samplers that take a guess start each chunk from the previous chunk's plan

    def __post_init__(self):
        if not isinstance(self.mode, str) or self.mode not in MODES:
            raise ControllerConfigError(f"realtime mode must be one of {MODES}, got {self.mode!r}")
        if isinstance(self.delay_ticks, bool) or not isinstance(self.delay_ticks, int) or self.delay_ticks < 0:
            raise ControllerConfigError(f"delay_ticks must be an integer >= 0, got {self.delay_ticks!r}")
        check_guidance(self.guidance, self.max_guidance_weight)

    @property
    def soft_guided(self) -> bool:
        return self.mode == "rtc" and self.guidance == "soft"

    def horizon(self, n_action_steps: int, available: int) -> tuple[int, int]:
        """(d, s) for this mode; one clear error when the chunk cannot cover the delay."""
        if self.mode == "sync":
            return 0, n_action_steps
        d = self.delay_ticks
        s = max(n_action_steps - d, d, 1)
        if d + s > available:
            raise ControllerConfigError(f"delay_ticks={d} needs chunks of >= {d + s} actions, the policy plans "
                                        f"{available}")
        return d, s


@dataclass
class RealtimeResult:
    """A simulated-clock run: its episodes and chunk log (``run``, as every mode reports them),
    plus what only real-time control has: the delay, the switches and their jumps."""

    settings: RealtimeSettings
    delay: int
    execution_horizon: int
    run: RunResult = field(default_factory=lambda: RunResult(episodes=[], step_latency_ms=None))
    jumps: list = field(default_factory=list)  # per switch and episode
    step_sizes: list = field(default_factory=list)  # every consecutive pair of executed actions
    plans: list = field(default_factory=list)  # (planned_at, actions (B, L, Da) with NaN rows for done episodes)

    @property
    def scores(self) -> list:
        return [e.max_reward for e in self.run.episodes]

    def summary(self) -> dict:
        """results.json's ``realtime`` block (scores, counts and rounds are the run's, at the top level)."""
        jumps = np.asarray(self.jumps, dtype=float)
        return {
            "mode": self.settings.mode,
            "guidance": self.settings.guidance if self.settings.mode == "rtc" else None,
            "max_guidance_weight": self.settings.max_guidance_weight if self.settings.soft_guided else None,
            "delay_ticks": self.delay,
            "execution_horizon": self.execution_horizon,
            "warm_start": self.settings.warm_start,
            "n_switches": int(jumps.size),
            "mean_jump": float(jumps.mean()) if jumps.size else None,
            "max_jump": float(jumps.max()) if jumps.size else None,
            "mean_step": float(np.mean(self.step_sizes)) if self.step_sizes else None,
        }

    def to_json(self) -> dict:
        return {**self.run.to_json(), "realtime": self.summary()}

    @classmethod
    def merge(cls, results) -> "RealtimeResult":
        first = results[0]
        merged = cls(first.settings, first.delay, first.execution_horizon,
                     run=RunResult.merge([r.run for r in results]))
        for r in results:
            merged.jumps.extend(r.jumps)
            merged.step_sizes.extend(r.step_sizes)
        return merged


class _Clock:
    """When chunks are planned and land on the simulated clock; which action each tick executes."""

    def __init__(self, settings: RealtimeSettings, d: int, s: int):
        self.settings, self.d, self.s = settings, d, s
        self.chunks: list[Plan] = []  # actions (B, L, Da), NaN rows for episodes not planned

    def plans_now(self, tick: int) -> bool:
        return tick == 0 or (tick >= self.s and tick % self.s == 0)

    def land(self, tick: int, actions: np.ndarray, prefix: ActionPrefix | None) -> None:
        """The chunk planned at ``tick`` executes from d ticks later (the first one at once)."""
        frozen = prefix.frozen if prefix is not None else 0
        self.chunks.append(Plan(tick, actions, usable_from=tick if tick == 0 else tick + self.d, frozen=frozen))

    def action(self, tick: int) -> tuple[np.ndarray, bool]:
        """(actions (B, Da) for this tick, whether a chunk switches in at this tick)."""
        newest = [c for c in self.chunks if c.covers(tick)][-1]
        switch = newest.switch_tick == tick and newest.planned_at > 0
        if self.settings.mode != "ensemble":
            return newest.action_at(tick), switch
        return ensemble_action(self.chunks, tick, self.settings.ensemble_decay), switch

    def prefix(self, tick: int, rows) -> ActionPrefix | None:
        """The previous chunk's plan from ``tick`` on; its first d actions execute meanwhile."""
        if self.settings.mode != "rtc" or not self.chunks:
            return None
        return rtc_prefix(self.chunks[-1], tick, self.d, self.settings.guidance, self.settings.max_guidance_weight,
                          rows=rows)


def run_realtime(policy, make_env, seeds, settings: RealtimeSettings, generator=None, obs_key: str = "obs",
                 max_steps: int = 300, drop_finished: bool = False, on_chunk=None) -> RealtimeResult:
    """One episode per seed on the simulated clock; ``make_env()`` returns an unwrapped env.

    ``drop_finished=True`` plans only for running episodes (cheaper; the noise each episode
    sees then depends on which others are still running). ``on_chunk(steps, finished)`` is
    called after every tick with the control steps executed and the episodes that ended, as
    in the batched runner. An env that raises is one failed episode; Ctrl-C ends the run with
    the unfinished episodes counted as not finished.
    """
    from parapolicy_envs import MultiStepWrapper

    spec = policy.spec
    executable = executed_slice(spec)
    available = executable.stop - executable.start
    d, s = settings.horizon(spec.n_action_steps, available)
    started = time.perf_counter()
    episodes = [EpisodeResult(seed=int(seed)) for seed in seeds]
    result = RealtimeResult(settings, d, s, run=RunResult(episodes=episodes, step_latency_ms=None))
    envs = [IsolatedEnv(lambda: MultiStepWrapper(make_env(), spec.n_obs_steps, 1, max_steps)) for _ in seeds]
    obs, done = [None] * len(seeds), np.zeros(len(seeds), dtype=bool)
    clock, previous, last_sample = _Clock(settings, d, s), None, None
    tick = 0
    try:
        for i, (env, seed) in enumerate(zip(envs, seeds)):
            obs[i], info = env.reset(seed=int(seed))
            if info.get(ERROR_KEY):
                episodes[i].error, done[i] = str(info[ERROR_KEY]), True
        report_chunk(on_chunk, 0, [e for e in episodes if e.error is not None])
        while not done.all():
            if clock.plans_now(tick):
                rows = np.flatnonzero(~done) if drop_finished else np.arange(len(seeds))
                guess = last_sample.guess(tick, rows) if settings.warm_start and last_sample is not None else None
                prefix = clock.prefix(tick, rows)
                out = policy.predict_action(stack_observations([obs[i] for i in rows], obs_key), generator=generator,
                                            initial_guess=guess, prefix=prefix)
                result.run.chunks.append(out["stats"])
                planned = np.full((len(seeds), available, spec.action_dim), np.nan)
                planned[rows] = out["action_pred"][:, executable].detach().cpu().numpy()
                clock.land(tick, planned, prefix)
                last_sample = PlannedSample(out["sample"].detach(), tick, rows)
            actions, switch = clock.action(tick)
            steps, finished = 0, []
            for i in np.flatnonzero(~done):
                if previous is not None:
                    step = float(np.linalg.norm(actions[i] - previous[i]))
                    result.step_sizes.append(step)
                    if switch:
                        result.jumps.append(step)
                obs[i], reward, _, _, info = envs[i].step(actions[i])
                episode = episodes[i]
                if info.get(ERROR_KEY):
                    episode.error, done[i] = str(info[ERROR_KEY]), True
                    finished.append(episode)
                    continue
                episode.max_reward = max(episode.max_reward, float(reward))
                episode.success = episode.success or bool(info.get("is_success", False))
                episode.sum_reward = info.get(RETURN_KEY, episode.sum_reward)
                episode.steps, steps = int(info.get("episode_steps", episode.steps + 1)), steps + 1
                if info.get(DONE_KEY):
                    episode.finished, done[i] = True, True
                    finished.append(episode)
            report_chunk(on_chunk, steps, finished)
            previous = actions
            tick += 1
    except KeyboardInterrupt:
        result.run.interrupted = True
    finally:
        for env in envs:
            env.close()
    result.run.wall_s = time.perf_counter() - started
    result.plans = [(c.planned_at, c.actions) for c in clock.chunks]
    return result


def realtime_settings(ctl) -> RealtimeSettings:
    """The rollout cfg's ``controller`` node as settings (null weight: the library default)."""
    weight = ctl.get("max_guidance_weight")  # 0 or junk: the settings' own error
    return RealtimeSettings(str(ctl.mode), int(ctl.get("delay_ticks") or 0), str(ctl.get("guidance", "soft")),
                            DEFAULT_MAX_GUIDANCE_WEIGHT if weight is None else weight)


def run_realtime_episodes(policy, make_env, seeds, settings: RealtimeSettings, *, noise_seed: int = 0,
                          batch_size: int | None = None, obs_key: str = "obs", max_steps: int = 300,
                          on_chunk=None) -> RealtimeResult:
    """All seeds in batches of ``batch_size`` (None: one batch) with one noise generator across the
    run, as the batched runner; after Ctrl-C the remaining seeds are counted as not finished."""
    generator = torch.Generator().manual_seed(int(noise_seed))
    size = int(batch_size) if batch_size else len(seeds)
    results = []
    for i in range(0, len(seeds), size):
        batch = seeds[i : i + size]
        if results and results[-1].run.interrupted:
            skipped = RunResult(episodes=[EpisodeResult(seed=int(s)) for s in batch], step_latency_ms=None,
                                interrupted=True)
            results.append(RealtimeResult(settings, results[-1].delay, results[-1].execution_horizon, run=skipped))
            continue
        results.append(run_realtime(policy, make_env, batch, settings, generator=generator, obs_key=obs_key,
                                    max_steps=max_steps, on_chunk=on_chunk))
    return RealtimeResult.merge(results)
