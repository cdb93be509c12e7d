"""A stored cost curve (``scripts/bench_network_call.py``'s json) as a model of one call's time.

Used where the device is not present: ``scripts/bench_latency.py``'s modelled column prices
each chunk's rounds at their rows on a curve measured elsewhere (a GPU's), labelled as modelled.
"""

from __future__ import annotations

import json

from parapolicy.samplers.auto import call_cost, monotone


def network_cost(path: str, mode: str, network: str):
    """``(rows -> ms, the network whose curve it is)``: ``network``'s own curve in the stored file, else
    the 65.8M upstream-size UNet's."""
    cost, _, _ = modelled_cost(path, mode, network)
    if cost is None:
        network = "upstream_size_unet"
        cost, _, _ = modelled_cost(path, mode, network)
    return cost, network


def modelled_cost(path: str, mode: str = "cuda_graph", network: str = "upstream_size_unet"):
    """``(rows -> ms, device, rows measured)`` of one call from a stored curve: linear between its
    points, held non-decreasing as ``auto`` holds its own (a point timed below a smaller one is
    noise, and extended along a falling segment it would model a negative time); ``(None, device,
    [])`` when the file has no curve for this mode and network. Curves without a network name are
    the 65.8M upstream-size UNet's."""
    with open(path) as f:
        stored = json.load(f)
    curve = monotone({r["rows"]: r["median_ms"] for r in stored["rows"]
                      if r["mode"] == mode and r.get("network", "upstream_size_unet") == network})
    if not curve:
        return None, stored["device"], []
    return (lambda rows: call_cost(curve, rows)), stored["device"], sorted(curve)
