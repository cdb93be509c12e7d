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


def median_call_ms(call, device, repeats: int, long_ms: float | None = None) -> float:
    """Median milliseconds of ``call()`` over ``repeats`` timed calls, after one untimed warm-up.

    With ``long_ms``, a call whose warm-up took at least that long is timed once: its timing
    noise is small beside it, and each repeat would cost as much again (a large batch's call on
    a CPU takes seconds)."""
    times = []
    for r in range(repeats + 1):
        synchronize(device)
        started = time.perf_counter()
        call()
        synchronize(device)
        elapsed = (time.perf_counter() - started) * 1000.0
        if r > 0:
            times.append(elapsed)
        elif long_ms is not None and elapsed >= long_ms:
            repeats = 1
        if len(times) >= repeats:
            break
    return float(np.median(times))
