"""Evaluation by role: ``episodes`` (seeded batches, RunResult, reporting chunks through
``parapolicy.chunk_log``), ``realtime`` (the simulated clock), ``compare`` (paired samplers),
``video`` (a frame-recording wrapper), ``report`` (metrics, eval_info.json, the summary tables),
``progress`` (a bar per pass), ``build`` (checkpoint and env factory from a cfg),
``config_check`` (a command line checked before anything runs), ``multirun`` and ``sweep``
(runs labelled k of N, one table at the end) and ``run`` (one rollout, writes results.json)."""

from parapolicy.eval.build import ASSETS_DIR, CONFIG_DIR, make_env_factory
from parapolicy.eval.episodes import EpisodeResult, RunResult, run_batch, run_episodes
from parapolicy.eval.run import run_rollout

__all__ = ["ASSETS_DIR", "CONFIG_DIR", "EpisodeResult", "RunResult", "make_env_factory", "run_batch", "run_episodes",
           "run_rollout"]
