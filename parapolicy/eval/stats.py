"""The one place evaluation code reads a ``predict_action`` stats dict.

Reading them in one place keeps every report, table and results.json field on the sampler's
``SampleStats`` names (``rounds``, ``nfe``, ``fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChunkStats:
    latency_ms: float
    rounds: int
    nfe: int
    fallback: str | None


def chunk_stats(stats: dict) -> ChunkStats:
    """Latency, sequential depth, network evaluations and fallback reason of one chunk."""
    rounds = stats.get("rounds", 0)
    fallback = stats.get("fallback")
    return ChunkStats(latency_ms=float(stats["latency_ms"]), rounds=int(rounds or 0), nfe=int(stats.get("nfe") or 0),
                      fallback=None if fallback in (None, False) else str(fallback))
