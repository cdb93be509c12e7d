"""Newton-Picard started from a Gaussian-prior trajectory instead of x_T everywhere.

Picard-type samplers start from a guessed trajectory and refine it; the default guess
(every state = x_T) is far from the answer, most of all for the low-noise states, so the
first rounds are spent moving states that are nowhere near their fixed point. Here the
guess is the trajectory of the same chain with the network replaced by the exact
denoiser of a zero-mean Gaussian N(0, PRIOR_STD^2) target (normalized data lives in
[-1, 1]), pushed through the scheduler's own step with this call's x_T and pre-drawn
noises: no network call, and it carries the call's noise realisation, which dominates the
high-noise states. The refinement is ``newton_picard``'s (secant-slope Newton rounds, one
batched network call each), so the fixed point, the tolerance test and the non-finite
fallback are unchanged: the answer is the sequential one, only the rounds change. A
caller's ``init_guess`` (e.g. the controller's warm start) replaces the prior guess.

The same stand-in with a mean builds warm starts: ``prior_trajectory(..., mean=m, std=0)``
is the chain whose denoiser always predicts the clean sample ``m`` (e.g. the previous
chunk's plan, shifted), so its states carry this call's noises around a guessed answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.newton_picard import NewtonPicard
from parapolicy.samplers.problem import DenoisingProblem, SampleResult
from parapolicy.samplers.step_rule import make_step_rule

PRIOR_STD = 0.5  # std of the stand-in Gaussian target, in normalized units (data spans [-1, 1])


def gaussian_denoiser_output(x: torch.Tensor, alpha_bar: float, prediction_type: str, std: float = PRIOR_STD,
                             mean: torch.Tensor | None = None):
    """What an exact denoiser of N(mean, std^2) data (mean 0 when None) predicts at x, in the
    scheduler's parametrisation; std = 0 is the point mass at ``mean``."""
    signal = alpha_bar * std**2 + (1 - alpha_bar)
    if mean is None:
        eps = math.sqrt(1 - alpha_bar) / signal * x
        x0 = math.sqrt(alpha_bar) * std**2 / signal * x
    else:
        x0 = mean + math.sqrt(alpha_bar) * std**2 / signal * (x - math.sqrt(alpha_bar) * mean)
        eps = (x - math.sqrt(alpha_bar) * x0) / math.sqrt(1 - alpha_bar)
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return math.sqrt(alpha_bar) * eps - math.sqrt(1 - alpha_bar) * x0
    return eps


def prior_trajectory(rule, x_T, noises=None, cond_data=None, cond_mask=None, std: float = PRIOR_STD,
                     mean: torch.Tensor | None = None):
    """The whole trajectory (N+1, *x_T.shape) of the chain driven by the Gaussian stand-in denoiser
    (``mean``: None, or a clean-sample guess broadcastable to x_T)."""
    rule = make_step_rule(rule)
    prediction = getattr(rule.config, "prediction_type", "epsilon")
    alphas = rule.alphas_cumprod.double()
    memory = rule.new_memory(x_T)
    states, x = [x_T], x_T
    for i in range(rule.num_steps):
        x = impose(x, cond_data, cond_mask)
        out = gaussian_denoiser_output(x, float(alphas[int(rule.timesteps[i])]), prediction, std, mean)
        step_noise = noises[i : i + 1] if noises is not None else None
        x = rule.transition(i, x[None], out[None], step_noise, memory)[0]
        states.append(x)
    return torch.stack(states)


def start_from_prior(problem: DenoisingProblem) -> tuple[DenoisingProblem, bool]:
    """The problem started from ``prior_trajectory`` unless the caller gave a guess; and whether they did."""
    if problem.init_guess is not None:
        return problem, True
    guess = prior_trajectory(problem.rule, problem.x_T, problem.noises, problem.cond_data, problem.cond_mask)
    return problem.replace(init_guess=guess, guess_is_prior=True), False


@dataclass(frozen=True)
class NewtonPrior(NewtonPicard):
    """Settings: window, tolerance and max_rows, as ``newton_picard`` (whose kernel and driver it keeps).

    Its default tolerance is tighter: from the prior's start, a state can stop moving while
    still further from the answer on sharp networks (``benchmarks/samplers.md``)."""

    tolerance: float = 0.003
    name = "newton_prior"

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        problem, _ = start_from_prior(problem)
        return super().sample(problem)

    def settings_for(self, problem: DenoisingProblem, window: int) -> dict:
        """``newton_picard``'s settings and which start ran: the prior, or the caller's (warm) guess."""
        return {**super().settings_for(problem, window), "start": "prior" if problem.guess_is_prior else "warm"}
