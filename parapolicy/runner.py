"""Moved to :mod:`parapolicy.eval.episodes`; kept so existing imports keep working."""

from parapolicy.eval.episodes import EpisodeResult, RunResult, run_batch  # noqa: F401
