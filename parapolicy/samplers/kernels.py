"""Round kernels: the work of one round (or of the whole sequential chain) on index tensors.

A kernel reads and writes only its typed buffers (``buffers.WindowBuffers``,
``buffers.ChainBuffers``, built by the driver) and never moves data to the host, so the
executor may run it directly or capture it once and replay it. The window position lives
on the device (``buf.start``); in a captured kernel the window has a fixed width and slots
past the last step read and write padding rows that never count. A round kernel returns a
``RoundOutcome``; what is done with it (flags for the host, or acceptance on the device) is
``sync``'s business, so every round body exists once.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from parapolicy.samplers.buffers import ChainBuffers, WindowBuffers
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.secant import SecantMemory, newton_states


def _rows(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-slot values (K,) repeated for the B samples of each slot, window-major (K*B,)."""
    return values.view(-1, 1).expand(values.shape[0], batch).reshape(-1)


def evaluate_window(buf: WindowBuffers, index: torch.Tensor, denoise, batch: int):
    """The window's states, their inpainted version, and the network's outputs on them: ONE call."""
    inputs = buf.inputs
    states = buf.traj.index_select(0, index)
    imposed = impose(states, inputs.cond_data, inputs.cond_mask)
    t_rows = _rows(inputs.timesteps.index_select(0, index), batch)
    eps = denoise(imposed.reshape(-1, *imposed.shape[2:]), t_rows).reshape(imposed.shape)
    return states, imposed, eps


class RoundOutcome(NamedTuple):
    """What a round leaves for acceptance: the steps it ran (K,), each slot's worst change (K,)
    in units of its step's noise variance, and whether every live state is finite (0-dim)."""

    index: torch.Tensor
    worst: torch.Tensor
    finite: torch.Tensor


class RoundUpdate:
    """The update protocol the window driver runs: how one round turns the window's fresh
    one-step results into new states. Subclasses set ``key`` (part of the executor's cache key),
    may keep their own buffers (``buffers``: any type, held as ``buf.extras`` and cleared by
    ``reset`` before each call), ``extra_points`` (network points a round evaluates
    besides the window's states, counted as rows and NFE), ``rows_per_point`` (network rows
    one evaluated point costs) and ``extra_nfe`` (evaluations spent outside the counted points):
    the driver reads these when it reports, so no sampler patches the stats it returns."""

    key: str = ""
    extra_points: int = 0
    rows_per_point: int = 1

    def extra_nfe(self, batch: int) -> int:
        """Network evaluations per sample this call spent beyond one per evaluated point."""
        return 0

    def buffers(self, rows: int, x_T: torch.Tensor):
        """This update's own static buffers for ``rows`` steps (None: it needs none)."""
        return None

    def reset(self, extras) -> None:
        """Forget the previous call in ``extras`` (what ``buffers`` made)."""

    def __call__(self, buf, index, states, imposed, nxt, old_next) -> torch.Tensor:
        """New states of the window's slots (K, B, *S) from this round's step results ``nxt``."""
        raise NotImplementedError


class PicardUpdate(RoundUpdate):
    """ParaDiGMS: each state = window start + the summed one-step residuals before it."""

    key = "picard"

    def __call__(self, buf, index, states, imposed, nxt, old_next):
        return states[0] + torch.cumsum(nxt - states, dim=0)


class SecantUpdate(RoundUpdate):
    """Newton-Picard: residuals carried down the window by per-sample secant slopes (``secant``)."""

    key = "secant"

    def buffers(self, rows: int, x_T: torch.Tensor) -> SecantMemory:
        return SecantMemory(rows, x_T)

    def reset(self, extras: SecantMemory) -> None:
        extras.reset()

    def __call__(self, buf, index, states, imposed, nxt, old_next):
        slopes = buf.extras.slopes(index, imposed, nxt, nxt - old_next)
        return newton_states(states[0], old_next, nxt, slopes)


def window_round(buf: WindowBuffers, denoise, step, batch: int, n_steps: int, update) -> RoundOutcome:
    """One parallel round: evaluate the window, step every slot, update and write the states."""
    index = buf.start + buf.slots
    states, imposed, eps = evaluate_window(buf, index, denoise, batch)
    noise = buf.inputs.noise.index_select(0, index) if buf.inputs.noise is not None else None
    nxt = step(index, imposed, eps, noise)
    old_next = buf.traj.index_select(0, index + 1)
    new = update(buf, index, states, imposed, nxt, old_next)
    worst, finite = write_states(buf, index, new, old_next, n_steps)
    buf.eps.index_copy_(0, index, eps)
    return RoundOutcome(index, worst, finite)


def write_states(buf: WindowBuffers, index: torch.Tensor, new: torch.Tensor, old_next: torch.Tensor, n_steps: int):
    """Write the new states after steps ``index`` into ``traj``; return each slot's worst change
    (in units of its step's noise variance, over the samples) and whether every live state is finite."""
    worst = ((new - old_next).pow(2).flatten(2).sum(-1) * buf.inv_var.index_select(0, index + 1)[:, None]).amax(1)
    live = (index < n_steps).view(-1, *([1] * (new.dim() - 1)))
    finite = torch.isfinite(torch.where(live, new, torch.zeros_like(new))).all()
    buf.traj.index_copy_(0, index + 1, new)
    return worst, finite


def sequential_chain(buf: ChainBuffers, denoise, step, batch: int, n_steps: int, on_step=None) -> None:
    """Every step in order, one network call each: upstream's loop. ``on_step(i)``: eager-only hook."""
    inputs, x = buf.inputs, buf.x_T
    for i in range(n_steps):
        x = impose(x, inputs.cond_data, inputs.cond_mask)
        eps = denoise(x, inputs.timesteps[i : i + 1].repeat(batch))
        noise = inputs.noise[i : i + 1] if inputs.noise is not None else None
        x = step(buf.index[i : i + 1], x[None], eps[None], noise)[0]
        buf.eps[i].copy_(eps)
        if on_step is not None:
            on_step(i)
    buf.out.copy_(impose(x, inputs.cond_data, inputs.cond_mask))
