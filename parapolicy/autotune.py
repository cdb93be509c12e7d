"""Choosing Picard's window for this device by measuring, not guessing.

A wide window wins where a batched network call costs about as much as a single one (a
GPU below saturation); on a compute-bound CPU the sequential loop usually wins. This
module times whole ``predict_action`` calls for a few candidate windows (and the
sequential loop) on the caller's own observation and keeps the fastest.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def autotune_window(policy, obs: dict, windows=None, tolerance: float = 0.1, repeats: int = 3,
                    apply: bool = True) -> dict:
    """Median per-chunk latency of sequential and of Picard at each window; the fastest wins.

    Returns ``{"best": {"name": ..., "window": ...}, "table": [...]}`` and, with
    ``apply=True``, sets the winner on ``policy``. The policy's sampler is restored first.
    """
    steps = len(policy.scheduler.timesteps)
    if windows is None:
        windows = sorted({w for w in (4, 8, 16, 32, steps) if w <= steps})
    previous = policy.sampler
    candidates = [("sequential", {})] + [("picard", {"window": int(w), "tolerance": tolerance}) for w in windows]
    table = []
    try:
        for name, settings in candidates:
            policy.set_sampler(name, **settings)
            times, rounds = [], []
            for r in range(repeats + 1):
                if policy.device.type == "cuda":
                    torch.cuda.synchronize(policy.device)
                t0 = time.perf_counter()
                out = policy.predict_action(obs, generator=torch.Generator().manual_seed(r))
                if policy.device.type == "cuda":
                    torch.cuda.synchronize(policy.device)
                if r > 0:  # the first call warms up
                    times.append((time.perf_counter() - t0) * 1000.0)
                    rounds.append(out["stats"]["parallel_iters"])
            table.append({"name": name, **settings, "latency_ms_p50": float(np.median(times)),
                          "rounds": float(np.mean(rounds))})
    finally:
        policy.sampler = previous
    best = min(table, key=lambda row: row["latency_ms_p50"])
    choice = {k: best[k] for k in ("name", "window", "tolerance") if k in best}
    if apply:
        policy.set_sampler(choice["name"], **{k: v for k, v in choice.items() if k != "name"})
    return {"best": choice, "table": table}
