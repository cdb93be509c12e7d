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
  the exact denoiser of a Gaussian N(0, PRIOR_STD^2) target (``newton_prior``), one scalar
  per step. Columns of the full D x D matrix are measured by finite differences in the
  rows a round has left under its budget (the tail of the chain first: its steps are the
  least linear and decide the last rounds), and kept across calls (``reuse_jacobians``)
  because the network and a robot's observations change little between chunks. On top,
  a least-squares low-rank correction makes E_j reproduce this call's last ``history``
  evaluations of step j (a multi-secant model, as in Anderson acceleration / ParaTAA).
- **The budget is spread over the whole chain.** When the remaining steps do not fit in
  ``max_rows``, a round evaluates a contiguous head and every other step after it; a
  skipped step's output is the mean of its two evaluated neighbours' models at its own
  input (the output varies smoothly with the noise level), so the tail is refined from the
  first round on.

Each round propagates the remaining chain through the models (no network), then accepts
the leading evaluated states whose change is below ``tolerance`` (in units of that step's
noise std, as every exact sampler here). The window start is exact after every round, so
the answer is the sequential one for the same noise draws: the models move the rounds,
never the fixed point. NaN/inf falls back to the sequential chain. The start is
``newton_prior``'s Gaussian stand-in trajectory, or the caller's initial guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.driver import convergence_weights, fallback_to_chain
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.newton_prior import gaussian_denoiser_output, start_from_prior
from parapolicy.samplers.problem import (DenoisingProblem, SampleResult, SampleStats, check_positive_int,
                                         check_tolerance)

PROBE_STEP = 1e-3  # finite-difference step, in normalized units (data spans [-1, 1])
RIDGE = 1e-4  # regularisation of the secant fit, relative to its largest (unit-length) pair
MAX_STORE_ENTRIES = 1 << 24  # N x D x D floats a Jacobian store may hold (64 MiB); larger chains keep slopes only


def evaluation_plan(start: int, n_steps: int, max_rows: int) -> torch.Tensor:
    """The steps a round evaluates: every remaining one if they fit in ``max_rows``; else, where
    every other step reaches the end, a contiguous head from ``start`` and every other step after
    it, ``max_rows`` in all; else a window of ``max_rows`` steps from ``start``."""
    remaining = n_steps - start
    if remaining <= max_rows:
        return torch.arange(start, n_steps)
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
    return torch.cat([gaussian_denoiser_output(one, float(alphas[int(t)]), prediction) for t in rule.timesteps]).float()


class JacobianStore:
    """Per step, a D x D estimate of d output / dx shared by the batch: the stand-in's slope
    times the identity until finite-difference probes replace its columns, oldest first."""

    def __init__(self, slopes: torch.Tensor, size: int):
        n_steps = slopes.shape[0]
        self.matrix = slopes.view(-1, 1, 1) * torch.eye(size, dtype=slopes.dtype, device=slopes.device)
        self.cursor = [0] * n_steps  # the next column to (re)measure
        self.size = size

    def next_columns(self, step: int, count: int) -> list[int]:
        first = self.cursor[step]
        self.cursor[step] = (first + count) % self.size
        return [(first + k) % self.size for k in range(count)]

    def write(self, step: int, columns: list[int], values: torch.Tensor) -> None:
        """``values`` (len(columns), B, D): each probe's difference quotient, per sample."""
        self.matrix[step][:, columns] = values.mean(1).T.to(self.matrix.dtype)


def store_key(rule, x_T: torch.Tensor) -> tuple:
    """What a stored Jacobian belongs to: the schedule and the state's shape, dtype and device."""
    return (rule.scheduler_name, tuple(rule.timesteps.tolist()), tuple(x_T.shape[1:]), x_T.dtype, str(x_T.device))


class StepModels:
    """This call's affine model of every step's network output (module docstring)."""

    def __init__(self, store: JacobianStore | None, slopes: torch.Tensor, x_T: torch.Tensor, history: int):
        n_steps, batch, size = slopes.shape[0], x_T.shape[0], math.prod(x_T.shape[1:])
        self.store, self.slopes, self.history = store, slopes, history
        self.anchor = x_T.new_zeros((n_steps, *x_T.shape))
        self.value = x_T.new_zeros((n_steps, *x_T.shape))
        self.pairs_x = x_T.new_zeros((n_steps, history, batch, size))
        self.pairs_e = x_T.new_zeros((n_steps, history, batch, size))
        self.count = [0] * n_steps
        self.known = [False] * n_steps
        self.left = [None] * n_steps  # (B, D, m) and (B, m, D): the low-rank secant correction
        self.right = [None] * n_steps

    def record(self, steps: list[int], states: torch.Tensor, outputs: torch.Tensor) -> None:
        """This round's evaluations; a step evaluated before gains a secant pair (unit length)."""
        flat_x, flat_e = states.flatten(2), outputs.flatten(2)
        for k, j in enumerate(steps):
            if self.known[j]:
                dx = flat_x[k] - self.anchor[j].flatten(1)
                length = dx.norm(dim=-1, keepdim=True)
                if bool((length > 0).all()):
                    slot = self.count[j] % self.history
                    self.pairs_x[j, slot] = dx / length
                    self.pairs_e[j, slot] = (flat_e[k] - self.value[j].flatten(1)) / length
                    self.count[j] += 1
            self.anchor[j], self.value[j], self.known[j] = states[k], outputs[k], True

    def fit(self, step: int) -> None:
        """The least-squares low-rank correction that makes the model reproduce the step's pairs."""
        m = min(self.count[step], self.history)
        if m == 0:
            return
        dx = self.pairs_x[step, :m].transpose(0, 1)  # (B, m, D)
        de = self.pairs_e[step, :m].transpose(0, 1)
        gram = dx @ dx.transpose(1, 2)
        gram = gram + RIDGE * torch.eye(m, dtype=gram.dtype, device=gram.device)
        self.left[step] = (de - self.base(step, dx)).transpose(1, 2)
        self.right[step] = torch.linalg.solve(gram, dx)

    def base(self, step: int, dx: torch.Tensor) -> torch.Tensor:
        """The stored Jacobian (or the stand-in's slope) applied to flat displacements ``dx`` (..., D)."""
        if self.store is None:
            return self.slopes[step] * dx
        return dx @ self.store.matrix[step].T

    def output(self, step: int, x: torch.Tensor) -> torch.Tensor:
        """The modelled network output of ``step`` at states ``x`` (B, *S)."""
        dx = (x - self.anchor[step]).flatten(1)
        change = self.base(step, dx)
        if self.left[step] is not None:
            change = change + (self.left[step] @ (self.right[step] @ dx.unsqueeze(-1))).squeeze(-1)
        return self.value[step] + change.view(x.shape)


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


def probe_states(anchors: torch.Tensor, probes: list[tuple[int, int]], shape) -> torch.Tensor:
    """The anchors of the probed steps, each moved by PROBE_STEP along its column's axis."""
    moved = anchors.flatten(2).clone()
    for k, (_, column) in enumerate(probes):
        moved[k, :, column] += PROBE_STEP
    return moved.view(len(probes), *shape)


def step_function(rule, x_T: torch.Tensor):
    """``step(j, x, out, noise)`` for one step j on (B, *S) states: the rule's transition, with its
    per-step coefficients read once as Python numbers (the propagation makes N small steps a round)."""
    coefficients = rule.coefficients
    if coefficients is None:
        memory = rule.new_memory(x_T)
        return lambda j, x, out, noise: rule.transition(j, x[None], out[None], None if noise is None else noise[None],
                                                        memory)[0]
    table = list(zip(*(getattr(coefficients, name).tolist() for name in
                       ("first", "x0_scale", "eps_scale", "x_scale", "noise_std", "drawn"))))
    ddim, clip = coefficients.ddim, coefficients.clip

    def step(j, x, out, noise):
        first, x0_scale, eps_scale, x_scale, noise_std, drawn = table[j]
        x0 = (x - eps_scale * out) / x_scale
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        mean = x0_scale * x0 + first * (out if ddim else x)
        return mean + noise_std * noise if (drawn and noise is not None) else mean

    return step


def first_outputs(rule, traj: torch.Tensor) -> torch.Tensor:
    """The Gaussian stand-in's output at every guessed state: the model of a step never evaluated."""
    prediction = getattr(rule.config, "prediction_type", "epsilon")
    alphas = rule.alphas_cumprod.double()
    return torch.stack([gaussian_denoiser_output(traj[j], float(alphas[int(t)]), prediction)
                        for j, t in enumerate(rule.timesteps.tolist())])


def evaluate(problem: DenoisingProblem, states: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """The network on ``states`` (K, B, *S) at ``steps`` (K,): ONE batched call."""
    shape = problem.x_T.shape[1:]
    t_rows = problem.rule.timesteps.to(states.device).index_select(0, steps).repeat_interleave(problem.batch)
    return problem.denoise(states.reshape(-1, *shape), t_rows).reshape(states.shape)


def solve_quasi_newton(problem: DenoisingProblem, store: JacobianStore | None, slopes: torch.Tensor, *, name: str,
                       tolerance: float, max_rows: int, history: int, settings: dict) -> SampleResult:
    """The rounds (module docstring). ``store`` None: slopes only, no probes."""
    rule, x_T = problem.rule, problem.x_T
    n_steps, shape = rule.num_steps, x_T.shape[1:]
    cond_data, cond_mask, noises = problem.cond_data, problem.cond_mask, problem.noises
    tol2 = float(tolerance) ** 2
    inv_var = convergence_weights(rule, shape, n_steps + 1, x_T.device).cpu()
    traj = problem.init_guess.clone()
    traj[0] = x_T
    models = StepModels(store, slopes, x_T, history)
    models.anchor.copy_(traj[:n_steps])
    models.value.copy_(first_outputs(rule, traj))
    step = step_function(rule, x_T)
    start, rounds, nfe, max_error, widest = 0, 0, 0, 0.0, 0
    while start < n_steps:
        plan = evaluation_plan(start, n_steps, max_rows)
        steps = plan.tolist()
        states = impose(traj.index_select(0, plan.to(x_T.device)), cond_data, cond_mask)
        probes = plan_probes(steps, max_rows - len(steps), store if rounds else None)
        probed = [steps.index(j) for j, _ in probes]
        outputs = evaluate(problem, torch.cat([states, probe_states(states[probed], probes, x_T.shape)]),
                           torch.tensor(steps + [j for j, _ in probes], device=x_T.device))
        rounds, nfe, widest = rounds + 1, nfe + outputs.shape[0], max(widest, outputs.shape[0])
        if not bool(torch.isfinite(outputs).all()):
            return fallback_to_chain(problem, name, rounds, nfe, settings, widest)
        outputs, probe_outputs = outputs[: len(steps)], outputs[len(steps) :]
        for k, (j, column) in enumerate(probes):
            store.write(j, [column], (probe_outputs[k : k + 1] - outputs[probed[k]]).flatten(2) / PROBE_STEP)
        models.record(steps, states, outputs)
        for j in steps:
            models.fit(j)
        fresh = [False] * (n_steps + 1)
        for j in steps:
            fresh[j] = True
        new = traj.clone()
        x = traj[start]
        for j in range(start, n_steps):  # the remaining chain through the models: no network
            x = impose(x, cond_data, cond_mask)
            if not fresh[j] and fresh[j - 1] and fresh[j + 1]:
                out = 0.5 * (models.output(j - 1, x) + models.output(j + 1, x))
            else:
                out = models.output(j, x)
            x = step(j, x, out, None if noises is None else noises[j])
            new[j + 1] = x
        if not bool(torch.isfinite(new[start + 1 :]).all()):
            return fallback_to_chain(problem, name, rounds, nfe, settings, widest)
        change = (new - traj).pow(2).flatten(2).sum(-1).amax(1).cpu() * inv_var  # worst sample, per state
        traj = new
        accepted = 0  # the leading evaluated states; the first is exact (its input was)
        while start + accepted < n_steps and fresh[start + accepted]:
            accepted += 1
            if change[start + accepted] > tol2:
                break
            max_error = max(max_error, float(change[start + accepted].sqrt()))
        if problem.callback is not None:
            problem.callback({"round": rounds, "start": start, "accepted": accepted})
        start += accepted
    sample = impose(traj[n_steps], cond_data, cond_mask).clone()
    stats = SampleStats(name, rounds=rounds, nfe=nfe, max_error=max_error, initial_guess=problem.init_guess is not None,
                        max_rows_per_round=widest, settings=settings)
    return SampleResult(sample, stats, eps=models.value.clone())


@dataclass(frozen=True)
class QuasiNewton(SamplerBase):
    """Settings: ``tolerance`` (in units of each step's noise std, as every exact sampler),
    ``max_rows`` (network rows per round and sample, probes included), ``probes`` (spend the
    rows a round has left under ``max_rows`` on Jacobian columns: fewer rounds where a row
    costs little, as on a GPU, more work per round on a CPU; None: on for CUDA tensors, off
    on the CPU), ``history`` (secant pairs per step) and ``reuse_jacobians`` (keep measured
    columns for the next calls)."""

    tolerance: float = 0.1
    max_rows: int = 64
    probes: bool | None = None
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
        if self.probes is not None and not isinstance(self.probes, bool):
            raise SamplerConfigError(f"{self.name} probes must be true, false or null, got {self.probes!r}")

    def probing(self, x_T: torch.Tensor) -> bool:
        return self.probes if self.probes is not None else x_T.device.type == "cuda"

    def store_for(self, rule, x_T: torch.Tensor, slopes: torch.Tensor) -> JacobianStore | None:
        """The Jacobian store this call builds on: kept across calls when reusing (one schedule
        and shape at a time); None without probes or where N x D x D exceeds MAX_STORE_ENTRIES."""
        size = math.prod(x_T.shape[1:])
        if not self.probing(x_T) or rule.num_steps * size * size > MAX_STORE_ENTRIES:
            return None
        key = store_key(rule, x_T)
        store = self._stores.get(key) if self.reuse_jacobians else None
        if store is None:
            store = JacobianStore(slopes, size)
            if self.reuse_jacobians:
                self._stores.clear()
                self._stores[key] = store
        return store

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        rule = problem.rule
        if rule.history_length:
            raise SamplerConfigError(f"{self.name} needs a one-step scheduler (DDPM, DDIM), got the multistep "
                                     f"{rule.scheduler_name}")
        problem, given = start_from_prior(problem)
        slopes = prior_slopes(rule).to(problem.x_T.device)
        settings = {"tolerance": float(self.tolerance), "max_rows": self.max_rows, "probes": self.probing(problem.x_T),
                    "history": self.history, "reuse_jacobians": self.reuse_jacobians,
                    "start": "warm" if given else "prior"}
        result = solve_quasi_newton(problem, self.store_for(rule, problem.x_T, slopes), slopes, name=self.name,
                                    tolerance=self.tolerance, max_rows=self.max_rows, history=self.history,
                                    settings=settings)
        result.stats.initial_guess = given
        return result
