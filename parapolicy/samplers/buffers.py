"""The driver's state as typed buffers: what a round kernel reads and writes.

A kernel touches only these tensors and never moves data to the host, so an executor may
run it directly or capture it once and replay it. Every tensor is therefore allocated once
per kernel build and refilled in place before each call (``ProblemInputs.fill``,
``start_trajectory``); a captured kernel reads the same storage on every replay. In a
captured or k-rounds-per-sync kernel the window has a fixed width, and slots past the last
step read and write ``pad`` padding rows that never count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from parapolicy.samplers.problem import DenoisingProblem


@dataclass
class ProblemInputs:
    """This call's inputs in static tensors: ``timesteps`` (N+pad,), ``noise`` (N+pad, B, *S),
    ``cond_data``/``cond_mask`` (B, *S); None where the problem has none."""

    timesteps: torch.Tensor
    noise: torch.Tensor | None
    cond_data: torch.Tensor | None
    cond_mask: torch.Tensor | None

    @classmethod
    def allocate(cls, problem: DenoisingProblem, rows: int, pad: int) -> "ProblemInputs":
        """Zeroed inputs with ``rows`` noise rows, and the timesteps padded by ``pad`` copies of the last."""
        x_T, inpainted = problem.x_T, problem.cond_mask is not None
        timesteps = problem.rule.timesteps.to(x_T.device)
        return cls(timesteps=torch.cat([timesteps, timesteps[-1:].expand(pad)]) if pad else timesteps,
                   noise=x_T.new_zeros((rows, *x_T.shape)) if problem.noises is not None else None,
                   cond_data=torch.zeros_like(problem.cond_data) if inpainted else None,
                   cond_mask=torch.zeros_like(problem.cond_mask) if inpainted else None)

    def fill(self, problem: DenoisingProblem) -> None:
        """Copy ``problem``'s noises and inpainting in (the timesteps are fixed by the rule)."""
        if problem.noises is not None:
            self.noise[: problem.noises.shape[0]].copy_(problem.noises)
        if problem.cond_mask is not None:
            self.cond_data.copy_(problem.cond_data)
            self.cond_mask.copy_(problem.cond_mask)


@dataclass
class ChainBuffers:
    """The sequential chain: ``x_T`` in, ``out`` (B, *S) and every step's output ``eps`` (N, B, *S) out."""

    inputs: ProblemInputs
    x_T: torch.Tensor
    out: torch.Tensor
    eps: torch.Tensor
    index: torch.Tensor  # (N,) long: step i's index as a tensor

    @classmethod
    def allocate(cls, problem: DenoisingProblem) -> "ChainBuffers":
        x_T, n_steps = problem.x_T, problem.rule.num_steps
        return cls(inputs=ProblemInputs.allocate(problem, n_steps, 0), x_T=torch.zeros_like(x_T),
                   out=torch.zeros_like(x_T), eps=x_T.new_zeros((n_steps, *x_T.shape)),
                   index=torch.arange(n_steps, device=x_T.device))


def convergence_weights(rule, state_shape, length: int, device, std_floor: float = 0.0) -> torch.Tensor:
    """1 / (noise variance x state size) per trajectory state, zero-padded to ``length``.

    State j is judged against the noise variance of step j-1, which produced it, or against
    ``std_floor`` squared where that is larger (a sampler's choice: the last steps' noise std
    falls towards 0 while the promise is in action units); the final state never blocks (it is
    exact once its predecessors are) and state 0 is never judged.
    """
    n_steps = rule.num_steps
    variance = rule.error_variance[: n_steps - 1].to(device, non_blocking=True).clamp(min=float(std_floor) ** 2)
    weights = torch.zeros(length, device=device, dtype=torch.float32)
    weights[1:n_steps] = 1.0 / (variance * max(1, math.prod(state_shape)))
    return weights


@dataclass
class WindowBuffers:
    """A windowed sampler's state (N steps, K = window width, P = pad rows).

    ``traj`` (N+1+P, B, *S) the states; ``eps`` (N+P, B, *S) each step's latest network
    output; ``inv_var`` (N+1+P,) ``convergence_weights``; ``start`` () the window's first step
    and ``sweep`` () the rounds already run at that start (both long); ``slots`` (K,) long.
    One round per sync (``sync.HostJudged``) leaves ``flags`` (K+1,): each slot's worst change,
    then 1 if a live state is non-finite. k rounds per sync (``sync.DeviceJudged``) count into
    ``status`` (4,) = (rounds, nfe, worst accepted change squared, non-finite), slide entering
    slots to the latest state when ``fill`` (), and judge against ``threshold`` (), the
    acceptance's setting. ``extras``: the round update's own buffers (``RoundUpdate.buffers``).
    """

    inputs: ProblemInputs
    traj: torch.Tensor
    eps: torch.Tensor
    inv_var: torch.Tensor
    start: torch.Tensor
    sweep: torch.Tensor
    slots: torch.Tensor
    flags: torch.Tensor
    status: torch.Tensor
    fill: torch.Tensor
    threshold: torch.Tensor
    extras: Any = None

    @classmethod
    def allocate(cls, problem: DenoisingProblem, update, width: int, pad: int) -> "WindowBuffers":
        rule, x_T = problem.rule, problem.x_T
        rows, device = rule.num_steps + pad, x_T.device
        scalar = lambda dtype: torch.zeros((), dtype=dtype, device=device)  # noqa: E731
        return cls(inputs=ProblemInputs.allocate(problem, rows, pad), traj=x_T.new_zeros((rows + 1, *x_T.shape)),
                   eps=x_T.new_zeros((rows, *x_T.shape)),
                   inv_var=convergence_weights(rule, x_T.shape[1:], rows + 1, device),
                   start=scalar(torch.long), sweep=scalar(torch.long), slots=torch.arange(width, device=device),
                   flags=x_T.new_zeros(width + 1), status=torch.zeros(4, dtype=torch.float32, device=device),
                   fill=scalar(torch.bool), threshold=scalar(torch.float32), extras=update.buffers(rows, x_T))

    def start_trajectory(self, problem: DenoisingProblem, update) -> None:
        """Every state = x_T (or the initial guess, state 0 kept at x_T), this call's inputs, a fresh update memory."""
        traj, x_T = self.traj, problem.x_T
        traj.copy_(x_T.expand_as(traj))
        if problem.init_guess is not None:
            traj[: problem.rule.num_steps + 1].copy_(problem.init_guess)
            traj[0].copy_(x_T)
        self.inputs.fill(problem)
        update.reset(self.extras)
