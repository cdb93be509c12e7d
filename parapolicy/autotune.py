"""Choosing Picard's window for this device from its measured batch-latency curve.

A wide window wins where a batched network call costs about as much as a single one (a
GPU below saturation, especially with CUDA graphs); on a compute-bound CPU small windows
(or the sequential loop) win. The cost of ONE network call at each row count is measured once per
(device, network, acceleration, observation shape) and cached; each candidate window's
round count comes from one untimed run on the caller's observation. Expected latency =
rounds x call cost at (window x batch) rows; the smallest wins.

With several ``rounds_per_sync`` candidates k the window and k are chosen together: a
measured call includes one host sync, so a chunk of R rounds costs
ceil(R/k) syncs + ceil(R/k) x k rounds of device time (call minus sync), the rounds
after convergence being masked but paid (``expected_ms``). Large k saves syncs, small k
wastes fewer rounds.
"""

from __future__ import annotations

import math
import time
import weakref

import numpy as np
import torch

from parapolicy.timing import median_call_ms, synchronize

_CURVES = weakref.WeakKeyDictionary()  # network -> {(device, acceleration, x shape): {rows: median ms}}


def call_latency_curve(policy, obs: dict, rows, repeats: int = 5) -> dict:
    """Median ms of one network call at each row count in ``rows`` (cached per device/network).

    Rows are multiples of the observation's batch (a window of k steps stacks k copies), so
    the curve is what a Picard round of that window pays for its network call.
    """
    denoise, shape = policy.bound_denoiser(obs)
    batch = shape[0]
    key = (str(policy.device), policy.acceleration, tuple(shape))
    curve = _CURVES.setdefault(policy.model, {}).setdefault(key, {})
    generator = torch.Generator().manual_seed(0)
    for count in sorted({int(r) for r in rows} - set(curve)):
        if count % batch:
            raise ValueError(f"row count {count} is not a multiple of the batch {batch}")
        x = torch.randn((count, *shape[1:]), generator=generator).to(policy.device)
        t = torch.full((count,), int(policy.scheduler.timesteps[0]), dtype=torch.long, device=policy.device)
        with torch.no_grad():  # the warm-up call also captures a graph where one is used
            curve[count] = median_call_ms(lambda: denoise(x, t), policy.device, repeats)
    return {int(r): curve[int(r)] for r in rows}


def sync_latency_ms(device, repeats: int = 20) -> float:
    """Median ms of one host sync: a tiny device op whose result the host waits for."""
    device = torch.device(device)
    flag = torch.zeros((), device=device)
    times = []
    for r in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        (flag + 1).item()
        if r > 0:
            times.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(times))


def expected_chunk_ms(rounds: float, call_ms: float, sync_ms: float, rounds_per_sync: int) -> tuple[float, int]:
    """(expected ms, rounds executed) for ``rounds`` live rounds run ``rounds_per_sync`` per sync.

    ``call_ms`` is a measured call, host sync included; k = 1 gives rounds x call_ms.
    """
    syncs = math.ceil(rounds / rounds_per_sync)
    executed = syncs * rounds_per_sync
    return syncs * sync_ms + executed * max(call_ms - sync_ms, 0.0), executed


def autotune_window(policy, obs: dict, windows=None, tolerance: float = 0.1, repeats: int = 5,
                    apply: bool = True, name: str = "picard", rounds_per_sync=(1,), sync_ms: float | None = None) -> dict:
    """Expected per-chunk latency of sequential and of ``name`` at each window and k; the smallest wins.

    Returns ``{"best": {"name": ..., "window": ..., ...}, "table": [...], "curve": {rows: ms},
    "sync_ms": ...}``; each table row holds the candidate's rounds, call cost, k, executed
    rounds and ``expected_ms``. ``sync_ms`` is measured (``sync_latency_ms``) unless given
    or unused (k = 1 only). With ``apply=True`` the winner is set on ``policy``; otherwise
    its sampler is left as it was.
    """
    ks = sorted({int(k) for k in rounds_per_sync})
    steps = len(policy.scheduler.timesteps)
    if windows is None:
        windows = sorted({w for w in (2, 4, 8, 16, 32, 64, steps) if w <= steps})
    _, shape = policy.bound_denoiser(obs)
    batch = shape[0]
    curve = call_latency_curve(policy, obs, [batch] + [batch * int(w) for w in windows], repeats=repeats)
    if sync_ms is None:
        sync_ms = sync_latency_ms(policy.device) if ks != [1] else 0.0
    previous = policy.sampler
    table = [{"name": "sequential", "rounds": float(steps), "call_ms": curve[batch],
              "expected_ms": steps * curve[batch]}]
    try:
        for window in windows:
            # the budget is the window measured, so the window recorded is the window that runs
            policy.set_sampler(name, window=int(window), tolerance=tolerance, max_rows=int(window))
            rounds = policy.predict_action(obs, generator=torch.Generator().manual_seed(0)).stats.sampling.rounds
            cost = curve[batch * int(window)]
            for k in ks:
                expected, executed = expected_chunk_ms(rounds, cost, sync_ms, k)
                table.append({"name": name, "window": int(window), "max_rows": int(window), "tolerance": tolerance,
                              "rounds_per_sync": k,
                              "rounds": float(rounds), "executed_rounds": executed, "call_ms": cost,
                              "expected_ms": expected})
    finally:
        policy.sampler = previous
    best = min(table, key=lambda row: row["expected_ms"])
    choice = {k: best[k] for k in ("name", "window", "max_rows", "tolerance", "rounds_per_sync") if k in best}
    if apply:
        policy.set_sampler(choice["name"], **{k: v for k, v in choice.items() if k != "name"})
    return {"best": choice, "table": table, "curve": curve, "sync_ms": sync_ms}
