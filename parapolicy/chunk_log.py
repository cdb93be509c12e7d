"""The chunk log: one record per ``predict_action`` call, one summary for every way of running chunks.

The batched runner, the simulated clock, the paired comparison and the wall-clock Controller
all append to a ``ChunkLog`` and report from it, so results.json, eval_info.json, wandb, the
console table and ``Controller.stats`` read the same names (``SampleStats``: ``rounds``,
``nfe``, rows per round) from one place. A ``ChunkRecord`` is made from the typed
``ChunkStats``; a stats dict (a stand-in policy's) is read by name here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from parapolicy.action_chunk import ChunkStats
from parapolicy.metrics import latency_summary


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk: wall time of the call, sequential depth, network rows per sample, fallback."""

    latency_ms: float
    rounds: int
    nfe: int
    max_rows_per_round: int = 1
    fallback: str | None = None

    @classmethod
    def from_stats(cls, stats: ChunkStats | Mapping) -> "ChunkRecord":
        """A chunk's record from its ``ChunkStats``, or from a stats dict with the same names."""
        if isinstance(stats, ChunkStats):
            sampling = stats.sampling
            return cls._checked(stats.latency_ms, sampling.rounds, sampling.nfe, sampling.max_rows_per_round,
                                sampling.fallback)
        return cls._checked(stats["latency_ms"], stats.get("rounds"), stats.get("nfe"), stats.get("max_rows_per_round"),
                            stats.get("fallback"))

    @classmethod
    def _checked(cls, latency_ms, rounds, nfe, max_rows_per_round, fallback) -> "ChunkRecord":
        return cls(latency_ms=float(latency_ms), rounds=int(rounds or 0), nfe=int(nfe or 0),
                   max_rows_per_round=int(max_rows_per_round or 1),
                   fallback=None if fallback in (None, False) else str(fallback))

    @property
    def rows_per_round(self) -> float:
        return self.nfe / self.rounds if self.rounds else 0.0


@dataclass
class ChunkLog:
    records: list = field(default_factory=list)

    def append(self, record: ChunkRecord | ChunkStats | Mapping) -> ChunkRecord:
        """Add a record (or a ``predict_action`` chunk's stats); returns the record."""
        if not isinstance(record, ChunkRecord):
            record = ChunkRecord.from_stats(record)
        self.records.append(record)
        return record

    def extend(self, other: "ChunkLog") -> None:
        self.records.extend(other.records)

    @classmethod
    def merge(cls, logs) -> "ChunkLog":
        merged = cls()
        for log in logs:
            merged.extend(log)
        return merged

    def __len__(self) -> int:
        return len(self.records)

    @property
    def latency_ms(self) -> list:
        return [r.latency_ms for r in self.records]

    @property
    def rounds(self) -> list:
        return [r.rounds for r in self.records]

    @property
    def nfe(self) -> list:
        return [r.nfe for r in self.records]

    @property
    def fallbacks(self) -> list:
        """One reason per chunk whose parallel sampler fell back to the sequential loop."""
        return [r.fallback for r in self.records if r.fallback is not None]

    def summary(self) -> dict:
        """results.json's chunk fields. No chunks: every measurement is None (never a made-up 0).

        ``rows_per_round`` is all network rows over all rounds (``nfe_per_chunk / rounds_per_chunk``):
        the mean batch one network call evaluated per sample.
        """
        rounds, nfe = sum(self.rounds), sum(self.nfe)
        return {
            "latency_chunk_ms": latency_summary(self.latency_ms) if self.records else None,
            "rounds_per_chunk": float(np.mean(self.rounds)) if self.records else None,
            "rows_per_round": nfe / rounds if rounds else None,
            "max_rows_per_round": max(r.max_rows_per_round for r in self.records) if self.records else None,
            "nfe_per_chunk": float(np.mean(self.nfe)) if self.records else None,
            "n_chunks": len(self.records),
            "n_fallbacks": len(self.fallbacks),
            "fallback_reasons": sorted(set(self.fallbacks)),
        }
