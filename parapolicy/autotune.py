"""Choosing Picard's window for this device from its measured batch-latency curve.

A wide window wins where a batched network call costs about as much as a single one (a
GPU below saturation, especially with CUDA graphs); on a compute-bound CPU small windows
(or the sequential loop) win. The cost of ONE network call at each row count is measured once per
(device, network, acceleration, observation shape) and cached; each candidate window's
round count comes from one untimed run on the caller's observation. Expected latency =
rounds x call cost at (window x batch) rows; the smallest wins.
"""

from __future__ import annotations

import time
import weakref

import numpy as np
import torch

_CURVES = weakref.WeakKeyDictionary()  # network -> {(device, acceleration, x shape): {rows: median ms}}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        times = []
        with torch.no_grad():
            for r in range(repeats + 1):
                _synchronize(policy.device)
                started = time.perf_counter()
                denoise(x, t)
                _synchronize(policy.device)
                if r > 0:  # the first call warms up (and captures a graph)
                    times.append((time.perf_counter() - started) * 1000.0)
        curve[count] = float(np.median(times))
    return {int(r): curve[int(r)] for r in rows}


def autotune_window(policy, obs: dict, windows=None, tolerance: float = 0.1, repeats: int = 5,
                    apply: bool = True, name: str = "picard") -> dict:
    """Expected per-chunk latency of sequential and of ``name`` at each window; the smallest wins.

    Returns ``{"best": {"name": ..., "window": ...}, "table": [...], "curve": {rows: ms}}``;
    each table row holds the candidate's rounds, call cost and ``expected_ms``. With
    ``apply=True`` the winner is set on ``policy``; otherwise its sampler is left as it was.
    """
    steps = len(policy.scheduler.timesteps)
    if windows is None:
        windows = sorted({w for w in (2, 4, 8, 16, 32, 64, steps) if w <= steps})
    _, shape = policy.bound_denoiser(obs)
    batch = shape[0]
    curve = call_latency_curve(policy, obs, [batch] + [batch * int(w) for w in windows], repeats=repeats)
    previous = policy.sampler
    table = [{"name": "sequential", "rounds": float(steps), "call_ms": curve[batch],
              "expected_ms": steps * curve[batch]}]
    try:
        for window in windows:
            policy.set_sampler(name, window=int(window), tolerance=tolerance)
            rounds = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["stats"]["rounds"]
            cost = curve[batch * int(window)]
            table.append({"name": name, "window": int(window), "tolerance": tolerance, "rounds": float(rounds),
                          "call_ms": cost, "expected_ms": rounds * cost})
    finally:
        policy.sampler = previous
    best = min(table, key=lambda row: row["expected_ms"])
    choice = {k: best[k] for k in ("name", "window", "tolerance") if k in best}
    if apply:
        policy.set_sampler(choice["name"], **{k: v for k, v in choice.items() if k != "name"})
    return {"best": choice, "table": table, "curve": curve}
