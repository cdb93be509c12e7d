"""What a sampler is given and what it returns: the contract between Policy and samplers.

A ``DenoisingProblem`` holds everything that fixes the answer (denoiser, step rule, x_T,
pre-drawn noises, inpainting) plus what only changes how it is reached (an initial guess,
a per-round callback, the executor that runs the round kernels). A ``Sampler`` turns it
into a ``SampleResult``; ``Policy`` talks to samplers through nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch

from parapolicy.errors import ParapolicyError, SamplerConfigError
from parapolicy.samplers.executor import EAGER, Executor
from parapolicy.samplers.step_rule import StepRule, make_step_rule


class SamplingCancelled(ParapolicyError):
    """Raised by a problem's callback to stop sampling between rounds (e.g. a closing controller)."""


@dataclass
class DenoisingProblem:
    """One denoising run. ``denoise(x, t)``: x (K*B, *S) window-major (row k*B + b), t (K*B,) -> eps.

    ``rule`` may be a configured diffusers scheduler; it is frozen into a ``StepRule``.
    ``noises`` (N, B, *S) are the pre-drawn per-step draws (``draw_noises``); a rule that
    draws none must get none. ``init_guess`` (N+1, B, *S) is a whole-trajectory starting
    point for samplers that accept one (state 0 is always x_T). ``extra`` holds the
    sampler's own random draws (``Sampler.extra_draws``). ``callback(event)`` is called
    after every round with a dict (round, start, accepted, ...); raising
    ``SamplingCancelled`` there stops the run.
    """

    denoise: Callable
    rule: StepRule
    x_T: torch.Tensor
    noises: torch.Tensor | None = None
    cond_data: torch.Tensor | None = None
    cond_mask: torch.Tensor | None = None
    init_guess: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)
    callback: Callable | None = None
    executor: Executor = EAGER
    guess_is_prior: bool = False  # init_guess is a sampler's own stand-in start, not the caller's guess

    def __post_init__(self):
        self.rule = make_step_rule(self.rule)
        rule, x_T = self.rule, self.x_T
        if any(rule.draws_noise):
            if self.noises is None:
                raise SamplerConfigError("this step rule draws noise at each step: pass the `noises` from draw_noises()")
            expected = (rule.num_steps, *x_T.shape)
            if tuple(self.noises.shape) != expected:
                raise SamplerConfigError(
                    f"noises has shape {tuple(self.noises.shape)}, expected {expected} (steps, *x_T.shape)")
        elif self.noises is not None:
            raise SamplerConfigError(
                "noises were given but this step rule draws none (DDIM with eta=0, ODE solvers): they would be "
                "ignored; draw them with the same rule (draw_noises(rule, ...)) or pass none")
        if (self.cond_data is None) != (self.cond_mask is None):
            raise SamplerConfigError("inpainting needs both cond_data and cond_mask (or neither)")
        if self.init_guess is not None and tuple(self.init_guess.shape) != (rule.num_steps + 1, *x_T.shape):
            raise SamplerConfigError(
                f"init_guess has shape {tuple(self.init_guess.shape)}, expected {(rule.num_steps + 1, *x_T.shape)}")

    @property
    def caller_guess(self) -> bool:
        """Whether the run starts from a guess the caller gave (stats' ``initial_guess``)."""
        return self.init_guess is not None and not self.guess_is_prior

    @property
    def batch(self) -> int:
        return int(self.x_T.shape[0])

    def replace(self, **changes) -> "DenoisingProblem":
        return dataclasses.replace(self, **changes)


@dataclass
class SampleStats:
    """One name per quantity. ``rounds``: sequential network-call depth; ``nfe``: network
    evaluations (rows) per sample; ``max_rows_per_round``: the most rows per sample one call
    evaluated (with ``nfe / rounds`` the mean, the two numbers a call's cost grows with); ``max_error``: the largest accepted change in tolerance units
    (0 for samplers without a convergence test); ``fallback``: why the sequential chain was
    used instead, or None; ``captured``: whether the rounds ran as CUDA-graph replays;
    ``initial_guess``: whether the run started from the problem's initial guess.
    ``settings``: the sampler's own fields (window, tolerance, ...)."""

    sampler: str
    rounds: int
    nfe: int
    max_error: float = 0.0
    max_rows_per_round: int = 1
    fallback: str | None = None
    captured: bool = False
    initial_guess: bool = False
    settings: dict = field(default_factory=dict)

    @property
    def rows_per_round(self) -> float:
        """Mean network rows per sample in one call."""
        return self.nfe / self.rounds if self.rounds else 0.0

    def as_dict(self) -> dict:
        """Flat dict for results.json, wandb and controller stats."""
        return {"sampler": self.sampler, "rounds": self.rounds, "nfe": self.nfe,
                "rows_per_round": self.rows_per_round, "max_rows_per_round": self.max_rows_per_round,
                "max_error": self.max_error,
                "fallback": self.fallback, "captured": self.captured, "initial_guess": self.initial_guess, **self.settings}


@dataclass
class SampleResult:
    sample: torch.Tensor  # (B, *S) the denoised trajectory
    stats: SampleStats
    eps: torch.Tensor | None = None  # (N, B, *S) each step's latest network output (a next call's initial guess)


@runtime_checkable
class Sampler(Protocol):
    """What ``Policy`` needs of a sampler; ``parapolicy.samplers.base.SamplerBase`` gives the defaults."""

    name: str
    accepts_initial_guess: bool

    def config(self) -> dict: ...

    def extra_draws(self, x_T: torch.Tensor, generator) -> dict: ...

    def sample(self, problem: DenoisingProblem) -> SampleResult: ...


# Sampler budgets: one chunk stays within seconds on a CPU whatever the settings say.
MAX_GRID_STEPS = 1_000  # steps of a sampler's own grid (blocks x points), a window, a round count
MAX_ROWS_PER_SAMPLE = 10_000  # network rows per sample that a fixed round budget implies


def check_positive_int(sampler: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SamplerConfigError(f"{sampler} {name} must be an integer >= 1, got {value!r}")


def check_bounded_int(sampler: str, name: str, value, upper: int = MAX_GRID_STEPS) -> None:
    """An integer in [1, upper]."""
    check_positive_int(sampler, name, value)
    if value > upper:
        raise SamplerConfigError(f"{sampler} {name} must be at most {upper}, got {value!r}")


def check_grid_budget(sampler: str, blocks: int, points: int, rounds_per_block: int, rows_per_round: int) -> None:
    """A blocks x points grid within ``MAX_GRID_STEPS`` and its rounds within ``MAX_ROWS_PER_SAMPLE`` rows."""
    if blocks * points > MAX_GRID_STEPS:
        raise SamplerConfigError(f"{sampler} blocks x points must be at most {MAX_GRID_STEPS} grid steps, "
                                 f"got {blocks} x {points} = {blocks * points}")
    rows = blocks * rounds_per_block * rows_per_round
    if rows > MAX_ROWS_PER_SAMPLE:
        raise SamplerConfigError(f"{sampler} blocks={blocks}, points={points} with these iterations run {rows} "
                                 f"network rows per sample; at most {MAX_ROWS_PER_SAMPLE} (fewer iterations or points)")


def check_tolerance(sampler: str, value) -> None:
    """Tolerances are in units of a step's noise std: a finite positive number below 1e6."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 < value < 1e6:
        raise SamplerConfigError(f"{sampler} tolerance must be a finite number > 0 and below 1e6, got {value!r}")
