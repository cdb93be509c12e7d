"""Evaluation by role: ``episodes`` (seeded batches, RunResult), ``compare`` (paired samplers),
``video`` (a frame-recording wrapper), ``report`` (metrics, eval_info.json, the summary table),
``build`` (checkpoint and env factory from a cfg) and ``run`` (one rollout, writes results.json)."""

from parapolicy.eval.build import ASSETS_DIR, CONFIG_DIR, make_env_factory
from parapolicy.eval.episodes import EpisodeResult, RunResult, run_batch, run_episodes
from parapolicy.eval.run import run_rollout

__all__ = ["ASSETS_DIR", "CONFIG_DIR", "EpisodeResult", "RunResult", "make_env_factory", "run_batch", "run_episodes",
           "run_rollout"]
