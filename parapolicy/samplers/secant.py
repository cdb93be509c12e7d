"""The quasi-Newton update behind ``newton_picard``: Picard with estimated step slopes.

Write the trajectory equations as x_{i+1} = phi_i(x_i). A Picard round replaces every
state by the window start plus the summed one-step residuals, which is Newton's method on
those equations with every step Jacobian d phi_i / d x taken to be the identity. Here each
step's Jacobian is instead a scalar per sample, the secant slope between the step's last
two evaluations:

    J_i = <phi_i(x') - phi_i(x), x' - x> / |x' - x|^2,

and the corrections are carried down the window with it, d_{i+1} = r_i + J_i d_i
(r_i = phi_i(x_i) - x_{i+1}), as in ParaSolver (Lu et al., ICLR 2025) and DEER-style
parallel Newton solvers. Any J leaves the fixed point unchanged (a converged trajectory
has r = 0, hence d = 0), so the answer is still the sequential one; only the number of
rounds changes. Slopes that are unknown (first visit), non-finite, outside
[SLOPE_MIN, SLOPE_MAX], or on a step whose residual grew since its last round fall back
to 1, i.e. to plain Picard for that step.
"""

from __future__ import annotations

import torch

SLOPE_MIN, SLOPE_MAX = 0.0, 2.0
GROWTH = 4.0  # a step whose residual grew more than this (in squared norm) goes back to Picard


class SecantMemory:
    """Each step's previous input and output, per sample, to form secant slopes."""

    def __init__(self, n_steps: int, x_T: torch.Tensor):
        self.inputs = torch.zeros((n_steps, *x_T.shape), device=x_T.device, dtype=x_T.dtype)
        self.outputs = torch.zeros_like(self.inputs)
        self.residual = torch.full((n_steps, x_T.shape[0]), float("inf"), device=x_T.device)
        self.seen = torch.zeros(n_steps, dtype=torch.bool, device=x_T.device)

    def slopes(self, start, states: torch.Tensor, outputs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """Scalar slope per (window step, sample); records this round's evaluations.

        ``start`` is the first step of the window (int), or the steps themselves as a long
        tensor (a CUDA-graphed round, whose window position lives on the device).
        """
        if isinstance(start, int):
            start = torch.arange(start, start + states.shape[0], device=states.device)
        dx = states - self.inputs.index_select(0, start)
        dphi = outputs - self.outputs.index_select(0, start)
        num = (dx * dphi).flatten(2).sum(-1)
        den = dx.pow(2).flatten(2).sum(-1)
        slope = num / den
        res_norm = residual.pow(2).flatten(2).sum(-1)
        usable = (
            self.seen.index_select(0, start)[:, None]
            & (den > 0)
            & torch.isfinite(slope)
            & (slope >= SLOPE_MIN)
            & (slope <= SLOPE_MAX)
            & (res_norm <= GROWTH * self.residual.index_select(0, start))  # growing residual: back to Picard
        )
        self.inputs.index_copy_(0, start, states)
        self.outputs.index_copy_(0, start, outputs)
        self.residual.index_copy_(0, start, res_norm)
        self.seen.index_fill_(0, start, True)
        return torch.where(usable, slope, torch.ones_like(slope))

    def reset(self) -> None:
        """Forget every evaluation (a graphed sampler reuses one memory across calls)."""
        self.seen.fill_(False)
        self.residual.fill_(float("inf"))


def newton_states(first: torch.Tensor, old_next: torch.Tensor, outputs: torch.Tensor, slopes: torch.Tensor):
    """New states x_{i+1} = old x_{i+1} + d_{i+1} with d carried by the slopes.

    ``first`` is the window's fixed first state, ``old_next`` (K, B, ...) the current
    guesses of the states after each window step, ``outputs`` phi_i of the current guesses.
    The recurrence d_k = r_k + J_k d_{k-1} is solved by a doubling scan (log2 K rounds of
    elementwise ops instead of K), which keeps a GPU round to a few kernel launches.
    """
    shape = (slopes.shape[0], slopes.shape[1]) + (1,) * (first.dim() - 1)
    # after the pass with offset s: d_k sums the terms of steps k-2s+1..k, a_k = J_k ... J_{k-2s+1}
    d = outputs - old_next
    a = slopes.view(shape).to(d.dtype)
    offset = 1
    while offset < d.shape[0]:
        d = torch.cat([d[:offset], d[offset:] + a[offset:] * d[:-offset]])
        a = torch.cat([a[:offset], a[offset:] * a[:-offset]])
        offset *= 2
    return old_next + d
