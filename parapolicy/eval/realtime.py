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

from dataclasses import dataclass, field

import numpy as np
import torch

from parapolicy.controller import check_number, sampler_counts, shifted_plan
from parapolicy.errors import ControllerConfigError
from parapolicy.samplers.prefix import DEFAULT_MAX_GUIDANCE_WEIGHT, GUIDANCE_FORMS, ActionPrefix

MODES = ("sync", "async", "ensemble", "rtc")


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
        if not isinstance(self.guidance, str) or self.guidance not in GUIDANCE_FORMS:
            raise ControllerConfigError(f"guidance must be one of {GUIDANCE_FORMS}, got {self.guidance!r}")
        check_number("max_guidance_weight", self.max_guidance_weight)

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
    settings: RealtimeSettings
    delay: int
    execution_horizon: int
    scores: list
    successes: list
    steps: list
    jumps: list = field(default_factory=list)  # per switch and episode
    step_sizes: list = field(default_factory=list)  # every consecutive pair of executed actions
    rounds: list = field(default_factory=list)
    nfe: list = field(default_factory=list)
    fallbacks: int = 0
    chunks: list = field(default_factory=list)  # (planned_at, actions (B, L, Da) with NaN rows for done episodes)

    def summary(self) -> dict:
        jumps = np.asarray(self.jumps, dtype=float)
        return {
            "mode": self.settings.mode,
            "guidance": self.settings.guidance if self.settings.mode == "rtc" else None,
            "max_guidance_weight": self.settings.max_guidance_weight if self.settings.soft_guided else None,
            "delay_ticks": self.delay,
            "execution_horizon": self.execution_horizon,
            "mean_score": float(np.mean(self.scores)),
            "success_rate": float(np.mean(self.successes)),
            "n_episodes": len(self.scores),
            "mean_jump": float(jumps.mean()) if jumps.size else 0.0,
            "max_jump": float(jumps.max()) if jumps.size else 0.0,
            "mean_step": float(np.mean(self.step_sizes)) if self.step_sizes else 0.0,
            "n_chunks": len(self.rounds),
            "rounds_per_chunk": float(np.mean(self.rounds)) if self.rounds else 0.0,
            "nfe_per_chunk": float(np.mean(self.nfe)) if self.nfe else 0.0,
            "fallbacks": int(self.fallbacks),
            "warm_start": self.settings.warm_start,
        }


def _batch(obs_list, obs_key):
    if isinstance(obs_list[0], dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in obs_list])) for k in obs_list[0]}
    return {obs_key: torch.as_tensor(np.stack(obs_list))}


class _Clock:
    """Which chunks exist and which action each tick executes."""

    def __init__(self, settings: RealtimeSettings, d: int, s: int):
        self.settings, self.d, self.s = settings, d, s
        self.chunks = []  # (planned_at, usable_from, actions (B, L, Da))

    def plans_now(self, tick: int) -> bool:
        return tick == 0 or (tick >= self.s and tick % self.s == 0)

    def usable_from(self, tick: int) -> int:
        return tick if tick == 0 else tick + self.d

    def action(self, tick: int) -> tuple[np.ndarray, bool]:
        """(actions (B, Da) for this tick, whether a chunk switches in at this tick)."""
        landed = [c for c in self.chunks if c[1] <= tick and tick - c[0] < c[2].shape[1]]
        newest = landed[-1]
        switch = newest[1] == tick and newest[0] > 0
        if self.settings.mode != "ensemble":
            return newest[2][:, tick - newest[0]], switch
        weights = np.exp(-self.settings.ensemble_decay * np.arange(len(landed)))
        stacked = np.stack([c[2][:, tick - c[0]] for c in landed])
        return np.tensordot(weights / weights.sum(), stacked, axes=1), switch

    def prefix(self, tick: int, rows) -> ActionPrefix | None:
        """The previous chunk's plan from ``tick`` on; its first d actions execute meanwhile."""
        if self.settings.mode != "rtc" or not self.chunks:
            return None
        planned_at, _, actions = self.chunks[-1]
        known = torch.as_tensor(actions[rows, tick - planned_at :])
        return ActionPrefix(known, frozen=self.d, guidance=self.settings.guidance,
                            max_guidance_weight=self.settings.max_guidance_weight)


def run_realtime(policy, make_env, seeds, settings: RealtimeSettings, generator=None, obs_key: str = "obs",
                 max_steps: int = 300, drop_finished: bool = False) -> RealtimeResult:
    """One episode per seed on the simulated clock; ``make_env()`` returns an unwrapped env.

    ``drop_finished=True`` plans only for running episodes (cheaper; the noise each episode
    sees then depends on which others are still running).
    """
    from parapolicy_envs import MultiStepWrapper

    spec = policy.spec
    start = 0 if spec.pred_action_steps_only else spec.action_start
    available = (spec.n_action_steps if spec.pred_action_steps_only else spec.horizon) - start
    d, s = settings.horizon(spec.n_action_steps, available)
    envs = [MultiStepWrapper(make_env(), spec.n_obs_steps, 1, max_steps) for _ in seeds]
    obs, scores, successes = [], np.zeros(len(seeds)), np.zeros(len(seeds), dtype=bool)
    for env, seed in zip(envs, seeds):
        o, info = env.reset(seed=int(seed))
        obs.append(o)
    done = np.zeros(len(seeds), dtype=bool)
    result = RealtimeResult(settings, d, s, [], [], [])
    clock, previous, last_sample = _Clock(settings, d, s), None, None
    tick = 0
    try:
        while not done.all():
            if clock.plans_now(tick):
                rows = np.flatnonzero(~done) if drop_finished else np.arange(len(seeds))
                guess = None
                if settings.warm_start and last_sample is not None:
                    sample, planned_at, out_rows = last_sample
                    guess = shifted_plan(sample[np.searchsorted(out_rows, rows)], tick - planned_at)
                out = policy.predict_action(_batch([obs[i] for i in rows], obs_key), generator=generator,
                                            initial_guess=guess, prefix=clock.prefix(tick, rows))
                rounds, nfe, fallback = sampler_counts(out["stats"])
                result.rounds.append(rounds)
                result.nfe.append(nfe)
                result.fallbacks += fallback is not None
                planned = np.full((len(seeds), available, spec.action_dim), np.nan)
                planned[rows] = out["action_pred"][:, start : start + available].detach().cpu().numpy()
                clock.chunks.append((tick, clock.usable_from(tick), planned))
                last_sample = (out["sample"].detach(), tick, rows)
            actions, switch = clock.action(tick)
            for i in np.flatnonzero(~done):
                if previous is not None:
                    step = float(np.linalg.norm(actions[i] - previous[i]))
                    result.step_sizes.append(step)
                    if switch:
                        result.jumps.append(step)
                obs[i], reward, terminated, truncated, info = envs[i].step(actions[i])
                scores[i] = max(scores[i], float(reward))
                successes[i] = successes[i] or bool(info.get("is_success", False))
                done[i] = bool(terminated or truncated)
            previous = actions
            tick += 1
    finally:
        for env in envs:
            env.close()
    result.scores, result.successes = scores.tolist(), successes.tolist()
    result.steps = [len(env.rewards) for env in envs]
    result.chunks = [(c[0], c[2]) for c in clock.chunks]
    return result


def run_realtime_episodes(policy, cfg, seeds) -> dict:
    """The rollout CLI's ``controller.mode=...`` path: results.json fields for one realtime run.

    ``cfg.controller`` holds mode, delay_ticks, guidance and max_guidance_weight; seeds run in batches of
    ``cfg.n_envs`` with one noise generator across the run, as plain rollouts do.
    """
    import gymnasium as gym

    ctl = cfg.controller
    weight = ctl.get("max_guidance_weight")  # null: the library default; 0 or junk: the settings' error
    settings = RealtimeSettings(str(ctl.mode), int(ctl.get("delay_ticks") or 0), str(ctl.get("guidance", "soft")),
                                DEFAULT_MAX_GUIDANCE_WEIGHT if weight is None else weight)
    kwargs = dict(cfg.env.get("kwargs") or {})
    generator = torch.Generator().manual_seed(int(cfg.noise_seed))
    size = int(cfg.n_envs) if cfg.get("n_envs") else len(seeds)
    runs = [run_realtime(policy, lambda: gym.make(cfg.env.id, **kwargs), seeds[i : i + size], settings,
                         generator=generator, obs_key=cfg.env.obs_key, max_steps=int(cfg.env.max_episode_steps))
            for i in range(0, len(seeds), size)]
    merged = runs[0]
    for other in runs[1:]:
        for name in ("scores", "successes", "steps", "jumps", "step_sizes", "rounds", "nfe"):
            getattr(merged, name).extend(getattr(other, name))
        merged.fallbacks += other.fallbacks
    summary = merged.summary()
    return {"mean_score": summary["mean_score"], "success_rate": summary["success_rate"],
            "realtime": summary, "rewards_by_seed": {str(s): r for s, r in zip(seeds, merged.scores)}}
