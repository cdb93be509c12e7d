"""The one host driver every sampler shares: buffers, window slide, flags, fallback, stats.

A sampler says which update its rounds apply (``kernels.PicardUpdate``, ``SecantUpdate``,
...) and how the window advances: past every leading state whose change is below
``tolerance`` (in units of that step's noise std, for every sample), or after a fixed
number of ``sweeps`` per block. The driver builds the buffers, asks the problem's executor
to run the round kernel, reads the flags once per round (the only host sync), falls back
to the sequential chain on NaN/inf, and reports ``SampleStats``.
"""

from __future__ import annotations

import math

import torch

from parapolicy.errors import NonFiniteSampleError, SamplerConfigError
from parapolicy.samplers.executor import EAGER
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.kernels import sequential_chain, synced_rounds, window_round
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, SampleStats


def convergence_weights(rule, state_shape, length: int, device) -> torch.Tensor:
    """1 / (noise variance x state size) per trajectory state, zero-padded to ``length``.

    State j is judged against the noise variance of step j-1, which produced it; the final
    state never blocks (it is exact once its predecessors are) and state 0 is never judged.
    """
    n_steps = rule.num_steps
    weights = torch.zeros(length, device=device, dtype=torch.float32)
    weights[1:n_steps] = 1.0 / (rule.error_variance[: n_steps - 1].to(device) * max(1, math.prod(state_shape)))
    return weights


def _executor(problem: DenoisingProblem):
    """The problem's executor, or eager where the rule's step cannot be captured (multistep solvers)."""
    return problem.executor if problem.rule.graphable else EAGER


def _step_function(rule, x_T: torch.Tensor, pad: int):
    """``step(index, x, eps, noise)`` for kernels: padded coefficients, or the rule with a fresh memory."""
    if rule.graphable:
        return rule.coefficients_on(x_T.device).padded(pad).transition
    memory = rule.new_memory(x_T)
    return lambda index, x, eps, noise: rule.transition(index, x, eps, noise, memory)


def _input_buffers(problem: DenoisingProblem, rows: int, pad: int) -> dict:
    x_T, device = problem.x_T, problem.x_T.device
    timesteps = problem.rule.timesteps.to(device)
    return {
        "noise": x_T.new_zeros((rows, *x_T.shape)) if problem.noises is not None else None,
        "cond_data": torch.zeros_like(problem.cond_data) if problem.cond_mask is not None else None,
        "cond_mask": torch.zeros_like(problem.cond_mask) if problem.cond_mask is not None else None,
        "timesteps": torch.cat([timesteps, timesteps[-1:].expand(pad)]) if pad else timesteps,
    }


def _fill_inputs(buf: dict, problem: DenoisingProblem) -> None:
    if problem.noises is not None:
        buf["noise"][: problem.noises.shape[0]].copy_(problem.noises)
    if problem.cond_mask is not None:
        buf["cond_data"].copy_(problem.cond_data)
        buf["cond_mask"].copy_(problem.cond_mask)


def _start_trajectory(buf: dict, problem: DenoisingProblem, update) -> None:
    """Every state = x_T (or the initial guess, state 0 kept at x_T), this call's inputs, a fresh update memory."""
    traj, x_T = buf["traj"], problem.x_T
    traj.copy_(x_T.expand_as(traj))
    if problem.init_guess is not None:
        traj[: problem.rule.num_steps + 1].copy_(problem.init_guess)
        traj[0].copy_(x_T)
    _fill_inputs(buf, problem)
    update.reset(buf)


def _shape_key(problem: DenoisingProblem) -> tuple:
    return (id(problem.rule), tuple(problem.x_T.shape), problem.x_T.dtype, problem.noises is not None,
            problem.cond_mask is not None)


def solve_chain(problem: DenoisingProblem, name: str = "sequential") -> SampleResult:
    """The sequential chain (one replay when captured); NaN/inf here is an error, never an answer."""
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch = rule.num_steps, problem.batch
    executor = _executor(problem)
    callback = problem.callback if not executor.captures else None

    def build(denoise):
        buf = {"x_T": torch.zeros_like(x_T), "out": torch.zeros_like(x_T),
               "eps": x_T.new_zeros((n_steps, *x_T.shape)),
               "index": torch.arange(n_steps, device=x_T.device), **_input_buffers(problem, n_steps, 0)}
        step = _step_function(rule, x_T, 0)
        on_step = None if callback is None else (lambda i: callback({"round": i + 1, "start": i, "accepted": 1}))
        return buf, lambda: sequential_chain(buf, denoise, step, batch, n_steps, on_step)

    buf, run = executor.prepare(("chain",) + _shape_key(problem), build, problem.denoise)
    buf["x_T"].copy_(x_T)
    _fill_inputs(buf, problem)
    run()
    sample = buf["out"].clone()
    if not bool(torch.isfinite(sample).all()):
        raise NonFiniteSampleError(
            f"sequential sampling produced NaN/inf (expected finite actions, found "
            f"{int((~torch.isfinite(sample)).sum())} non-finite values): check the network weights and the observation")
    stats = SampleStats(name, rounds=n_steps, nfe=n_steps, captured=executor.captures)
    return SampleResult(sample, stats, eps=buf["eps"].clone())


def fallback_to_chain(problem: DenoisingProblem, name: str, rounds: int, nfe: int, settings: dict,
                      widest: int = 1) -> SampleResult:
    """What a parallel sampler returns after NaN/inf in round ``rounds``: the sequential answer, saying so.
    ``widest``: the most rows per sample one of its rounds evaluated."""
    result = solve_chain(problem.replace(callback=None))
    n_steps = problem.rule.num_steps
    result.stats = SampleStats(name, rounds=rounds + n_steps, nfe=nfe + n_steps, max_rows_per_round=max(1, widest),
                               fallback=f"sequential: non-finite values in Picard round {rounds}", settings=settings)
    return result


def solve_windowed(problem: DenoisingProblem, update, *, name: str, window: int, tolerance: float | None = None,
                   sweeps: int | None = None, settings: dict | None = None, rounds_per_sync: int = 1,
                   kernel=window_round) -> SampleResult:
    """Parallel rounds over a window of ``window`` steps; see the module docstring.

    With ``tolerance``: the window slides past converged states (exact: the fixed point is
    the sequential answer). With ``sweeps``: each block of ``window`` steps gets that many
    rounds (``sweeps >= window`` solves it exactly) and the next block starts from its end.
    ``rounds_per_sync`` > 1 (tolerance only): ``solve_windowed_synced``. ``kernel`` is the
    round kernel, ``kernel(buf, denoise, step, batch, n_steps, update)`` (``window_round``
    unless a sampler's round evaluates other points than the window's states); it reads
    ``buf["sweep"]``, the round's index within the current block (sweeps mode; else 0).
    """
    if rounds_per_sync != 1:
        if kernel is not window_round:
            raise SamplerConfigError(f"{name}: rounds_per_sync > 1 runs the window-round kernel only")
        if sweeps is not None:
            raise SamplerConfigError(f"{name}: rounds_per_sync > 1 needs a tolerance, not sweeps")
        return solve_windowed_synced(problem, update, name=name, window=window, tolerance=tolerance,
                                     settings=settings, rounds_per_sync=rounds_per_sync)
    settings = dict(settings or {})
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch, state_shape = rule.num_steps, problem.batch, x_T.shape[1:]
    width = min(int(window), n_steps)
    executor = _executor(problem)
    pad = width if executor.captures else 0
    device = x_T.device

    def build(denoise):
        rows = n_steps + pad
        buf = {"traj": x_T.new_zeros((rows + 1, *x_T.shape)), "eps": x_T.new_zeros((rows, *x_T.shape)),
               "inv_var": convergence_weights(rule, state_shape, rows + 1, device),
               "start": torch.zeros((), dtype=torch.long, device=device),
               "sweep": torch.zeros((), dtype=torch.long, device=device),
               "slots": torch.arange(width, device=device), "flags": x_T.new_zeros(width + 1),
               **_input_buffers(problem, rows, pad), **update.buffers(rows, x_T)}
        step = _step_function(rule, x_T, pad)
        return buf, lambda: kernel(buf, denoise, step, batch, n_steps, update)

    key = ("window", name, update.key, width, kernel.__name__) + _shape_key(problem)
    buf, run = executor.prepare(key, build, problem.denoise)
    all_slots, traj = buf["slots"], buf["traj"]
    _start_trajectory(buf, problem, update)
    tol2 = float(tolerance) ** 2 if tolerance is not None else None
    extra_points = update.extra_points  # points a round evaluates besides the window's states
    start, rounds, nfe, max_error, block_rounds, widest = 0, 0, 0, 0.0, 0, 0
    while start < n_steps:
        end = min(start + width, n_steps)
        count = end - start
        buf["start"].fill_(start)
        buf["sweep"].fill_(block_rounds)
        if not executor.captures:
            buf["slots"] = all_slots[:count]  # eager: live slots only
        run()
        rounds, nfe = rounds + 1, nfe + count + extra_points
        widest = max(widest, (width if executor.captures else count) + extra_points)  # a replay runs padded rows
        flags = buf["flags"].detach().cpu()  # the one host sync of the round
        if flags[-1]:
            return fallback_to_chain(problem, name, rounds, nfe, settings, widest)
        worst = flags[:count]
        if sweeps is None:
            bad = torch.nonzero(worst > tol2).flatten()
            first_bad = int(bad[0]) if bad.numel() else count
            accepted = min(first_bad + 1, count)
            if first_bad > 0:
                max_error = max(max_error, float(worst[:first_bad].max().sqrt()))
        else:
            block_rounds += 1
            accepted = count if block_rounds >= min(sweeps, count + extra_points) else 0
            if accepted:
                max_error, block_rounds = max(max_error, float(worst.max().sqrt())), 0
        new_start = start + accepted
        new_end = min(new_start + width, n_steps)
        if new_end > end and problem.init_guess is None:  # slots entering the window start from the latest state
            traj[end + 1 : new_end + 1] = traj[end]
        if problem.callback is not None:
            problem.callback({"round": rounds, "start": start, "accepted": accepted})
        start = new_start
    buf["slots"] = all_slots
    sample = impose(traj[n_steps], problem.cond_data, problem.cond_mask).clone()
    stats = SampleStats(name, rounds=rounds, nfe=nfe, max_error=max_error, captured=executor.captures,
                        initial_guess=problem.caller_guess, max_rows_per_round=widest, settings=settings)
    return SampleResult(sample, stats, eps=buf["eps"][:n_steps].clone())


def solve_windowed_synced(problem: DenoisingProblem, update, *, name: str, window: int, tolerance: float,
                          rounds_per_sync: int, settings: dict | None = None) -> SampleResult:
    """``solve_windowed`` with tolerance, ``rounds_per_sync`` rounds per kernel call (``kernels.synced_rounds``).

    The window start, acceptance, slide and counters stay on the device, so the host syncs
    once per ``rounds_per_sync`` rounds instead of once per round; the iterates are those of
    the one-round-per-sync path, and rounds run after convergence are masked no-ops that
    still cost a network call. The callback is called once per sync, with the rounds so far.
    """
    settings = dict(settings or {})
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch, state_shape = rule.num_steps, problem.batch, x_T.shape[1:]
    width, k = min(int(window), n_steps), int(rounds_per_sync)
    executor = _executor(problem)
    device = x_T.device

    def build(denoise):
        rows = n_steps + width  # fixed-width windows read up to ``width`` rows past the last step
        buf = {"traj": x_T.new_zeros((rows + 1, *x_T.shape)), "eps": x_T.new_zeros((rows, *x_T.shape)),
               "inv_var": convergence_weights(rule, state_shape, rows + 1, device),
               "start": torch.zeros((), dtype=torch.long, device=device),
               "slots": torch.arange(width, device=device),
               "status": torch.zeros(4, dtype=torch.float32, device=device),
               "tol2": torch.zeros((), dtype=torch.float32, device=device),
               "fill": torch.zeros((), dtype=torch.bool, device=device),
               **_input_buffers(problem, rows, width), **update.buffers(rows, x_T)}
        step = _step_function(rule, x_T, width)
        return buf, lambda: synced_rounds(buf, denoise, step, batch, n_steps, update, k)

    key = ("synced", name, update.key, width, k) + _shape_key(problem)
    buf, run = executor.prepare(key, build, problem.denoise)
    traj = buf["traj"]
    _start_trajectory(buf, problem, update)
    buf["start"].zero_()
    buf["status"].zero_()
    buf["tol2"].fill_(float(tolerance) ** 2)
    buf["fill"].fill_(problem.init_guess is None)
    start = 0
    while start < n_steps:
        run()
        snapshot = torch.cat([buf["start"].view(1).to(buf["status"].dtype), buf["status"]]).tolist()  # the sync
        new_start, rounds, nfe = int(snapshot[0]), int(snapshot[1]), int(snapshot[2])
        if snapshot[4]:
            return fallback_to_chain(problem, name, rounds, nfe, settings, width)
        if problem.callback is not None:
            problem.callback({"round": rounds, "start": start, "accepted": new_start - start})
        start = new_start
    sample = impose(traj[n_steps], problem.cond_data, problem.cond_mask).clone()
    stats = SampleStats(name, rounds=rounds, nfe=nfe, max_error=float(buf["status"][2].sqrt()),
                        captured=executor.captures, initial_guess=problem.caller_guess,
                        max_rows_per_round=width, settings=settings)
    return SampleResult(sample, stats, eps=buf["eps"][:n_steps].clone())
