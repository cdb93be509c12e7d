"""ParaDiGMS Picard iteration (Shih et al., NeurIPS 2023, arXiv 2305.16317).

Guess the whole denoising trajectory (every state = x_T), then repeat: evaluate the
network on a sliding window of ``window`` states in ONE batched call, rebuild each state
as the window start plus the cumulative drift and cumulative pre-drawn noise, and slide
the window past every leading state whose change is below ``tolerance`` (measured in
units of that step's noise std). The fixed point is exactly the sequential trajectory
for the same noise draws, so ``tolerance`` is the only accuracy knob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.common import SampleResult, check_inputs, impose, timestep_rows
from parapolicy.samplers.sequential import sample_sequential
from parapolicy.samplers.step_rules import make_step_rule


def warm_start_guess(scheduler, x_T: torch.Tensor, x0_guess: torch.Tensor) -> torch.Tensor:
    """A whole-trajectory guess from a guess of the clean sample (e.g. the previous chunk, shifted).

    State i (at timestep t_i) is guessed as sqrt(a_i) * x0_guess + sqrt(1 - a_i) * x_T, the
    final state as x0_guess. Only the starting point of the iteration changes, never its
    fixed point, so the result is the same sequential answer, reached in fewer rounds when
    the guess is good.
    """
    rule = make_step_rule(scheduler)
    a = rule.alphas_cumprod[rule.timesteps].to(device=x_T.device, dtype=x_T.dtype)
    a = a.view(-1, *([1] * x_T.dim()))
    states = a.sqrt() * x0_guess.unsqueeze(0) + (1 - a).sqrt() * x_T.unsqueeze(0)
    states[0] = x_T
    return torch.cat([states, x0_guess.unsqueeze(0)], dim=0)


def sample_picard(
    denoise_fn, scheduler, x_T, noises=None, *, window, tolerance, cond_data=None, cond_mask=None, callback=None,
    init_guess=None,
):
    """Parallel-in-time sampling; see the module docstring.

    ``denoise_fn(x, t)`` receives ``x`` of shape (K*B, *S), window-major (row = k*B + b),
    and int64 ``t`` of shape (K*B,); conditioning bound into it must be tiled K times.
    Convergence is tracked per sample: the window advances past a step only when every
    sample converged there. ``init_guess`` (N+1, *x_T.shape) replaces the all-x_T initial
    trajectory (see ``warm_start_guess``); state 0 is always x_T. If NaN/inf shows up, the
    call falls back to the sequential loop and says so in ``stats["fallback"]``.
    """
    rule = make_step_rule(scheduler)
    check_inputs(rule, x_T, noises)
    n_steps, batch, state_shape = rule.num_steps, x_T.shape[0], x_T.shape[1:]
    width = min(int(window), n_steps)
    device = x_T.device
    dim = max(1, math.prod(state_shape))
    # state j is judged against the noise variance of step j-1, which produced it; the final
    # state never blocks (it is exact once its predecessors are), index 0 is never judged
    inv_var = torch.zeros(n_steps + 1, device=device, dtype=torch.float32)
    inv_var[1:n_steps] = 1.0 / (rule.error_variance[: n_steps - 1].to(device) * dim)
    tol2 = float(tolerance) ** 2

    if init_guess is not None:
        if tuple(init_guess.shape) != (n_steps + 1, *x_T.shape):
            raise SamplerConfigError(f"init_guess has shape {tuple(init_guess.shape)}, expected {(n_steps + 1, *x_T.shape)}")
        traj = init_guess.clone()
        traj[0] = x_T
    else:
        traj = x_T.unsqueeze(0).repeat(n_steps + 1, *([1] * x_T.dim()))
    converted = [None] * n_steps
    start, rounds, nfe, max_error = 0, 0, 0, 0.0
    while start < n_steps:
        end = min(start + width, n_steps)
        count = end - start
        states = impose(traj[start:end], cond_data, cond_mask)
        t_rows = timestep_rows(rule, start, count, batch, device)
        eps = denoise_fn(states.reshape(count * batch, *state_shape), t_rows).reshape(states.shape)
        rounds, nfe = rounds + 1, nfe + count
        past = [c for c in converted[max(0, start - rule.history_length) : start] if c is not None]
        step_noise = noises[start:end] if noises is not None else None
        nxt, conv = rule.transition(start, states, eps, step_noise, past)
        new = traj[start] + torch.cumsum(nxt - traj[start:end], dim=0)
        ratio = (new - traj[start + 1 : end + 1]).pow(2).flatten(2).sum(-1) * inv_var[start + 1 : end + 1, None]
        unconverged = (ratio > tol2).any(dim=1)
        # one host sync per round: the convergence flags and the finiteness check together
        flags = torch.cat([unconverged, ~torch.isfinite(new).all().view(1)]).cpu()
        if flags[-1]:
            result = sample_sequential(denoise_fn, rule, x_T, noises, cond_data, cond_mask)
            result.stats.update(
                sampler="picard",
                fallback=f"sequential: non-finite values in Picard round {rounds}",
                parallel_iters=rounds + n_steps,
                network_calls=rounds + n_steps,
                nfe=nfe + n_steps,
            )
            return result
        bad = torch.nonzero(flags[:-1]).flatten()
        first_bad = int(bad[0]) if bad.numel() else count
        accepted = min(first_bad + 1, count)
        traj[start + 1 : end + 1] = new
        if conv is not None and rule.history_length:
            converted[start:end] = list(conv)
        if first_bad > 0:
            max_error = max(max_error, float(ratio[:first_bad].max().sqrt()))
        new_start = start + accepted
        new_end = min(new_start + width, n_steps)
        if new_end > end and init_guess is None:  # slots entering the window start from the latest state
            traj[end + 1 : new_end + 1] = traj[end]
        if callback is not None:
            callback({"round": rounds, "start": start, "accepted": new_start - start, "x": traj[new_start]})
        start = new_start
    sample = impose(traj[n_steps], cond_data, cond_mask)
    stats = {
        "sampler": "picard",
        "nfe": nfe,
        "parallel_iters": rounds,
        "network_calls": rounds,
        "max_error": max_error,
        "window": width,
        "tolerance": float(tolerance),
        "fallback": None,
    }
    return SampleResult(sample, stats)


@dataclass(frozen=True)
class Picard:
    """Settings for ``sample_picard``: window (steps per batched call) and tolerance."""

    window: int = 100
    tolerance: float = 0.1
    name = "picard"

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SamplerConfigError(f"picard window must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.tolerance, (int, float)) or not math.isfinite(self.tolerance) or self.tolerance <= 0:
            raise SamplerConfigError(f"picard tolerance must be a finite number > 0, got {self.tolerance!r}")

    def sample(self, denoise_fn, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, callback=None,
               init_guess=None):
        return sample_picard(
            denoise_fn,
            scheduler,
            x_T,
            noises,
            window=self.window,
            tolerance=self.tolerance,
            cond_data=cond_data,
            cond_mask=cond_mask,
            callback=callback,
            init_guess=init_guess,
        )

    def config(self) -> dict:
        return {"name": self.name, "window": self.window, "tolerance": self.tolerance}
