"""Round kernels: the work of one round (or of the whole sequential chain) on index tensors.

A kernel reads and writes only its buffer dict (built by the driver) and never moves data
to the host, so the executor may run it directly or capture it once and replay it. The
window position lives on the device (``buf["start"]``); in a captured kernel the window
has a fixed width and slots past the last step read and write padding rows that never
count. Buffers: ``traj`` (N+1+pad, B, *S) states, ``eps`` (N+pad, B, *S) latest network
outputs, ``noise`` (N+pad, B, *S) or None, ``cond_data``/``cond_mask`` or None,
``timesteps`` (N+pad,), ``inv_var`` (N+1+pad,), ``start`` () long, ``slots`` (K,) long,
``flags`` (K_max + 1,): each slot's worst change, then 1 if any live state is non-finite.
"""

from __future__ import annotations

import torch

from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.secant import SecantMemory, newton_states


def _rows(values: torch.Tensor, batch: int) -> torch.Tensor:
    """Per-slot values (K,) repeated for the B samples of each slot, window-major (K*B,)."""
    return values.view(-1, 1).expand(values.shape[0], batch).reshape(-1)


def evaluate_window(buf: dict, index: torch.Tensor, denoise, batch: int):
    """The window's states, their inpainted version, and the network's outputs on them: ONE call."""
    states = buf["traj"].index_select(0, index)
    imposed = impose(states, buf["cond_data"], buf["cond_mask"])
    t_rows = _rows(buf["timesteps"].index_select(0, index), batch)
    eps = denoise(imposed.reshape(-1, *imposed.shape[2:]), t_rows).reshape(imposed.shape)
    return states, imposed, eps


class RoundUpdate:
    """The update protocol the window driver runs: how one round turns the window's fresh
    one-step results into new states. Subclasses set ``key`` (part of the executor's cache key),
    may add buffers (``buffers``, cleared by ``reset`` before each call) and ``extra_points``
    (network points a round evaluates besides the window's states, counted as rows and NFE)."""

    key: str = ""
    extra_points: int = 0

    def buffers(self, rows: int, x_T: torch.Tensor) -> dict:
        return {}

    def reset(self, buf: dict) -> None:
        pass

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

    def buffers(self, rows: int, x_T: torch.Tensor) -> dict:
        return {"secant": SecantMemory(rows, x_T)}

    def reset(self, buf: dict) -> None:
        buf["secant"].reset()

    def __call__(self, buf, index, states, imposed, nxt, old_next):
        slopes = buf["secant"].slopes(index, imposed, nxt, nxt - old_next)
        return newton_states(states[0], old_next, nxt, slopes)


def window_round(buf: dict, denoise, step, batch: int, n_steps: int, update) -> None:
    """One parallel round: evaluate the window, step every slot, update the states, set the flags."""
    index = buf["start"] + buf["slots"]
    states, imposed, eps = evaluate_window(buf, index, denoise, batch)
    noise = buf["noise"].index_select(0, index) if buf["noise"] is not None else None
    nxt = step(index, imposed, eps, noise)
    old_next = buf["traj"].index_select(0, index + 1)
    new = update(buf, index, states, imposed, nxt, old_next)
    report_round(buf, index, new, old_next, n_steps)
    buf["eps"].index_copy_(0, index, eps)


def write_states(buf: dict, index: torch.Tensor, new: torch.Tensor, old_next: torch.Tensor, n_steps: int):
    """Write the new states after steps ``index`` into ``traj``; return each slot's worst change
    (in units of its step's noise variance, over the samples) and whether every live state is finite."""
    worst = ((new - old_next).pow(2).flatten(2).sum(-1) * buf["inv_var"].index_select(0, index + 1)[:, None]).amax(1)
    live = (index < n_steps).view(-1, *([1] * (new.dim() - 1)))
    finite = torch.isfinite(torch.where(live, new, torch.zeros_like(new))).all()
    buf["traj"].index_copy_(0, index + 1, new)
    return worst, finite


def report_round(buf: dict, index: torch.Tensor, new: torch.Tensor, old_next: torch.Tensor, n_steps: int) -> None:
    """``write_states``, then the flags the host reads: each slot's worst change, then non-finite."""
    worst, finite = write_states(buf, index, new, old_next, n_steps)
    buf["flags"][: index.shape[0]].copy_(worst)
    buf["flags"][-1:].copy_((~finite).to(buf["flags"].dtype).view(1))


def sequential_chain(buf: dict, denoise, step, batch: int, n_steps: int, on_step=None) -> None:
    """Every step in order, one network call each: upstream's loop. ``on_step(i)``: eager-only hook."""
    x = buf["x_T"]
    for i in range(n_steps):
        x = impose(x, buf["cond_data"], buf["cond_mask"])
        eps = denoise(x, buf["timesteps"][i : i + 1].repeat(batch))
        noise = buf["noise"][i : i + 1] if buf["noise"] is not None else None
        x = step(buf["index"][i : i + 1], x[None], eps[None], noise)[0]
        buf["eps"][i].copy_(eps)
        if on_step is not None:
            on_step(i)
    buf["out"].copy_(impose(x, buf["cond_data"], buf["cond_mask"]))


def synced_rounds(buf: dict, denoise, step, batch: int, n_steps: int, update, rounds: int) -> None:
    """``rounds`` window rounds in one call (one graph replay): acceptance and slide on the device.

    Each round is ``window_round``'s work followed by what the host driver does between
    rounds, as tensor ops: accept up to the first live slot whose change exceeds
    ``buf["tol2"]``, slide ``buf["start"]``, start entering slots from the latest state
    (when ``buf["fill"]``), and count into ``buf["status"]`` = (rounds, nfe, worst accepted
    change, non-finite). A round after convergence (start = n_steps) or after non-finite
    values is a masked no-op: it only touches padding rows and counts nothing. The window
    has a fixed width, so ``traj``/``eps``/``noise`` need ``width`` padding rows.
    """
    for _ in range(rounds):
        _synced_round(buf, denoise, step, batch, n_steps, update)


def _synced_round(buf: dict, denoise, step, batch: int, n_steps: int, update) -> None:
    traj, start, status, slots = buf["traj"], buf["start"], buf["status"], buf["slots"]
    width = slots.shape[0]
    active = (start < n_steps) & (status[3] == 0)
    index = start + slots
    states, imposed, eps = evaluate_window(buf, index, denoise, batch)
    noise = buf["noise"].index_select(0, index) if buf["noise"] is not None else None
    nxt = step(index, imposed, eps, noise)
    old_next = traj.index_select(0, index + 1)
    new = update(buf, index, states, imposed, nxt, old_next)
    worst, finite = write_states(buf, index, new, old_next, n_steps)  # after convergence: padding rows only
    live = index < n_steps
    buf["eps"].index_copy_(0, index, eps)
    count = (n_steps - start).clamp(0, width)
    first_bad = torch.where(live & (worst > buf["tol2"]), slots, width).amin().minimum(count)
    accepted = torch.where(active & finite, (first_bad + 1).minimum(count), 0)
    error = torch.where(slots < first_bad, worst, torch.zeros_like(worst)).amax()
    status[0] += active.to(status.dtype)
    status[1] += (active * count).to(status.dtype)
    status[2] = torch.where(active, status[2].maximum(error), status[2])
    status[3] = torch.where(active & ~finite, torch.ones_like(status[3]), status[3])
    end, new_start = (start + width).clamp(max=n_steps), start + accepted
    rows = new_start + slots + 1  # the new window's next states; those past the old end enter now
    entering = (rows > end) & (rows <= (new_start + width).clamp(max=n_steps)) & buf["fill"]
    entering = entering.view(-1, *([1] * (new.dim() - 1)))
    traj.index_copy_(0, rows, torch.where(entering, traj.index_select(0, end.view(1)), traj.index_select(0, rows)))
    start.copy_(new_start)
