"""Newton rounds under a row budget: step Jacobians from secants and from spare rows.

A round's latency is one batched network call, and its cost grows with the rows in the
call. ``jacobian_newton`` converges in the fewest rounds but pays D + 1 rows per state
(D = the state's size) for exact Jacobians; ``newton_picard`` pays one row per state but
models each step by one scalar slope and needs many more rounds. This sampler never calls
the network on more than ``max_rows`` rows per sample and round, and puts its effort into
the model of the network instead:

- **The network, not the step, is modelled.** Near the input ``a`` where step j was last
  evaluated, its output is eps(x) ~ eps(a) + E_j (x - a); the scheduler's own transition
  (clipping included) maps the modelled output to the next state, so nothing that is known
  in closed form is approximated.
- **E_j from three sources, none a network call of its own.** It starts as the slope of
  the exact denoiser of a Gaussian N(0, STAND_IN_STD^2) target, one scalar per step
  (narrower than ``newton_prior``'s: off a trained net's data its output moves with the
  full 1/sigma slope). Columns of the full D x D matrix are measured by finite differences
  in the rows a round has left under its budget (the tail of the chain first: its steps are the
  least linear and decide the last rounds), and kept across calls (``reuse_jacobians``)
  because the network and a robot's observations change little between chunks. On top,
  a least-squares low-rank correction makes E_j reproduce this call's last ``history``
  evaluations of step j (a multi-secant model, as in Anderson acceleration / ParaTAA).
- **The budget is spread over the whole chain.** When the remaining steps do not fit in
  ``max_rows``, a round evaluates a contiguous head and every other step after it; a
  skipped step's output is the mean of its two evaluated neighbours' models at its own
  input (the output varies smoothly with the noise level), so the tail is refined from the
  first round on; when such a step is first evaluated it borrows a neighbour's secant pairs.
  Where rows cost (``thin_start``; None: off on CUDA, on elsewhere) a cold start's first
  round, which can accept only x_1, evaluates every other step even when all would fit: a
  stand-in state's output mostly anchors its step's model, and the neighbours' mean models
  the rest (on PushT the same rounds with 15% fewer rows; on an affine network one round more).

Each round propagates the remaining chain through the models (no network; with ``scan``, as on
a GPU, as one linearised doubling scan, a few dozen kernels instead of several per step, and the
cold start's chain from one scan of its unclipped, affine steps; on the CPU with the N small
steps in NumPy), then accepts
the leading evaluated states whose input changed by less than ``tolerance`` (in units of
that step's noise std, as every exact sampler here, but never of a std below ``STD_FLOOR``:
the low-noise half of DDPM-100 and the last DDIM-16 steps have stds down to 0.02, which held
their states to a twentieth of an action unit and cost the last rounds, while the promise is
one unit; every change this sampler judges, ``UNPAIRED`` and ``max_error`` included, is in
these floored units) and whose step has secant pairs (its own
or a neighbour's), unless nothing before it moved: after one evaluation the model knows
nothing of how the network amplifies an error, and a sharp one (a randomly initialised
upstream-size UNet) would carry a small accepted error to the actions many times over. The
window start is exact after every round, so the answer is the sequential one for the same
noise draws: the models move the rounds, never the fixed point. NaN/inf falls back to the
sequential chain. The start is the Gaussian stand-in's trajectory, or the caller's initial
guess.

On a GPU the host waits for the device twice a round: before the call (which steps gain a secant
pair) and at the round's end (every state's change, the outputs' finiteness and whether a clipping
pattern moved along the scanned chain, in one read; where one did, more scans follow, a read each);
host indices go over without waiting (``send``), so the launches from the call to the round's end
queue behind it.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.affine_scan import AffineScan, carry_corrections, tracked
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.buffers import convergence_weights
from parapolicy.samplers.driver import fallback_to_chain
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.newton_prior import gaussian_denoiser_output
from parapolicy.samplers.problem import (DenoisingProblem, SampleResult, SampleStats, check_positive_int,
                                         check_tolerance)

PROBE_STEP = 1e-3  # finite-difference step, in normalized units (data spans [-1, 1])
RIDGE = 1e-4  # regularisation of the secant fit (its pairs have unit length)
MAX_SLOPE = 100.0  # a secant slope beyond this is not a network's: clamped
UNPAIRED = 1e-3  # a step evaluated once is accepted only if nothing before it moved more than this (floored stds)
MAX_STORE_ENTRIES = 1 << 24  # N x D x D floats a Jacobian store may hold (64 MiB): larger chains do not probe
MAX_DENSE_ENTRIES = 1 << 24  # N x B x D x D floats of one round's dense models; beyond, slopes only
STAND_IN_STD = 0.2  # the stand-in target's std (normalized units): fewer PushT rounds than 0.5 (benchmarks/README.md)
STAND_IN_SCANS = 8  # Newton scans for the stand-in's chain on a GPU before it is stepped instead
STD_FLOOR = 0.15  # no state is judged against a noise std below this (normalized units; benchmarks/README.md)
FITTED = ("slopes", "points", "pairs", "count", "known", "left", "right", "ridge")

ArrayOps = namedtuple("ArrayOps", "where isnan solve index concat")
Pending = namedtuple("Pending", "at_steps before length new_pair")  # a round's evaluations before its call
Clipping = namedtuple("Clipping", "sides offset model coefficients")  # where a linearisation's steps clipped
HOST_OPS = ArrayOps(np.where, np.isnan, np.linalg.solve, np.asarray, np.concatenate)
# solve_ex: torch.linalg.solve checks for a singular matrix, a host sync on CUDA (the ridge keeps the fits regular)
TORCH_OPS = ArrayOps(torch.where, torch.isnan, lambda a, b: torch.linalg.solve_ex(a, b)[0], torch.tensor, torch.cat)


def send(host: torch.Tensor, device) -> torch.Tensor:
    """``host`` on ``device`` without waiting: a blocking copy to a GPU synchronises the stream (the
    host waits for every queued kernel), a non-blocking one from pageable memory is staged at once."""
    return host.to(device, non_blocking=True)


def placed(like, *indices):
    """Host indices on ``like``'s device, sent in one copy for all the gathers and scatters they
    serve (on a GPU each use of a host index by a device tensor is a copy of its own); NumPy
    arrays and boolean masks as they are or one copy each."""
    if isinstance(like, np.ndarray):
        return indices if len(indices) > 1 else indices[0]
    if len(indices) == 1:
        return send(torch.as_tensor(indices[0]), like.device)
    together = send(torch.cat([torch.as_tensor(index, dtype=torch.long) for index in indices]), like.device)
    return together.split([len(index) for index in indices])


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or inf, in one kernel and one read: its float32 sum is not
    finite if an entry is not (a finite sum beyond float32's range counts too: the caller falls back
    to the sequential chain, never to a wrong answer)."""
    return math.isfinite(float(tensor.sum(dtype=torch.float32)))


def modelled_outputs(offset: torch.Tensor, model: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
    """offset + J x at states ``flat`` (..., D): J dense (..., D, D), in one batched product
    (one kernel), or a slope (..., 1)."""
    if model.dim() == offset.dim() + 1:
        return torch.baddbmm(offset.reshape(-1, offset.shape[-1], 1), model.reshape(-1, *model.shape[-2:]),
                             flat.reshape(-1, flat.shape[-1], 1)).view(offset.shape)
    return torch.addcmul(offset, model, flat)


def evaluation_plan(start: int, n_steps: int, max_rows: int, thin: bool = False) -> torch.Tensor:
    """The steps a round evaluates: every remaining one if they fit in ``max_rows`` (every other
    one if ``thin``); else, where every other step reaches the end, a contiguous head from
    ``start`` and every other step after it, ``max_rows`` in all; else a window of ``max_rows``
    steps from ``start``."""
    remaining = n_steps - start
    if remaining <= max_rows:
        return torch.arange(start, n_steps, 2 if thin else 1)
    if remaining >= 2 * max_rows:  # too few rows to reach the end: a plain sliding window
        return torch.arange(start, start + max_rows)
    head = 2 * max_rows - remaining
    tail = torch.arange(start + head + 1, n_steps, 2)
    return torch.cat([torch.arange(start, start + head), tail])[:max_rows]


def prior_slopes(rule) -> torch.Tensor:
    """d output / dx of the Gaussian stand-in denoiser at every step, in the network's own
    parametrisation (a scalar per step: the stand-in's output is linear in x)."""
    one = torch.ones(1, dtype=torch.float64)
    prediction = getattr(rule.config, "prediction_type", "epsilon")
    alphas = rule.alphas_cumprod.double()
    return torch.cat([gaussian_denoiser_output(one, float(alphas[int(t)]), prediction, STAND_IN_STD)
                      for t in rule.timesteps]).float()


class JacobianStore:
    """Per step, the measured columns of d output / dx (finite-difference probes, shared by the
    batch), remeasured oldest first; a column never measured falls back to the step's slope."""

    def __init__(self, n_steps: int, size: int, device):
        self.matrix = torch.zeros((n_steps, size, size), device=device)
        self.measured = torch.zeros((n_steps, size), dtype=torch.bool, device=device)
        self.cursor = [0] * n_steps  # the next column to (re)measure
        self.size = size

    def next_columns(self, step: int, count: int) -> list[int]:
        first = self.cursor[step]
        self.cursor[step] = (first + count) % self.size
        return [(first + k) % self.size for k in range(count)]

    def write(self, steps: list[int], columns: list[int], values: torch.Tensor):
        """``values`` (P, B, D): probe p's difference quotient (column ``columns[p]`` of step
        ``steps[p]``), per sample; the store keeps their batch mean. Returns what it overwrote, for
        ``restore``: the store outlives the call, and a round whose outputs turn out not finite
        (read at its end, on a GPU) must leave it as it found it."""
        at = placed(self.matrix, steps, columns)
        overwritten = (at, self.matrix[at[0], :, at[1]], self.measured[at])
        self.matrix[at[0], :, at[1]] = values.mean(1).to(self.matrix.dtype)
        self.measured[at] = True
        return overwritten

    def restore(self, overwritten) -> None:
        at, columns, measured = overwritten
        self.matrix[at[0], :, at[1]] = columns
        self.measured[at] = measured


def store_key(rule, x_T: torch.Tensor) -> tuple:
    """What a stored Jacobian belongs to: the schedule and the state's shape, dtype and device."""
    return (rule.scheduler_name, tuple(rule.timesteps.tolist()), tuple(x_T.shape[1:]), x_T.dtype, str(x_T.device))


class StepModels:
    """This call's affine model of every step's network output, on flat states (B, D).

    Step j: out(x) = value_j + slope_j (x - anchor_j) along unmeasured directions + the store's
    measured columns + U_j V_j^T (x - anchor_j), the multi-secant correction. A step never
    evaluated has value = anchor = 0: the Gaussian stand-in itself (its output is linear in x).
    """

    def __init__(self, store: JacobianStore | None, slopes: torch.Tensor, x_T: torch.Tensor, history: int):
        n_steps, batch, size = slopes.shape[0], x_T.shape[0], math.prod(x_T.shape[1:])
        self.store, self.history, self.size = store, history, size
        # the latest secant slope, once there is one; in the states' precision
        self.slopes = slopes.to(x_T.dtype).view(-1, 1).expand(n_steps, batch).clone()
        # each step's (input, output) side by side, and its unit-length secant pairs (dx, d output)
        # likewise: one gather or scatter moves both halves (each a kernel on a GPU)
        self.points = x_T.new_zeros((n_steps, batch, 2 * size))
        self.pairs = x_T.new_zeros((n_steps, history, batch, 2 * size))
        self.count = torch.zeros(n_steps, dtype=torch.long)
        self.known = torch.zeros(n_steps, dtype=torch.bool)
        self.left = x_T.new_zeros((n_steps, batch, size, history))  # U
        self.right = x_T.new_zeros((n_steps, batch, history, size))  # V^T
        self.ridge = RIDGE * torch.eye(history, dtype=x_T.dtype, device=x_T.device)
        self.dense = store is not None or n_steps * batch * size * size <= MAX_DENSE_ENTRIES
        # made once, for the dense models' base (each round's; a kernel each on a GPU)
        self.eye = torch.eye(size, dtype=x_T.dtype, device=x_T.device) if self.dense else None
        self.step_index = send(torch.arange(n_steps), x_T.device)  # sent once: a round's steps are a slice of it
        # NumPy views of the same memory: a CPU round's fits are a few dozen ops on small arrays,
        # where a torch op's dispatch costs more than its arithmetic (as in the propagation)
        self.views = SimpleNamespace(**{name: getattr(self, name).numpy() for name in FITTED}) \
            if store is None and on_host_arrays(x_T) else None

    def tensors(self) -> tuple:
        """What the models are made of (a caller's gradient may run through any)."""
        store = () if self.store is None else (self.store.matrix,)
        return (self.points, self.pairs, self.slopes, self.left, self.right, *store)

    @property
    def anchor(self) -> torch.Tensor:
        """(N, B, D): where each step was last evaluated."""
        return self.points[..., : self.size]

    @property
    def value(self) -> torch.Tensor:
        """(N, B, D): the network's output there."""
        return self.points[..., self.size :]

    def prepare(self, steps: torch.Tensor, states: torch.Tensor, on_device: torch.Tensor) -> Pending:
        """Before the round's call, on the tensors: where ``steps`` were last evaluated, how far their
        inputs ``states`` moved since, and which gain a secant pair (``record``). The host reads that
        mask now, while the device holds only this round's gathers, so that on a GPU nothing from the
        call to the round's end waits for the device. ``on_device``: the steps, sent already."""
        return self._movement(self, steps, states, on_device, host=False)

    def _movement(self, arrays, steps, states, at_steps, host: bool) -> Pending:
        before = arrays.points[at_steps]
        dx = states - before[..., : self.size]
        length = (dx * dx).sum(-1, keepdims=True) ** 0.5
        moved = (length > 0).all(1).reshape(-1)
        return Pending(at_steps, before, length, arrays.known[steps] & (moved if host else moved.cpu()))

    def record(self, steps: torch.Tensor, states: torch.Tensor, outputs: torch.Tensor,
               pending: Pending | None = None) -> None:
        """This round's evaluations (K, B, D) of ``steps`` (K,); a step evaluated before gains a
        secant pair (x' - x, out' - out) / |x' - x|, and its model is refitted. ``pending``: what
        ``prepare`` found before the call (the torch path only)."""
        host = pending is None and self.views is not None and on_host_arrays(states, outputs)
        arrays, ops = (self.views, HOST_OPS) if host else (self, TORCH_OPS)
        if host:
            steps, states, outputs = steps.numpy(), states.numpy(), outputs.numpy()
        if pending is None:
            pending = self._movement(arrays, steps, states, placed(arrays.points, steps), host)
        at_steps, before, length, new_pair = pending
        evaluated = ops.concat([states, outputs], -1)
        paired = steps[new_pair]
        if len(paired):
            # a slice: views, not gathers
            slot = arrays.count[paired] % self.history
            if len(paired) == len(steps):
                at_pairs, take = placed(arrays.pairs, paired, slot), slice(None)
            else:  # the rows that pair, as indices sent with the others: a mask's gather waits for the device
                *at_pairs, take = placed(arrays.pairs, paired, slot, [i for i, gains in enumerate(new_pair.tolist())
                                                                      if gains])
            arrays.pairs[tuple(at_pairs)] = (evaluated - before)[take] / length[take]
            arrays.count[paired] += 1
        first = steps[~arrays.known[steps]]
        arrays.points[at_steps] = evaluated
        arrays.known[steps] = True
        takers = self._borrow(arrays, ops, first)
        refit = ops.concat([paired, takers]) if len(takers) else paired
        if len(refit):  # one fit for both: each step's fit reads only its own pairs and slope
            self._fit(arrays, ops, refit)

    def _borrow(self, arrays, ops, steps):
        """A step evaluated for the first time takes the secant pairs of a neighbour that has
        some (the one with more): the output varies smoothly with the noise level, so the
        neighbour's slopes model it better than the Gaussian stand-in's, and the rounds spent
        pairing steps that a budgeted round skipped are saved. Its own pairs replace them.
        Returns the takers, for the caller to refit."""
        counts, source, takers = arrays.count.tolist(), {}, []  # Python numbers: a test per step on arrays costs more
        for step in steps.tolist():
            donors = [k for k in (step - 1, step + 1) if 0 <= k < len(counts) and counts[k] > 0]
            if donors:
                donor = max(donors, key=lambda k: counts[k])
                source[step] = source.get(donor, donor)  # a taker's pairs are its donor's: copy from the origin
                counts[step] = counts[donor]
                takers.append(step)
        if not takers:
            return steps[:0]
        index, origin = ops.index(takers), ops.index([source[step] for step in takers])
        # one gather and one scatter per array for all takers (each a kernel on a GPU)
        to, origin = placed(arrays.pairs, index, origin)
        arrays.pairs[to] = arrays.pairs[origin]
        arrays.count[index] = ops.index([counts[step] for step in takers])
        return index

    def _fit(self, arrays, ops, steps) -> None:
        """Refit ``steps``' slopes and low-rank corrections to their secant pairs, on ``arrays``
        (the tensors, or NumPy views of them) with ``ops`` (torch's or NumPy's)."""
        latest = (arrays.count[steps] - 1) % self.history
        steps, latest = placed(arrays.slopes, steps, latest)
        size, latest_pair = self.size, arrays.pairs[steps, latest]
        rayleigh = (latest_pair[..., :size] * latest_pair[..., size:]).sum(-1)  # (K, B): slope along it
        # a NaN keeps the slope before (an overflowed, infinite one is clamped like any other)
        slopes = ops.where(ops.isnan(rayleigh), arrays.slopes[steps], rayleigh.clip(0, MAX_SLOPE))
        arrays.slopes[steps] = slopes
        if not self.dense:
            return
        pairs = arrays.pairs[steps].swapaxes(1, 2)  # (K, B, H, 2D); unfilled slots are zero and fit to zero
        dx, de = pairs[..., :size], pairs[..., size:]
        arrays.right[steps] = ops.solve(dx @ dx.swapaxes(-1, -2) + arrays.ridge, dx)
        if self.store is None:  # the base is slope x identity: no D x D matrix needed for its product
            based = slopes[..., None, None] * dx
        else:
            based = dx @ self.base(steps, slopes).transpose(-1, -2)
        arrays.left[steps] = (de - based).swapaxes(-1, -2)

    def base(self, steps: torch.Tensor | slice, slopes: torch.Tensor | None = None) -> torch.Tensor:
        """(K, B, D, D): the measured columns, and the latest slope (``slopes``, else read) along the
        unmeasured axes."""
        slopes = self.slopes[steps] if slopes is None else slopes
        if self.store is None:
            return slopes[..., None, None] * self.eye
        measured = self.store.measured[steps][:, None, None, :]  # (K, 1, 1, D) columns
        return torch.where(measured, self.store.matrix[steps][:, None], slopes[..., None, None] * self.eye)

    def affine(self, steps: torch.Tensor | slice):
        """Each step's model as out(x) = offset + J x: ``(offset (K, B, D), J)``, J dense (K, B, D, D),
        or a slope (K, B, 1) where dense models would not fit MAX_DENSE_ENTRIES; ``steps`` an index
        or a slice of them."""
        anchor = self.anchor[steps]
        if not self.dense:
            slope = self.slopes[steps][..., None].clone()  # the caller's to change (a slice would be a view)
            return self.value[steps] - slope * anchor, slope
        jacobian = self.base(steps) + self.left[steps] @ self.right[steps]
        return self.value[steps] - (jacobian @ anchor.unsqueeze(-1)).squeeze(-1), jacobian


def plan_probes(steps: list[int], spare: int, store: JacobianStore | None) -> list[tuple[int, int]]:
    """(step, column) pairs to measure in ``spare`` rows: whole Jacobians, last steps first."""
    if store is None or spare <= 0:
        return []
    probes = []
    for step in reversed(steps):
        count = min(store.size, spare - len(probes))
        if count <= 0:
            break
        probes.extend((step, column) for column in store.next_columns(step, count))
    return probes


def probe_states(anchors: torch.Tensor, columns: list[int]) -> torch.Tensor:
    """``anchors`` (P, B, D), probe p moved by PROBE_STEP along axis ``columns[p]``."""
    axes = torch.nn.functional.one_hot(torch.tensor(columns), anchors.shape[-1])  # made on the host, sent once
    return torch.add(anchors, send(axes.unsqueeze(1), anchors.device), alpha=PROBE_STEP)  # one kernel on the device


def between_steps(fresh: torch.Tensor, start: int) -> list[int]:
    """Indices k (step start + k) of the steps this round models by their neighbours' mean: not
    evaluated this round, between two that were (never the first, evaluated, or the last step)."""
    evaluated = fresh.tolist()[:-1]  # Python booleans: a few tensor ops on them cost more than the loop
    return [j - start for j in range(max(start, 1), len(evaluated) - 1)
            if evaluated[j - 1] and evaluated[j + 1] and not evaluated[j]]


def round_models(models: StepModels, start: int, fresh: torch.Tensor):
    """(offset, J) of steps start..N-1 for this round: a step not evaluated this round between
    two that were is modelled by their mean."""
    n_steps = fresh.shape[0] - 1
    offset, jacobian = models.affine(slice(start, n_steps))  # a slice: views, where an index gathers (a kernel each)
    between = between_steps(fresh, start)
    if between:  # one gather and one mean per array: (a + b) / 2, the same bits as 0.5 (a + b)
        where, neighbours = placed(offset, between, [k + d for d in (-1, 1) for k in between])
        offset[where] = offset[neighbours].view(2, len(where), *offset.shape[1:]).mean(0)
        jacobian[where] = jacobian[neighbours].view(2, len(where), *jacobian.shape[1:]).mean(0)
    return offset, jacobian


def propagate(models: StepModels, traj: torch.Tensor, start: int, fresh: torch.Tensor, problem) -> torch.Tensor:
    """The chain from state ``start`` to the end through the models, step by step (no network):
    each modelled output goes through the scheduler's own transition, clipping included (a rule
    without per-step coefficients through ``transition`` itself, one step at a time)."""
    rule = problem.rule
    if rule.coefficients is not None:
        return propagate_coefficients(models, rule.coefficients_on(traj.device), traj, start, fresh, problem)
    n_steps = fresh.shape[0] - 1
    offset, jacobian = round_models(models, start, fresh)
    cond_data, cond_mask, noises = problem.cond_data, problem.cond_mask, problem.noises
    new = traj.clone()
    x = traj[start]
    batch, memory = x.shape[0], rule.new_memory(x)  # one-step rules keep nothing in it
    for k, j in enumerate(range(start, n_steps)):
        x = impose(x, cond_data, cond_mask)
        out = modelled_outputs(offset[k], jacobian[k], x.reshape(batch, -1))
        x = rule.transition(j, x[None], out.view(x.shape)[None], None if noises is None else noises[j][None],
                            memory)[0]
        new[j + 1] = x
    return new


def on_host_arrays(states: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether the work runs in NumPy: CPU float tensors (NumPy has no bfloat16) that no gradient
    is tracked through (a caller sampling outside ``no_grad`` keeps torch's graph)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and not t.requires_grad
               for t in (states, *others))


def propagate_coefficients(models: StepModels, coefficients, traj: torch.Tensor, start: int, fresh: torch.Tensor,
                           problem) -> torch.Tensor:
    """``propagate`` for a rule whose step is per-step tensor maths (``StepCoefficients``, the same
    operations in the same order): its scalars read once as Python numbers, each step's noise
    term formed for the whole round at once, a model without measured columns applied as slope
    plus low-rank correction (its D x D matrix never formed), and on the CPU the N dependent
    steps in NumPy, whose call on these small arrays costs a fraction of a torch op's dispatch
    (the host work of a CPU round; benchmarks/README.md)."""
    n_steps = fresh.shape[0] - 1
    low_rank = models.dense and models.store is None  # J = slope I + U V^T
    if low_rank:
        part = slice(start, n_steps)
        tensors = [models.value[part].unsqueeze(-1), models.anchor[part].unsqueeze(-1),
                   models.slopes[part][..., None, None], models.left[part], models.right[part]]
    else:
        offset, jacobian = round_models(models, start, fresh)
        dense = jacobian.dim() == 4  # else a slope per sample
        tensors = [offset.unsqueeze(-1), jacobian if dense else jacobian.unsqueeze(-1)]
    names = ("first", "x0_scale", "eps_scale", "x_scale")
    first, x0_scale, eps_scale, x_scale = (getattr(coefficients, name)[start:n_steps].tolist() for name in names)
    noise = None
    if problem.noises is not None:
        std = coefficients.drawn_std[start:n_steps]
        noise = std.to(traj.dtype).view(-1, 1, 1, 1) * problem.noises[start:n_steps].flatten(2).unsqueeze(-1)
    new = traj.clone(memory_format=torch.contiguous_format)  # viewed as columns below
    columns = new.view(new.shape[0], new.shape[1], -1, 1)
    mask, data, where = problem.cond_mask, problem.cond_data, torch.where
    if mask is not None:  # inpainted entries as columns, like the states
        mask, data = (torch.broadcast_to(v, traj.shape[1:]).reshape(traj.shape[1], -1, 1) for v in (mask, data))
    if on_host_arrays(new, *tensors):
        tensors, columns, where = [v.numpy() for v in tensors], columns.numpy(), np.where
        noise = None if noise is None else noise.numpy()
        mask, data = (None, None) if mask is None else (mask.numpy(), data.numpy())
    if low_rank:
        value, anchor, slope, left, right = tensors
        mean_of_neighbours = set(between_steps(fresh, start))

        def own(k, x):
            moved = x - anchor[k]
            return value[k] + slope[k] * moved + left[k] @ (right[k] @ moved)

        def output(k, x):
            return 0.5 * (own(k - 1, x) + own(k + 1, x)) if k in mean_of_neighbours else own(k, x)
    else:
        offset, jacobian = tensors

        def output(k, x):
            return (jacobian[k] @ x if dense else jacobian[k] * x) + offset[k]
    clip, ddim = coefficients.clip, coefficients.ddim
    for k in range(n_steps - start):
        x = columns[start + k] if mask is None else where(mask, data, columns[start + k])
        out = output(k, x)
        x0 = (x - eps_scale[k] * out) / x_scale[k]
        if clip is not None:
            x0 = x0.clip(-clip, clip)
        step = x0_scale[k] * x0 + first[k] * (out if ddim else x)
        columns[start + k + 1] = step if noise is None else step + noise[k]
    return new


def linearise(models: StepModels, traj: torch.Tensor, start: int, fresh: torch.Tensor, problem, coefficients=None,
              into: torch.Tensor | None = None):
    """Every remaining step at the current trajectory: its modelled next state (K, B, *S), its
    Jacobian, (K, B, D, D) with dense models (written into ``into`` where given: a scan's slots),
    else its diagonal (K, B, D), and where the clean-sample predictions clipped (``Clipping``; None
    where the rule does not clip). The transition's partials are elementwise, in closed form
    (``StepCoefficients.linearised``: a handful of kernels where autograd's jvp launched a
    hundred); inpainted inputs have none."""
    rule, n_steps = problem.rule, fresh.shape[0] - 1
    offset, model = round_models(models, start, fresh)
    steps = models.step_index[start:n_steps]
    states = impose(traj[start:n_steps], problem.cond_data, problem.cond_mask)
    flat = states.flatten(2)
    dense = model.dim() == 4
    out = modelled_outputs(offset, model, flat).view(states.shape)
    noise = None if problem.noises is None else problem.noises[start:n_steps]
    # the caller's condition: a per-step tensor-maths rule (``coefficients``: another form of it)
    coefficients = rule.coefficients_on(traj.device) if coefficients is None else coefficients
    nxt, along_x, along_out, sides = coefficients.linearised(steps, states, out, noise)
    clipping = None if sides is None else Clipping(sides, offset, model, coefficients)
    free = None if problem.cond_mask is None else (~problem.cond_mask).flatten(1).to(flat.dtype)
    if not dense:
        diagonal = along_x.flatten(2) + along_out.flatten(2) * model
        return nxt, diagonal if free is None else diagonal * free, clipping
    jacobian = torch.mul(along_out.flatten(2)[..., None], model, **({} if into is None else {"out": into}))
    jacobian.diagonal(dim1=-2, dim2=-1).add_(along_x.flatten(2))  # + diag(along_x), in place
    return nxt, jacobian if free is None else jacobian.mul_(free[None, :, None, :]), clipping


def clean_predictions(offset: torch.Tensor, model: torch.Tensor, coefficients, chain: torch.Tensor, start: int,
                      models: StepModels, problem) -> torch.Tensor:
    """The clean-sample predictions, before clipping, of steps start..N-1 along ``chain`` with the
    network modelled by ``(offset, model)`` (``round_models``)."""
    states = impose(chain[start:-1], problem.cond_data, problem.cond_mask)
    out = modelled_outputs(offset, model, states.flatten(2)).view(states.shape)
    return coefficients.clean_prediction(models.step_index[start:], states, out)


def clipping_moved(clipping: Clipping, chain: torch.Tensor, start: int, models: StepModels, problem) -> torch.Tensor:
    """How many clean-sample predictions along ``chain`` (through the same models) stand on another
    side of the clipping range than where the linearisation's did (kept, clipped below, clipped
    above): a float32 count on the device, read with the round's changes, NaN if the chain is not
    finite. Where none moved, the scanned chain is the models' own chain exactly."""
    x0 = clean_predictions(clipping.offset, clipping.model, clipping.coefficients, chain, start, models, problem)
    moved = (clipping.coefficients.clipping_sides(x0) != clipping.sides).sum(dtype=torch.float32)
    return torch.add(moved, x0.sum(dtype=torch.float32), alpha=0.0)  # (0 x inf or NaN: NaN)


def propagate_linear(models: StepModels, traj: torch.Tensor, start: int, fresh: torch.Tensor, problem,
                     coefficients=None, workspace: AffineScan | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``propagate`` with every step linearised at the current trajectory, solved by a doubling
    scan (``AffineScan``, the chunk's workspace where given): log2(N) batched matrix products
    instead of N dependent steps (a handful of kernels on a GPU). Returns the chain and whether
    a clipping pattern changed along it (``clipping_moved``; None where nothing clips): where not,
    it is the models' own chain exactly; where so, more scans meet it (``settled_chain``)."""
    count, size = traj.shape[0] - 1 - start, math.prod(traj.shape[2:])
    if tracked(traj, *models.tensors()):  # a caller's gradient: no workspace written in place
        nxt, jacobian, clipping = linearise(models, traj, start, fresh, problem, coefficients)
        jacobian = torch.diag_embed(jacobian) if jacobian.dim() == 3 else jacobian
        corrections = carry_corrections((nxt - traj[start + 1 :]).flatten(2), jacobian)
    else:
        scan = AffineScan(count, traj.shape[1], size, traj) if workspace is None else workspace
        into_jacobians, into_residuals = scan.slots(count)
        nxt, jacobian, clipping = linearise(models, traj, start, fresh, problem, coefficients, into=into_jacobians)
        if jacobian.dim() == 3:  # diagonal models
            into_jacobians.zero_().diagonal(dim1=-2, dim2=-1).copy_(jacobian)
        torch.sub(nxt.flatten(2), traj[start + 1 :].flatten(2), out=into_residuals)
        corrections = scan.run(count)
    moved = traj[start + 1 :].flatten(2) + corrections
    chain = torch.cat([traj[: start + 1], moved.view(traj[start + 1 :].shape)])
    return chain, None if clipping is None else clipping_moved(clipping, chain, start, models, problem)


def settled_chain(models: StepModels, traj: torch.Tensor, start: int, fresh: torch.Tensor, problem,
                  workspace: AffineScan | None, scans: int) -> tuple[torch.Tensor, bool]:
    """Newton scans from ``traj`` until the clipping pattern holds along the chain they reach (then
    it is the models' own chain, as ``propagate`` steps it), at most ``scans`` of them (a host sync
    each): ``(chain, settled)``."""
    for _ in range(scans):
        traj, moved = propagate_linear(models, traj, start, fresh, problem, workspace=workspace)
        if (moved is None and all_finite(traj)) or (moved is not None and float(moved) == 0.0):
            return traj, True
    return traj, False


def stand_in_chain(models: StepModels, x_T: torch.Tensor, problem, linear: bool,
                   workspace: AffineScan | None = None) -> torch.Tensor:
    """The chain the models drive from x_T before any evaluation, the cold start: the Gaussian
    stand-in's, with the stored Jacobian columns where there are some. Each of its steps is affine
    in x but for clipping, so on a GPU one linearised scan of the unclipped steps is that chain
    where nothing clips (``unclipped_chain``: a few dozen kernels where the step loop launches
    several per step); where something clips, Newton scans from it reach the chain once their
    clipping pattern settles (a host sync each). A chain that has not settled after
    STAND_IN_SCANS scans is stepped."""
    n_steps = problem.rule.num_steps
    nothing = torch.zeros(n_steps + 1, dtype=torch.bool)
    traj = x_T.expand(n_steps + 1, *x_T.shape).clone()
    if linear:
        chain, valid = unclipped_chain(models, traj, problem, workspace)
        if valid:
            return chain
        if all_finite(chain):
            traj = chain
    traj, settled = settled_chain(models, traj, 0, nothing, problem, workspace, STAND_IN_SCANS if linear else 0)
    return traj if settled else propagate(models, traj, 0, nothing, problem)


def unclipped_chain(models: StepModels, traj: torch.Tensor, problem,
                    workspace: AffineScan | None = None) -> tuple[torch.Tensor, bool]:
    """The models' chain from ``traj[0]`` with the scheduler's clipping left out, and whether it is
    also the clipped one (no clean-sample prediction along it clips; False if not finite). Without
    clipping every step is affine in x (the models are), so one linearised scan from any chain
    ``traj`` is exact."""
    rule = problem.rule
    coefficients = rule.coefficients_on(traj.device)
    nothing = torch.zeros(rule.num_steps + 1, dtype=torch.bool)
    chain = propagate_linear(models, traj, 0, nothing, problem, coefficients.unclipped, workspace)[0]
    if coefficients.clip is None:
        return chain, all_finite(chain)
    offset, model = round_models(models, 0, nothing)  # the network as modelled, along the chain
    worst = float(clean_predictions(offset, model, coefficients, chain, 0, models, problem).abs().amax())
    return chain, worst <= coefficients.clip  # (NaN if anything is not finite: False)


def propagated(models: StepModels, traj: torch.Tensor, start: int, fresh: torch.Tensor, problem,
               workspace: AffineScan | None, inv_var: torch.Tensor, outputs_sum: torch.Tensor | None):
    """The round's new chain through the refitted models (scanned with ``workspace``, else stepped),
    and every state's change (``worst_changes``) as Python numbers, followed by the outputs' sum and the
    count of clean-sample predictions whose clipping moved along the scan, all read in one go. Where
    some moved, more scans first, until none does (``settled_chain``; a sharp network, as a
    random-init one, needs half the rounds then), else the step loop."""
    new, clipping_moved_flag = propagate_linear(models, traj, start, fresh, problem, workspace=workspace) \
        if workspace is not None else (propagate(models, traj, start, fresh, problem), None)
    change = worst_changes(new, traj, inv_var)
    flags = [flag.view(1).to(change.dtype) for flag in (outputs_sum, clipping_moved_flag) if flag is not None]
    change = (torch.cat([change, *flags]) if flags else change).tolist()
    if clipping_moved_flag is not None and change[-1] and all(map(math.isfinite, change)):
        new, settled = settled_chain(models, new, start, fresh, problem, workspace, STAND_IN_SCANS)
        new = new if settled else propagate(models, new, start, fresh, problem)
        change = worst_changes(new, traj, inv_var).tolist() + change[len(traj) :]
    return new, change


def worst_changes(new: torch.Tensor, traj: torch.Tensor, inv_var: torch.Tensor) -> torch.Tensor:
    """Every state's squared change, the worst sample's, in units of its (floored) noise variance."""
    return (new - traj).pow(2).flatten(2).sum(-1).amax(1) * inv_var


def solve_quasi_newton(problem: DenoisingProblem, store: JacobianStore | None, slopes: torch.Tensor, *, name: str,
                       tolerance: float, max_rows: int, history: int, thin_start: bool, scan: bool,
                       settings: dict) -> SampleResult:
    """The rounds (module docstring). ``store`` None: no probes."""
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch, shape = rule.num_steps, problem.batch, x_T.shape[1:]
    tol2 = float(tolerance) ** 2
    inv_var = convergence_weights(rule, shape, n_steps + 1, x_T.device, std_floor=STD_FLOOR)
    models = StepModels(store, slopes, x_T, history)
    linear = scan and models.dense and rule.coefficients is not None  # few kernels a round, not N
    workspace = AffineScan(n_steps, batch, math.prod(shape), x_T) if linear else None  # the rounds' scans
    nothing = torch.zeros(n_steps + 1, dtype=torch.bool)
    if problem.init_guess is not None:
        traj = problem.init_guess.clone()
        traj[0] = x_T
    else:
        traj = stand_in_chain(models, x_T, problem, linear, workspace)
    timesteps = send(rule.timesteps, x_T.device)
    start, rounds, nfe, max_error, widest = 0, 0, 0, 0.0, 0
    while start < n_steps:
        plan = evaluation_plan(start, n_steps, max_rows, thin=thin_start and not rounds and problem.init_guess is None)
        steps = plan.tolist()
        probes = plan_probes(steps, max_rows - len(steps), store if rounds else None)
        # the round's host indices in one copy: every row's step (the plan's first), and the probed
        # steps' places among the plan's
        row_steps, probed = placed(x_T, steps + [j for j, _ in probes], [steps.index(j) for j, _ in probes])
        states = impose(traj.index_select(0, row_steps[: len(steps)]), problem.cond_data, problem.cond_mask).flatten(2)
        rows = states
        if probes:
            rows = torch.cat([states, probe_states(states[probed], [c for _, c in probes])])
        pending = None if models.views is not None else models.prepare(plan, states, row_steps[: len(steps)])
        t_rows = timesteps.index_select(0, row_steps)
        t_rows = t_rows if batch == 1 else t_rows.repeat_interleave(batch)  # (a copy even for one sample)
        outputs = problem.denoise(rows.reshape(-1, *shape), t_rows).reshape(rows.shape)
        rounds, nfe, widest = rounds + 1, nfe + rows.shape[0], max(widest, rows.shape[0])
        # the outputs' finiteness: on the GPU's scan path read with the round's changes, so that no
        # host sync stops the launches between the call and the round's end (the fits, the scan);
        # elsewhere checked now (on the host a read costs nothing)
        finite_now = not linear  # the CPU's step loop, whose NumPy would warn on NaN
        if finite_now and not all_finite(outputs):
            return fallback_to_chain(problem, name, rounds, nfe, settings, widest)
        outputs_sum = None if finite_now else outputs.sum(dtype=torch.float32).view(1)
        outputs, probe_outputs = outputs[: len(steps)], outputs[len(steps) :]
        fresh = nothing.clone()
        fresh[plan] = True
        overwritten = store.write([j for j, _ in probes], [c for _, c in probes],
                                  (probe_outputs - outputs[probed]) / PROBE_STEP) if probes else None
        try:
            models.record(plan, states, outputs, pending)
            new, change = propagated(models, traj, start, fresh, problem, workspace, inv_var, outputs_sum)
        except BaseException:  # the store outlives the call: a round that fails leaves it as it found it
            if overwritten is not None:
                store.restore(overwritten)
            raise
        if not all(map(math.isfinite, change[start + 1 :])):  # a non-finite state (the chain was finite) shows here
            if overwritten is not None:
                store.restore(overwritten)
            return fallback_to_chain(problem, name, rounds, nfe, settings, widest)
        traj = new
        accepted, upstream = 1, 0.0  # the leading evaluated states: the first is exact (its input was);
        while start + accepted < n_steps and fresh[start + accepted]:  # state k + 1 then needs a small
            k = start + accepted  # change of its input k and, unless nothing before it moved, pairs on step k
            moved = change[k]
            unknown_gain = not bool(models.count[k] > 0) and max(upstream, moved) > UNPAIRED ** 2
            if moved > tol2 or unknown_gain:
                break
            upstream = max(upstream, moved)
            max_error = max(max_error, math.sqrt(moved))
            accepted += 1
        if problem.callback is not None:
            problem.callback({"round": rounds, "start": start, "accepted": accepted})
        start += accepted
    sample = impose(traj[n_steps], problem.cond_data, problem.cond_mask).clone()
    stats = SampleStats(name, rounds=rounds, nfe=nfe, max_error=max_error, initial_guess=problem.caller_guess,
                        max_rows_per_round=widest, settings=settings)
    eps = models.value.clone(memory_format=torch.contiguous_format)  # the outputs' half of the points: a copy
    return SampleResult(sample, stats, eps=eps.view(n_steps, *x_T.shape))


@dataclass(frozen=True)
class QuasiNewton(SamplerBase):
    """Settings: ``tolerance`` (in units of each step's noise std, floored at ``STD_FLOOR``),
    ``max_rows`` (network rows per round and sample, probes included), ``probes`` (spend the
    rows a round has left under ``max_rows`` on Jacobian columns: fewer rounds where a row
    costs little, as on a GPU, more work per round on a CPU; None: on for CUDA tensors, off
    on the CPU), ``thin_start`` (a cold start's first round evaluates every other step where
    the chain fits ``max_rows``: fewer rows where they cost, as on a CPU; None: off for CUDA
    tensors, on for others; settings report the resolved value, as for ``probes``),
    ``scan`` (propagate each round through a linearised doubling scan and build the cold start
    from one scan of its unclipped steps: a few dozen kernels a round instead of several per step, as on a GPU; on
    the CPU the step loop in NumPy costs less; None: on for CUDA tensors, off for others),
    ``history`` (secant pairs per step) and ``reuse_jacobians`` (keep measured columns for the
    next calls)."""

    tolerance: float = 0.01  # <= 1 px on a random-init upstream-size UNet, DDPM-100 and DDIM-16 (benchmarks/)
    max_rows: int = 64
    probes: bool | None = None
    thin_start: bool | None = None
    scan: bool | None = None
    history: int = 3
    reuse_jacobians: bool = True
    _stores: dict = field(default_factory=dict, compare=False, repr=False)
    name = "quasi_newton"
    exact = True
    accepts_initial_guess = True
    supports_prefix = True

    def __post_init__(self):
        check_tolerance(self.name, self.tolerance)
        check_positive_int(self.name, "max_rows", self.max_rows)
        check_positive_int(self.name, "history", self.history)
        if not isinstance(self.reuse_jacobians, bool):
            raise SamplerConfigError(f"{self.name} reuse_jacobians must be true or false, got {self.reuse_jacobians!r}")
        for setting in ("probes", "thin_start", "scan"):
            value = getattr(self, setting)
            if value is not None and not isinstance(value, bool):
                raise SamplerConfigError(f"{self.name} {setting} must be true, false or null, got {value!r}")

    def probing(self, x_T: torch.Tensor) -> bool:
        return self.probes if self.probes is not None else x_T.device.type == "cuda"

    def thinning(self, x_T: torch.Tensor) -> bool:
        return self.thin_start if self.thin_start is not None else x_T.device.type != "cuda"

    def scanning(self, x_T: torch.Tensor) -> bool:
        return self.scan if self.scan is not None else x_T.device.type == "cuda"

    def store_for(self, rule, x_T: torch.Tensor) -> JacobianStore | None:
        """The Jacobian store this call builds on: kept across calls when reusing (one schedule
        and shape at a time); None without probes or where N x D x D exceeds MAX_STORE_ENTRIES."""
        size = math.prod(x_T.shape[1:])
        if not self.probing(x_T) or rule.num_steps * size * size > MAX_STORE_ENTRIES:
            return None
        key = store_key(rule, x_T)
        store = self._stores.get(key) if self.reuse_jacobians else None
        if store is None:
            store = JacobianStore(rule.num_steps, size, x_T.device)
            if self.reuse_jacobians:
                self._stores.clear()
                self._stores[key] = store
        return store

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        rule = problem.rule
        if rule.history_length:
            raise SamplerConfigError(f"{self.name} needs a one-step scheduler (DDPM, DDIM), got the multistep "
                                     f"{rule.scheduler_name}")
        given = problem.init_guess is not None
        slopes = send(prior_slopes(rule), problem.x_T.device)
        thin_start, scan = self.thinning(problem.x_T), self.scanning(problem.x_T)
        settings = {"tolerance": float(self.tolerance), "max_rows": self.max_rows, "probes": self.probing(problem.x_T),
                    "thin_start": thin_start, "scan": scan, "history": self.history,
                    "reuse_jacobians": self.reuse_jacobians, "start": "warm" if given else "prior"}
        result = solve_quasi_newton(problem, self.store_for(rule, problem.x_T), slopes, name=self.name,
                                    tolerance=self.tolerance, max_rows=self.max_rows, history=self.history,
                                    thin_start=thin_start, scan=scan, settings=settings)
        return result
