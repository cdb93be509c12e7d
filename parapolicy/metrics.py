"""Latency statistics, episode aggregation, and writing results.json atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile

import numpy as np


def latency_summary(values_ms) -> dict:
    """p50/p95/p99/max/mean of a list of latencies in milliseconds (zeros if empty)."""
    arr = np.asarray(list(values_ms), dtype=np.float64)
    if arr.size == 0:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "count": 0}
    return {
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
        "mean": float(arr.mean()),
        "count": int(arr.size),
    }


def paired_difference(a, b, z=1.96) -> dict:
    """Mean of b - a over paired episodes with a normal-approximation 95% CI (None without pairs)."""
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    n = diff.size
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(diff.mean())
    half = float(z * diff.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": int(n)}


def score_ci(scores, z: float = 1.96) -> tuple[float, float]:
    """Mean and normal-approximation 95% half-width of per-seed scores (half-width 0 for one seed)."""
    x = np.asarray(scores, dtype=np.float64)
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0


def success_ci(successes, z: float = 1.96) -> tuple[float, tuple[float, float]]:
    """Success rate and its Wilson 95% interval (low, high): sound at rates of 0 and 1, where the
    normal approximation collapses to a point."""
    n, p = len(successes), float(np.mean(successes))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, (max(0.0, centre - half), min(1.0, centre + half))  # rounding must not leave [0, 1]


def _jsonable(value):
    """Plain JSON types; NaN and inf (Python or numpy) become None, numpy arrays lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomic(path: str, payload: dict) -> str:
    """Write ``payload`` so readers never see half a file: encode first (a payload that does not
    encode leaves nothing behind), write a temp file in the same folder, fsync, rename, fsync the
    folder. The file is created 0644 and non-finite numbers are written as null."""
    text = json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".json", dir=folder)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path
