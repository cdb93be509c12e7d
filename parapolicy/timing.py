"""Wall time of one device call, measured the one way every latency model here relies on.

A GPU runs calls asynchronously, so a timer must synchronise before starting and before
stopping; the first call pays for warm-up (allocation, a graph capture), so it is run and
not counted. Used by ``sampler=auto``'s cost curve and by the window autotuner.
"""

from __future__ import annotations

import time

import numpy as np
import torch


def synchronize(device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(call, device):
    """``(call(), milliseconds it took)``, the device synchronised before and after."""
    synchronize(device)
    started = time.perf_counter()
    out = call()
    synchronize(device)
    return out, (time.perf_counter() - started) * 1000.0


def median_call_ms(call, device, repeats: int, long_ms: float | None = None) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` timed calls, after one untimed warm-up.

    With ``long_ms``, a timed call that took at least that long ends the timing: its noise is
    small beside it, and each repeat would cost as much again (a large batch's call on a CPU
    takes seconds). The warm-up does not decide it: a first call may pay for a compile."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for r in range(repeats + 1):
        _, ms = timed_call(call, device)
        if r > 0:
            times.append(ms)
            if long_ms is not None and ms >= long_ms:
                break
    return float(np.median(times))
