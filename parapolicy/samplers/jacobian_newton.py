"""Newton on the denoising chain with the step Jacobians taken from the network itself.

Write the trajectory as x_{i+1} = Phi_i(x_i), Phi_i = the scheduler step applied to the
network output at x_i. A Newton round on the whole window evaluates every Phi_i(x_i) and
its Jacobian J_i = dPhi_i/dx at the current guesses, then carries the corrections down
the window, d_{i+1} = r_i + J_i d_i (r_i = Phi_i(x_i) - x_{i+1}, d = 0 at the fixed window
start), and sets x_{i+1} += d_{i+1}. ``newton_picard`` models J_i by one secant slope per
sample; here J_i is the full (D x D) Jacobian of one sample's state (D = horizon x action
dims), built from D directional derivatives of the network (finite differences, or
``torch.func.jvp``) computed in the same batched call as the round's evaluation: D + 1 network
evaluations per state instead of one. With ``refresh`` = r > 1 the Jacobians are
recomputed every r-th round only and reused in between (chord Newton), which costs
fewer evaluations and usually a few more rounds.

Any Jacobian leaves the fixed point unchanged (a converged trajectory has r = 0, hence
d = 0): the answer is the sequential one for the same pre-drawn noises, ``tolerance`` is
the only accuracy knob, the window's first state is exact after every round (so rounds
never exceed the number of steps), and NaN/inf falls back to the sequential chain. The
start is ``newton_prior``'s Gaussian stand-in trajectory, or the caller's initial guess.

Kernel: ``jacobian_round`` (``kernels.window_round`` whose one network call also yields
the directional derivatives, ``NetworkJacobian``) with ``JacobianUpdate``. Driver:
``solve_windowed``, always eager (the rounds differ on the host: Jacobian or chord round).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.acceptance import ToleranceAcceptance
from parapolicy.samplers.affine_scan import carry_corrections
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.driver import solve_windowed
from parapolicy.samplers.executor import EAGER
from parapolicy.samplers.kernels import RoundOutcome, RoundUpdate, window_round
from parapolicy.samplers.newton_prior import start_from_prior
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, check_bounded_int, check_tolerance

METHODS = ("jvp", "difference")
DIFFERENCE_STEP = 1e-3  # finite-difference step in normalized action units (data spans [-1, 1])
ROWS_PER_CALL = 8192  # network rows per call while computing derivatives: bounds the memory of one call


class NetworkJacobian:
    """The problem's denoiser; on rounds that ask for it, also d eps / dx along every state axis.

    One object per ``sample`` call. ``tangents`` (D, rows, *S) holds the directional
    derivatives of the last call (None when it computed none), ``eps`` its outputs, and
    ``extra_rows`` counts the network rows spent on derivatives (for honest NFE).
    Inpainted entries are held fixed, so their directions are zero.
    """

    def __init__(self, state_shape, cond_mask, method: str, refresh: int):
        self.state_shape, self.cond_mask = tuple(state_shape), cond_mask
        self.method, self.refresh = method, refresh
        self.calls, self.extra_rows = 0, 0
        self.tangents = self.eps = None

    @property
    def size(self) -> int:
        return math.prod(self.state_shape)

    def directions(self, rows: int, like: torch.Tensor) -> torch.Tensor:
        """(D, rows, *S): the unit vector of axis d on every row, zero on inpainted entries."""
        basis = torch.eye(self.size, device=like.device, dtype=like.dtype).view(self.size, 1, *self.state_shape)
        basis = basis.expand(self.size, rows, *self.state_shape)
        if self.cond_mask is not None:
            free = ~self.cond_mask.repeat(rows // self.cond_mask.shape[0], *([1] * (self.cond_mask.dim() - 1)))
            basis = basis * free.to(like.dtype)
        return basis

    def evaluate(self, denoise, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``denoise(x, t)``, with the directional derivatives on every ``refresh``-th call."""
        fresh = self.calls % self.refresh == 0
        self.calls += 1
        if not fresh:
            self.tangents, self.eps = None, denoise(x, t)
            return self.eps
        rows = x.shape[0]
        dirs = self.directions(rows, x)
        per_call = max(1, ROWS_PER_CALL // rows)
        eps, parts = None, []
        for first in range(0, self.size, per_call):
            eps, tangent = self._derivatives(denoise, x, t, dirs[first : first + per_call], eps)
            parts.append(tangent)
        self.tangents, self.eps = torch.cat(parts), eps
        self.extra_rows += self.size * rows
        return eps

    def _derivatives(self, denoise, x, t, dirs, eps):
        """(eps at x, d eps along each of ``dirs``): one network call on len(dirs) copies of the rows."""
        count, rows = dirs.shape[0], x.shape[0]
        stacked = x.unsqueeze(0).expand(count, *x.shape).reshape(count * rows, *x.shape[1:])
        t_all = t.repeat(count)
        flat_dirs = dirs.reshape(count * rows, *x.shape[1:])
        if self.method == "jvp":
            out, tangent = torch.func.jvp(lambda y: denoise(y, t_all), (stacked.contiguous(),),
                                          (flat_dirs.contiguous(),))
            return (out[:rows] if eps is None else eps), tangent.view(count, *x.shape)
        if eps is None:  # the unperturbed rows ride in the first call
            out = denoise(torch.cat([x, stacked + DIFFERENCE_STEP * flat_dirs]), torch.cat([t, t_all]))
            eps, shifted = out[:rows], out[rows:]
        else:
            shifted = denoise(stacked + DIFFERENCE_STEP * flat_dirs, t_all)
        return eps, ((shifted.view(count, *x.shape) - eps) / DIFFERENCE_STEP)


def jacobian_round(buf, denoise, step, batch: int, n_steps: int, update) -> RoundOutcome:
    """``window_round`` whose one network call also yields the derivatives ``update`` asks for."""
    return window_round(buf, lambda x, t: update.network.evaluate(denoise, x, t), step, batch, n_steps, update)


class JacobianUpdate(RoundUpdate):
    """New states by a Newton step with each step's full Jacobian (``carry_corrections``).

    J_i = d step/dx + d step/d eps . d eps/dx: the network's directional derivatives come
    from ``NetworkJacobian`` (this round's call); the step's own partials from a jvp
    through the scheduler step (no network). Rounds without fresh derivatives reuse the
    Jacobians stored for their steps; a step never given one uses the identity (Picard).
    """

    key = "jacobian"

    def __init__(self, network: NetworkJacobian, rule):
        self.network, self.rule = network, rule
        self.rows_per_point = network.size + 1  # every state's row and its D directions

    def extra_nfe(self, batch: int) -> int:
        """The directional derivatives' rows, per sample (honest NFE)."""
        return self.network.extra_rows // batch

    def buffers(self, rows: int, x_T: torch.Tensor) -> torch.Tensor:
        """Each step's latest Jacobian (rows, B, D, D): reused by rounds without fresh derivatives."""
        size = math.prod(x_T.shape[1:])
        return x_T.new_zeros((rows, x_T.shape[0], size, size))

    def reset(self, extras: torch.Tensor) -> None:
        extras.copy_(torch.eye(extras.shape[-1], device=extras.device).expand_as(extras))

    def step_jacobians(self, buf, index, imposed) -> torch.Tensor:
        """(K, B, D, D) Jacobians of this round's steps at ``imposed`` from the fresh network tangents."""
        net = self.network
        tangents = net.tangents.view(net.size, *imposed.shape)  # (D, K, B, *S)
        count = tangents.shape[0]
        index_all = index.repeat(count)
        noise = buf.inputs.noise.index_select(0, index_all) if buf.inputs.noise is not None else None
        x_all = imposed.unsqueeze(0).expand(count, *imposed.shape).reshape(-1, *imposed.shape[1:])
        eps_all = net.eps.view(imposed.shape).unsqueeze(0).expand(count, *imposed.shape).reshape(x_all.shape)
        dirs = net.directions(imposed.shape[0] * imposed.shape[1], imposed).reshape(x_all.shape)
        _, columns = torch.func.jvp(lambda x, e: self.rule.transition(index_all, x, e, noise),
                                    (x_all.contiguous(), eps_all.contiguous()),
                                    (dirs.contiguous(), tangents.reshape(x_all.shape).contiguous()))
        k, b = imposed.shape[0], imposed.shape[1]
        return columns.reshape(count, k, b, count).permute(1, 2, 3, 0)  # [k, b, out, in]

    def __call__(self, buf, index, states, imposed, nxt, old_next):
        if self.network.tangents is not None:
            jacobians = self.step_jacobians(buf, index, imposed)
            buf.extras.index_copy_(0, index, jacobians)
        else:
            jacobians = buf.extras.index_select(0, index)
        k, b = nxt.shape[0], nxt.shape[1]
        residual = (nxt - old_next).reshape(k, b, -1)
        return old_next + carry_corrections(residual, jacobians.to(residual.dtype)).reshape(nxt.shape)


@dataclass(frozen=True)
class JacobianNewton(SamplerBase):
    """Settings: window and tolerance (as ``newton_picard``), ``refresh`` (Jacobians every that
    many rounds; 1 = exact Newton) and ``jacobian`` (``difference``: one-sided finite
    differences, plain forward calls; ``jvp``: exact forward-mode derivatives through the
    network, the same rounds at several times the cost of a forward call per direction).

    The default tolerance is ``quasi_newton``'s. A tenfold looser one lets a state stop moving
    far from the answer where clipping makes the chain's Newton rounds converge slowly, as on a
    sharp random-init network's coarse DDIM chain (measured deviations: ``benchmarks/samplers.md``).

    ``max_rows`` (network rows per round per sample) is the one exact sampler's budget that
    is off by default: every state costs D + 1 rows here (D = horizon x action dims), so a
    64-row budget would leave a window of one or two steps. Set it to bound a round: the
    window shrinks to ``max_rows // (D + 1)`` steps, and a budget below one state's rows is
    refused."""

    window: int = 100
    tolerance: float = 0.01
    refresh: int = 1
    jacobian: str = "difference"
    max_rows: int | None = None
    name = "jacobian_newton"
    exact = True
    accepts_initial_guess = True

    def __post_init__(self):
        check_bounded_int(self.name, "window", self.window)
        check_tolerance(self.name, self.tolerance)
        check_bounded_int(self.name, "refresh", self.refresh)
        if self.max_rows is not None:
            check_bounded_int(self.name, "max_rows", self.max_rows)
        if not isinstance(self.jacobian, str) or self.jacobian not in METHODS:
            raise SamplerConfigError(f"{self.name} jacobian must be one of {', '.join(METHODS)}, got {self.jacobian!r}")

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        rule = problem.rule
        if rule.history_length:
            raise SamplerConfigError(f"{self.name} needs a one-step scheduler (DDPM, DDIM), got the multistep "
                                     f"{rule.scheduler_name}")
        problem, given = start_from_prior(problem)
        network = NetworkJacobian(problem.x_T.shape[1:], problem.cond_mask, self.jacobian, self.refresh)
        window = self._window(network.size + 1)
        settings = {"window": min(window, rule.num_steps), "tolerance": float(self.tolerance),
                    "refresh": self.refresh, "jacobian": self.jacobian, "start": "warm" if given else "prior"}
        if self.max_rows is not None:
            settings["max_rows"] = self.max_rows
        return solve_windowed(problem.replace(executor=EAGER), JacobianUpdate(network, rule),
                              ToleranceAcceptance(self.tolerance), name=self.name, window=window,
                              settings=settings, kernel=jacobian_round)

    def _window(self, rows_per_state: int) -> int:
        """Steps per round: ``window``, narrowed so that a round's rows stay within ``max_rows``."""
        if self.max_rows is None:
            return self.window
        if self.max_rows < rows_per_state:
            raise SamplerConfigError(f"{self.name} max_rows must be at least one state's rows here (its value and "
                                     f"its {rows_per_state - 1} directions): expected >= {rows_per_state}, "
                                     f"got {self.max_rows}")
        return min(self.window, self.max_rows // rows_per_state)
