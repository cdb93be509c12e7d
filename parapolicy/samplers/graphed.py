"""Picard rounds and the sequential chain as single CUDA-graph replays.

With the network graphed, what is left of a GPU round is launch overhead: gathering the
window, the step update, the cumulative sums, the error, each a few kernels. Here a whole
round is captured once per (window, batch, shapes) and replayed; the window position is a
number on the device, so one graph serves every position. Slots past the last step read
and write padding rows and never count. The host does one sync per round, for the
convergence flags, exactly as the eager sampler. The step update uses the rule's
``StepCoefficients``, which give the same bits as diffusers' step, so the iteration and
its fixed point are those of ``sample_picard``. The sequential chain is captured whole
(every step unrolled), so the baseline it is compared against is as fast as it can be.
"""

from __future__ import annotations

import dataclasses

import torch

from parapolicy.samplers.common import SampleResult, convergence_weights, impose
from parapolicy.samplers.secant import SecantMemory, newton_states
from parapolicy.samplers.sequential import check_finite, sequential_fallback


def graph_plan(denoise_fn, rule, x_T, callback=None):
    """The rule's coefficients when this call can run as graphs (CUDA graphs on, one-step rule)."""
    if getattr(denoise_fn, "graphs", None) is None or callback is not None or x_T.device.type != "cuda":
        return None
    return rule.step_coefficients(x_T.device)


def _padded(values: torch.Tensor, extra: int) -> torch.Tensor:
    """``values`` with ``extra`` copies of its last entry appended (reads past the end stay finite)."""
    return torch.cat([values, values[-1:].expand(extra, *values.shape[1:])]) if extra else values


def _shape_key(denoise_fn, x_T, cond_mask):
    return (tuple(x_T.shape), x_T.dtype, cond_mask is not None,
            tuple((k, tuple(v.shape)) for k, v in sorted(denoise_fn.conditions.items())))


def _input_buffers(denoise_fn, x_T, noise_rows, noises, cond_mask, cond_data, reps):
    """Device buffers for a call's inputs: noises, conditioning tiled ``reps`` times, inpainting."""
    return {
        "noise": x_T.new_zeros((noise_rows, *x_T.shape)) if noises is not None else None,
        "cond": {k: v.new_zeros((reps * v.shape[0], *v.shape[1:])) for k, v in denoise_fn.conditions.items()},
        "cond_data": torch.zeros_like(cond_data) if cond_mask is not None else None,
        "cond_mask": torch.zeros_like(cond_mask) if cond_mask is not None else None,
    }


def _fill_inputs(buf, denoise_fn, noises, cond_data, cond_mask, reps) -> None:
    """Copy this call's inputs into the buffers ``_input_buffers`` made, before a replay."""
    if noises is not None:
        buf["noise"][: noises.shape[0]].copy_(noises)
    for k, v in denoise_fn.tiled_conditions(reps).items():
        buf["cond"][k].copy_(v)
    if cond_mask is not None:
        buf["cond_data"].copy_(cond_data)
        buf["cond_mask"].copy_(cond_mask)


def sample_picard_graphed(denoise_fn, rule, coefficients, x_T, noises, *, window, tolerance, cond_data=None,
                          cond_mask=None, init_guess=None, newton=False):
    """``sample_picard`` with every round one graph replay; same arguments, same results."""
    name = "newton_picard" if newton else "picard"
    n_steps, batch, state_shape = rule.num_steps, x_T.shape[0], x_T.shape[1:]
    width = min(int(window), n_steps)
    device = x_T.device
    key = ("picard", newton, width, id(coefficients), noises is not None) + _shape_key(denoise_fn, x_T, cond_mask)

    def build():
        rows = n_steps + 1 + width  # trajectory states, then padding read and written by dead slots
        inv_var = convergence_weights(rule, state_shape, rows, device)
        buf = {
            "traj": x_T.new_zeros((rows, *x_T.shape)), "eps": x_T.new_zeros((n_steps + width, *x_T.shape)),
            "start": torch.zeros((), dtype=torch.long, device=device),
            "flags": x_T.new_zeros(width + 1), "inv_var": inv_var,
            "timesteps": _padded(rule.timesteps.to(device), width),
            **_input_buffers(denoise_fn, x_T, n_steps + width, noises, cond_mask, cond_data, width),
            "memory": SecantMemory(n_steps + width, x_T) if newton else None,
        }
        coef = dataclasses.replace(coefficients, **{f.name: _padded(getattr(coefficients, f.name), width)
                                                    for f in dataclasses.fields(coefficients)
                                                    if isinstance(getattr(coefficients, f.name), torch.Tensor)})
        slots = torch.arange(width, device=device)

        def one_round():
            index = buf["start"] + slots
            states = buf["traj"].index_select(0, index)
            imposed = impose(states, buf["cond_data"], buf["cond_mask"])
            t_rows = buf["timesteps"].index_select(0, index).view(width, 1).expand(width, batch).reshape(-1)
            eps = denoise_fn.model(imposed.reshape(width * batch, *state_shape), t_rows, **buf["cond"])
            eps = eps.reshape(imposed.shape)
            noise = buf["noise"].index_select(0, index) if buf["noise"] is not None else None
            nxt = coef.transition(index, imposed, eps, noise)
            old_next = buf["traj"].index_select(0, index + 1)
            if buf["memory"] is None:
                new = states[0] + torch.cumsum(nxt - states, dim=0)
            else:
                new = newton_states(states[0], old_next, nxt, buf["memory"].slopes(index, imposed, nxt, nxt - old_next))
            ratio = (new - old_next).pow(2).flatten(2).sum(-1) * buf["inv_var"].index_select(0, index + 1)[:, None]
            live = (index < n_steps).view(width, *([1] * x_T.dim()))
            finite = torch.isfinite(torch.where(live, new, torch.zeros_like(new))).all()
            buf["traj"].index_copy_(0, index + 1, new)
            buf["eps"].index_copy_(0, index, eps)
            buf["flags"].copy_(torch.cat([ratio.amax(dim=1), (~finite).to(ratio.dtype).view(1)]))

        return buf, one_round

    buf, replay = denoise_fn.graphs.captured(key, build, device)
    traj = buf["traj"]
    traj.copy_(x_T.expand_as(traj))
    if init_guess is not None:
        traj[: n_steps + 1].copy_(init_guess)
        traj[0].copy_(x_T)
    _fill_inputs(buf, denoise_fn, noises, cond_data, cond_mask, width)
    if buf["memory"] is not None:
        buf["memory"].reset()
    tol2 = float(tolerance) ** 2
    start, rounds, nfe, max_error = 0, 0, 0, 0.0
    while start < n_steps:
        end = min(start + width, n_steps)
        count = end - start
        buf["start"].fill_(start)
        replay()
        rounds, nfe = rounds + 1, nfe + count  # NFE counts live slots, as the eager sampler
        flags = buf["flags"].cpu()  # the one host sync of the round
        if flags[-1]:
            return sequential_fallback(denoise_fn, rule, x_T, noises, cond_data, cond_mask, name=name, rounds=rounds,
                                       nfe=nfe)
        worst = flags[:count]
        bad = torch.nonzero(worst > tol2).flatten()
        first_bad = int(bad[0]) if bad.numel() else count
        if first_bad > 0:
            max_error = max(max_error, float(worst[:first_bad].max().sqrt()))
        new_start = start + min(first_bad + 1, count)
        new_end = min(new_start + width, n_steps)
        if new_end > end and init_guess is None:  # slots entering the window start from the latest state
            traj[end + 1 : new_end + 1] = traj[end]
        start = new_start
    sample = impose(traj[n_steps], cond_data, cond_mask).clone()
    stats = {"sampler": name, "nfe": nfe, "parallel_iters": rounds, "network_calls": rounds,
             "max_error": max_error, "window": width, "tolerance": float(tolerance), "fallback": None,
             "graphed_rounds": True}
    return SampleResult(sample, stats, extras={"eps": buf["eps"][:n_steps].clone()})


def sample_sequential_graphed(denoise_fn, rule, coefficients, x_T, noises=None, cond_data=None, cond_mask=None):
    """``sample_sequential`` as ONE graph replay of every step unrolled; same bits as diffusers' steps."""
    n_steps, batch = rule.num_steps, x_T.shape[0]
    device = x_T.device
    key = ("sequential", id(coefficients), noises is not None) + _shape_key(denoise_fn, x_T, cond_mask)

    def build():
        buf = {
            "x_T": torch.zeros_like(x_T), "out": torch.zeros_like(x_T),
            **_input_buffers(denoise_fn, x_T, n_steps, noises, cond_mask, cond_data, 1),
        }
        steps = [torch.tensor([i], device=device) for i in range(n_steps)]
        t_rows = [rule.timesteps[i : i + 1].to(device).repeat_interleave(batch) for i in range(n_steps)]

        def chain():
            x = buf["x_T"]
            for i in range(n_steps):
                x = impose(x, buf["cond_data"], buf["cond_mask"])
                eps = denoise_fn.model(x, t_rows[i], **buf["cond"])
                noise = buf["noise"][i : i + 1] if buf["noise"] is not None else None
                x = coefficients.transition(steps[i], x[None], eps[None], noise)[0]
            buf["out"].copy_(impose(x, buf["cond_data"], buf["cond_mask"]))

        return buf, chain

    buf, replay = denoise_fn.graphs.captured(key, build, device)
    buf["x_T"].copy_(x_T)
    _fill_inputs(buf, denoise_fn, noises, cond_data, cond_mask, 1)
    replay()
    x = buf["out"].clone()
    check_finite(x)
    return SampleResult(x, {"sampler": "sequential", "nfe": n_steps, "parallel_iters": n_steps,
                            "network_calls": n_steps, "graphed_chain": True})
