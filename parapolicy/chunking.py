"""Real-time chunking without a clock: what the wall-clock Controller and the simulated clock share.

Both plan a chunk from the observation at one tick and execute it at later ticks while the
next one is computed; they differ only in how time passes (``parapolicy.controller``
measures it, ``parapolicy.eval.realtime`` counts it). The facts they must agree on live
here once: the modes, which actions of ``action_pred`` a chunk executes, a planned chunk and
the action it gives at a tick, where a chunk switches in, the RTC prefix, the warm-start
guess and how observations are batched for ``predict_action``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from parapolicy.errors import ControllerConfigError
from parapolicy.samplers.prefix import GUIDANCE_FORMS, ActionPrefix

MODES = ("sync", "async", "ensemble", "rtc")
AVERAGING_MODES = ("ensemble",)  # a tick's action averages every landed chunk: needs all chunks, not one queue


def check_number(name: str, value, minimum_exclusive=0.0):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= minimum_exclusive:
        raise ControllerConfigError(f"{name} must be a finite number > {minimum_exclusive:g}, got {value!r}")


def check_guidance(guidance, max_guidance_weight) -> None:
    """The RTC prefix settings, refused with the same words by the Controller and the simulated clock."""
    if not isinstance(guidance, str) or guidance not in GUIDANCE_FORMS:
        raise ControllerConfigError(f"guidance must be one of {GUIDANCE_FORMS}, got {guidance!r}")
    check_number("max_guidance_weight", max_guidance_weight)


def executed_slice(spec) -> slice:
    """Where the actions a chunk can execute sit in ``action_pred``: from upstream's executed-slice
    start to the end of the plan (a policy that predicts only its action steps plans just those)."""
    start = 0 if spec.pred_action_steps_only else spec.action_start
    end = spec.n_action_steps if spec.pred_action_steps_only else spec.horizon
    return slice(start, end)


def stack_observations(items: list, obs_key: str) -> dict:
    """Observations (dicts of arrays, or arrays for ``obs_key``) stacked along a new first axis."""
    if isinstance(items[0], dict):
        return {k: torch.as_tensor(np.stack([o[k] for o in items])) for k in items[0]}
    return {obs_key: torch.as_tensor(np.stack(items))}


def shifted_plan(plan: torch.Tensor, shift: int):
    """A tensor (..., horizon, D) -- a denoised sample or per-step outputs -- moved ``shift``
    ticks along the horizon, the tail padded with the last step; None when nothing overlaps.

    The warm-start guess for a chunk planned ``shift`` ticks after the one that produced it.
    """
    if shift >= plan.shape[-2]:
        return None
    tail = plan[..., shift:, :]
    return torch.cat([tail, tail[..., -1:, :].expand(*tail.shape[:-2], shift, tail.shape[-1])], dim=-2)


@dataclass(frozen=True)
class Plan:
    """A chunk's executable actions (B, L, Da), planned from the observation at tick ``planned_at``.

    It executes from ``usable_from`` (the tick it landed) until ``until`` (exclusive; default:
    its last action); its first ``frozen`` actions were fixed to the previous plan's.
    """

    planned_at: int
    actions: np.ndarray
    usable_from: int
    frozen: int = 0
    until: int | None = None

    @property
    def end(self) -> int:
        return self.planned_at + self.actions.shape[1] if self.until is None else self.until

    def covers(self, tick: int) -> bool:
        return self.usable_from <= tick < self.end

    def remaining(self, tick: int) -> int:
        """Ticks from ``tick`` on that this plan still executes."""
        return max(0, self.end - tick)

    def action_at(self, tick: int) -> np.ndarray:
        """The actions (B, Da) this plan gives at ``tick``."""
        return self.actions[:, tick - self.planned_at]

    def rest(self, tick: int) -> np.ndarray:
        """The actions (B, L', Da) this plan holds from ``tick`` on."""
        return self.actions[:, tick - self.planned_at :]

    @property
    def switch_tick(self) -> int:
        """The first tick this plan's own (not frozen) action executes: where it switches in."""
        return self.planned_at + max(self.usable_from - self.planned_at, self.frozen)

    def holding_last(self, tick: int) -> "Plan":
        """A plan that repeats this one's last executed action at ``tick`` only: what the robot
        does when a chunk landed after its whole execution window had passed."""
        last = self.end - 1 - self.planned_at
        return Plan(tick, self.actions[:, last : last + 1], usable_from=tick, until=tick + 1)


def ensemble_action(plans: list, tick: int, decay: float) -> np.ndarray:
    """ACT's temporal ensembling: every landed plan covering ``tick``, weighted exp(-decay * i),
    i = 0 for the oldest."""
    landed = [p for p in plans if p.covers(tick)]
    weights = np.exp(-decay * np.arange(len(landed)))
    stacked = np.stack([p.action_at(tick) for p in landed])
    return np.tensordot(weights / weights.sum(), stacked, axes=1)


def rtc_prefix(plan: Plan, tick: int, frozen: int, guidance: str, max_guidance_weight: float,
               rows=None) -> ActionPrefix:
    """Real-time chunking: the old plan from ``tick`` on (its batch ``rows``; None: all), whose first
    ``frozen`` actions execute while the new chunk is computed."""
    known = plan.rest(tick) if rows is None else plan.rest(tick)[rows]
    return ActionPrefix(torch.as_tensor(known), frozen=frozen, guidance=guidance,
                        max_guidance_weight=max_guidance_weight)


@dataclass(frozen=True)
class PlannedSample:
    """The denoised sample (b, horizon, D, normalized units) a chunk was drawn as, kept to warm-start
    the next chunk; ``rows``: the batch rows it covers (None: every row)."""

    sample: torch.Tensor
    planned_at: int
    rows: np.ndarray | None = None

    def guess(self, tick: int, rows=None):
        """The warm-start guess for a chunk planned at ``tick`` (for batch ``rows``); None when the
        old sample no longer overlaps."""
        sample = self.sample if rows is None else self.sample[np.searchsorted(self.rows, rows)]
        return shifted_plan(sample, tick - self.planned_at)
