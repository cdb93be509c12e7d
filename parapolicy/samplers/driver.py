"""The one host driver every sampler shares: buffers, window rounds, fallback, stats.

A sampler says which update its rounds apply (``kernels.PicardUpdate``, ``SecantUpdate``,
...) and when the window's leading states are final (``acceptance``: a tolerance in units
of each step's noise std, or a fixed number of sweeps per block). The driver builds the
typed buffers (``buffers``) once per kernel, asks the problem's executor to run the round
kernel, lets a judge (``sync``: the host after every round, or the device for k rounds per
sync) accept and slide, falls back to the sequential chain on NaN/inf, and reports
``SampleStats``.
"""

from __future__ import annotations

import torch

from parapolicy.errors import NonFiniteSampleError, SamplerConfigError
from parapolicy.samplers.acceptance import ToleranceAcceptance
from parapolicy.samplers.buffers import ChainBuffers, WindowBuffers
from parapolicy.samplers.executor import EAGER
from parapolicy.samplers.fingerprint import problem_key
from parapolicy.samplers.inpainting import impose
from parapolicy.samplers.kernels import sequential_chain, window_round
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, SampleStats
from parapolicy.samplers.sync import DeviceJudged, HostJudged, Progress


def _executor(problem: DenoisingProblem):
    """The problem's executor, or eager where the rule's step cannot be captured (multistep solvers)."""
    return problem.executor if problem.rule.graphable else EAGER


def _step_function(rule, x_T: torch.Tensor, pad: int):
    """``step(index, x, eps, noise)`` for kernels: padded coefficients, or the rule with a fresh memory."""
    if rule.graphable:
        return rule.coefficients_on(x_T.device).padded(pad).transition
    memory = rule.new_memory(x_T)
    return lambda index, x, eps, noise: rule.transition(index, x, eps, noise, memory)


def solve_chain(problem: DenoisingProblem, name: str = "sequential") -> SampleResult:
    """The sequential chain (one replay when captured); NaN/inf here is an error, never an answer."""
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch = rule.num_steps, problem.batch
    executor = _executor(problem)
    callback = problem.callback if not executor.captures else None

    def build(denoise):
        buf = ChainBuffers.allocate(problem)
        step = _step_function(rule, x_T, 0)
        on_step = None if callback is None else (lambda i: callback({"round": i + 1, "start": i, "accepted": 1}))
        return buf, lambda: sequential_chain(buf, denoise, step, batch, n_steps, on_step)

    buf, run = executor.prepare(("chain",) + problem_key(problem), build, problem.denoise)
    buf.x_T.copy_(x_T)
    buf.inputs.fill(problem)
    run()
    sample = buf.out.clone()
    if not bool(torch.isfinite(sample).all()):
        raise NonFiniteSampleError(
            f"sequential sampling produced NaN/inf (expected finite actions, found "
            f"{int((~torch.isfinite(sample)).sum())} non-finite values): check the network weights and the observation")
    stats = SampleStats(name, rounds=n_steps, nfe=n_steps, captured=executor.captures)
    return SampleResult(sample, stats, eps=buf.eps.clone())


def fallback_to_chain(problem: DenoisingProblem, name: str, rounds: int, nfe: int, settings: dict,
                      widest: int = 1) -> SampleResult:
    """What a parallel sampler returns after NaN/inf in round ``rounds``: the sequential answer, saying so.
    ``widest``: the most rows per sample one of its rounds evaluated."""
    result = solve_chain(problem.replace(callback=None))
    n_steps = problem.rule.num_steps
    result.stats = SampleStats(name, rounds=rounds + n_steps, nfe=nfe + n_steps, max_rows_per_round=max(1, widest),
                               fallback=f"sequential: non-finite values in Picard round {rounds}", settings=settings)
    return result


def solve_windowed(problem: DenoisingProblem, update, acceptance, *, name: str, window: int,
                   settings: dict | None = None, rounds_per_sync: int = 1, kernel=window_round) -> SampleResult:
    """Parallel rounds over a window of ``window`` steps; see the module docstring.

    ``acceptance``: ``ToleranceAcceptance`` slides the window past converged states (exact:
    the fixed point is the sequential answer); ``FixedSweepsAcceptance`` gives each block of
    ``window`` steps that many rounds (``sweeps >= window`` solves it exactly) and the next
    block starts from its end. ``rounds_per_sync`` > 1 (tolerance only) judges on the device
    (``sync.DeviceJudged``). ``kernel`` is the round kernel, ``kernel(buf, denoise, step,
    batch, n_steps, update) -> RoundOutcome`` (``window_round`` unless a sampler's round
    evaluates other points than the window's states); it may read ``buf.sweep``, the rounds
    already run at the window's current start.
    """
    if rounds_per_sync != 1:
        if kernel is not window_round:
            raise SamplerConfigError(f"{name}: rounds_per_sync > 1 runs the window-round kernel only")
        if acceptance.device is None:
            raise SamplerConfigError(f"{name}: rounds_per_sync > 1 needs a tolerance, not sweeps")
    return _solve(problem, update, acceptance, name=name, window=window, settings=settings,
                  rounds_per_sync=rounds_per_sync, on_device=rounds_per_sync != 1, kernel=kernel)


def solve_windowed_synced(problem: DenoisingProblem, update, *, name: str, window: int, tolerance: float,
                          rounds_per_sync: int, settings: dict | None = None) -> SampleResult:
    """``solve_windowed`` with tolerance, judged on the device for every ``rounds_per_sync``
    rounds, 1 included (the device judge of the one-round-per-sync iterates). The callback
    is called once per sync, with the rounds so far."""
    return _solve(problem, update, ToleranceAcceptance(tolerance), name=name, window=window, settings=settings,
                  rounds_per_sync=rounds_per_sync, on_device=True, kernel=window_round)


def _solve(problem: DenoisingProblem, update, acceptance, *, name: str, window: int, settings: dict | None,
           rounds_per_sync: int, on_device: bool, kernel) -> SampleResult:
    """The one windowed build and loop: buffers, window fill, rounds, slides, stats."""
    settings = dict(settings or {})
    rule, x_T = problem.rule, problem.x_T
    n_steps, batch = rule.num_steps, problem.batch
    width = min(int(window), n_steps)
    executor = _executor(problem)
    if on_device:
        judge = DeviceJudged(acceptance, width, n_steps, int(rounds_per_sync))
    else:
        judge = HostJudged(acceptance, width, n_steps, executor.captures, update.extra_points)
    rounds_kernel = judge.kernel(kernel)

    def build(denoise):
        buf = WindowBuffers.allocate(problem, update, width, judge.pad)
        step = _step_function(rule, x_T, judge.pad)
        return buf, lambda: rounds_kernel(buf, denoise, step, batch, n_steps, update)

    key = (judge.key, name, update.key, width, kernel.__name__) + problem_key(problem)
    buf, run = executor.prepare(key, build, problem.denoise)
    buf.start_trajectory(problem, update)
    judge.begin(buf, problem)
    progress = Progress()
    while progress.start < n_steps:
        start = progress.start
        progress = judge.advance(buf, run, progress)
        if progress.non_finite:
            return fallback_to_chain(problem, name, progress.rounds, progress.nfe + update.extra_nfe(batch), settings,
                                     max(1, progress.widest) * update.rows_per_point)
        if problem.callback is not None:
            problem.callback({"round": progress.rounds, "start": start, "accepted": progress.start - start})
    max_error = judge.finish(buf)
    sample = impose(buf.traj[n_steps], problem.cond_data, problem.cond_mask).clone()
    stats = SampleStats(name, rounds=progress.rounds, nfe=progress.nfe + update.extra_nfe(batch), max_error=max_error,
                        captured=executor.captures, initial_guess=problem.caller_guess,
                        max_rows_per_round=progress.widest * update.rows_per_point, settings=settings)
    return SampleResult(sample, stats, eps=buf.eps[:n_steps].clone())
