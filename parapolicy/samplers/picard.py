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
from parapolicy.samplers.common import SampleResult, check_inputs, convergence_weights, impose, timestep_rows
from parapolicy.samplers.graphed import graph_plan, sample_picard_graphed
from parapolicy.samplers.secant import SecantMemory, newton_states
from parapolicy.samplers.sequential import sequential_fallback
from parapolicy.samplers.step_rules import make_step_rule


def warm_start_guess(scheduler, x_T, noises, eps_guess, cond_data=None, cond_mask=None) -> torch.Tensor:
    """A whole-trajectory guess from guessed network outputs, e.g. the previous chunk's shifted.

    The guessed outputs stand in for the network: the fresh x_T and pre-drawn noises are
    pushed through every step with the scheduler's own transition (no network call), so the
    guess carries this call's noise realisation. Only the iteration's starting point changes,
    never its fixed point: the answer is the same sequential one, reached in fewer rounds
    when the guess is good.
    """
    rule = make_step_rule(scheduler)
    states, x, past = [x_T], x_T, []
    for i in range(rule.num_steps):
        x = impose(x, cond_data, cond_mask)
        step_noise = noises[i : i + 1] if noises is not None else None
        nxt, conv = rule.transition(i, x[None], eps_guess[i][None].to(x), step_noise, past)
        x = nxt[0]
        if conv is not None and rule.history_length:
            past = (past + [conv[0]])[-rule.history_length :]
        states.append(x)
    return torch.stack(states)


def sample_picard(
    denoise_fn, scheduler, x_T, noises=None, *, window, tolerance, cond_data=None, cond_mask=None, callback=None,
    init_guess=None, newton=False,
):
    """Parallel-in-time sampling; see the module docstring.

    ``denoise_fn(x, t)`` receives ``x`` of shape (K*B, *S), window-major (row = k*B + b),
    and int64 ``t`` of shape (K*B,); conditioning bound into it must be tiled K times.
    Convergence is tracked per sample: the window advances past a step only when every
    sample converged there. ``init_guess`` (N+1, *x_T.shape) replaces the all-x_T initial
    trajectory (see ``warm_start_guess``); state 0 is always x_T. ``extras["eps"]`` returns
    each step's latest network output, the input of the next call's warm start. If NaN/inf shows up, the
    call falls back to the sequential loop and says so in ``stats["fallback"]``.
    ``newton=True`` carries each round's corrections down the window with secant slopes
    (``parapolicy.samplers.secant``) instead of summing them: same fixed point, fewer rounds.
    """
    name = "newton_picard" if newton else "picard"
    rule = make_step_rule(scheduler)
    check_inputs(rule, x_T, noises)
    if init_guess is not None and tuple(init_guess.shape) != (rule.num_steps + 1, *x_T.shape):
        raise SamplerConfigError(
            f"init_guess has shape {tuple(init_guess.shape)}, expected {(rule.num_steps + 1, *x_T.shape)}")
    coefficients = graph_plan(denoise_fn, rule, x_T, callback)
    if coefficients is not None:  # CUDA graphs on: each round is one replay
        return sample_picard_graphed(denoise_fn, rule, coefficients, x_T, noises, window=window, tolerance=tolerance,
                                     cond_data=cond_data, cond_mask=cond_mask, init_guess=init_guess, newton=newton)
    n_steps, batch, state_shape = rule.num_steps, x_T.shape[0], x_T.shape[1:]
    width = min(int(window), n_steps)
    device = x_T.device
    inv_var = convergence_weights(rule, state_shape, n_steps + 1, device)
    tol2 = float(tolerance) ** 2

    if init_guess is not None:
        traj = init_guess.clone()
        traj[0] = x_T
    else:
        traj = x_T.unsqueeze(0).repeat(n_steps + 1, *([1] * x_T.dim()))
    converted = [None] * n_steps
    eps_buffer = torch.zeros((n_steps, *x_T.shape), device=device, dtype=x_T.dtype)  # latest output per step
    memory = SecantMemory(n_steps, x_T) if newton else None
    start, rounds, nfe, max_error = 0, 0, 0, 0.0
    while start < n_steps:
        end = min(start + width, n_steps)
        count = end - start
        states = impose(traj[start:end], cond_data, cond_mask)
        t_rows = timestep_rows(rule, start, count, batch, device)
        eps = denoise_fn(states.reshape(count * batch, *state_shape), t_rows).reshape(states.shape)
        rounds, nfe = rounds + 1, nfe + count
        eps_buffer[start:end] = eps
        past = [c for c in converted[max(0, start - rule.history_length) : start] if c is not None]
        step_noise = noises[start:end] if noises is not None else None
        nxt, conv = rule.transition(start, states, eps, step_noise, past)
        if memory is None:
            new = traj[start] + torch.cumsum(nxt - traj[start:end], dim=0)
        else:
            old_next = traj[start + 1 : end + 1]
            new = newton_states(traj[start], old_next, nxt, memory.slopes(start, states, nxt, nxt - old_next))
        ratio = (new - traj[start + 1 : end + 1]).pow(2).flatten(2).sum(-1) * inv_var[start + 1 : end + 1, None]
        # one host sync per round: each step's worst sample and the finiteness check together
        flags = torch.cat([ratio.amax(dim=1), (~torch.isfinite(new).all()).to(ratio.dtype).view(1)]).cpu()
        if flags[-1]:
            return sequential_fallback(denoise_fn, rule, x_T, noises, cond_data, cond_mask, name=name, rounds=rounds,
                                       nfe=nfe)
        worst = flags[:-1]
        bad = torch.nonzero(worst > tol2).flatten()
        first_bad = int(bad[0]) if bad.numel() else count
        accepted = min(first_bad + 1, count)
        traj[start + 1 : end + 1] = new
        if conv is not None and rule.history_length:
            converted[start:end] = list(conv)
        if first_bad > 0:
            max_error = max(max_error, float(worst[:first_bad].max().sqrt()))
        new_start = start + accepted
        new_end = min(new_start + width, n_steps)
        if new_end > end and init_guess is None:  # slots entering the window start from the latest state
            traj[end + 1 : new_end + 1] = traj[end]
        if callback is not None:
            callback({"round": rounds, "start": start, "accepted": new_start - start, "x": traj[new_start]})
        start = new_start
    sample = impose(traj[n_steps], cond_data, cond_mask)
    stats = {
        "sampler": name,
        "nfe": nfe,
        "parallel_iters": rounds,
        "network_calls": rounds,
        "max_error": max_error,
        "window": width,
        "tolerance": float(tolerance),
        "fallback": None,
    }
    return SampleResult(sample, stats, extras={"eps": eps_buffer})


@dataclass(frozen=True)
class Picard:
    """Settings for ``sample_picard``: window (steps per batched call) and tolerance."""

    window: int = 100
    tolerance: float = 0.1
    name = "picard"
    _newton = False  # NewtonPicard: secant-slope corrections instead of plain sums

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise SamplerConfigError(f"{self.name} window must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.tolerance, (int, float)) or not math.isfinite(self.tolerance) or self.tolerance <= 0:
            raise SamplerConfigError(f"{self.name} tolerance must be a finite number > 0, got {self.tolerance!r}")

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
            newton=self._newton,
        )

    def config(self) -> dict:
        return {"name": self.name, "window": self.window, "tolerance": self.tolerance}
