"""``parapolicy-rollout``: the Hydra entry point, and only that.

It composes the cfg, runs :func:`parapolicy.eval.run.run_rollout` with a progress bar,
prints the summary table and maps the outcome to an exit code. A ParapolicyError prints one
line (``HYDRA_FULL_ERROR=1`` shows the traceback) and leaves no run directory behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

EXIT_OK = 0
EXIT_BAD_INPUT = 2  # a ParapolicyError: bad checkpoint, setting, sampler or env; nothing was written
EXIT_EPISODES_FAILED = 3  # the run finished but some episodes' envs raised (see results.json "errors")
EXIT_INTERRUPTED = 130  # Ctrl-C: results.json holds the episodes that finished

log = logging.getLogger("parapolicy.rollout")
_exit_codes: list[int] = []


def _remove_run_dir(path: str) -> None:
    """Remove what Hydra put in the output dir before the job (``.hydra/``, the log), then the dir
    and its parents up to the working dir if that leaves them empty."""
    shutil.rmtree(os.path.join(path, ".hydra"), ignore_errors=True)
    if os.path.exists(os.path.join(path, "rollout.log")):
        os.unlink(os.path.join(path, "rollout.log"))
    path, stop = os.path.abspath(path), os.path.abspath(os.getcwd())
    while path.startswith(stop + os.sep):
        try:
            os.rmdir(path)
        except OSError:
            break
        path = os.path.dirname(path)


def _outcome(results: dict) -> int:
    if results.get("interrupted"):
        return EXIT_INTERRUPTED
    return EXIT_EPISODES_FAILED if results.get("n_failed") else EXIT_OK


def run_job(cfg, output_dir: str) -> int:
    """One Hydra job: run, report, and return its exit code."""
    from parapolicy.errors import ParapolicyError
    from parapolicy.eval.progress import StepProgress
    from parapolicy.eval.report import summary_table
    from parapolicy.eval.run import run_rollout

    passes = 2 if cfg.get("compare_sampler") else 1
    progress = None
    if cfg.get("progress") and isinstance(cfg.get("n_episodes"), int) and cfg.n_episodes > 0:
        progress = StepProgress(passes * cfg.n_episodes, lambda: cfg.env.max_episode_steps)  # env=auto: set later
    try:
        results = run_rollout(cfg, output_dir, on_chunk=progress)
    except (ParapolicyError, KeyboardInterrupt) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _remove_run_dir(output_dir)
        if isinstance(exc, KeyboardInterrupt):
            print("parapolicy-rollout: interrupted before the first episode; nothing written", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(f"parapolicy-rollout: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if progress is not None:
            progress.close()
    log.info(summary_table(results))
    log.info("results: %s", os.path.join(output_dir, "results.json"))
    return _outcome(results)


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig

    from parapolicy.eval.build import CONFIG_DIR

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="rollout")
    def _app(cfg):
        _exit_codes.append(run_job(cfg, HydraConfig.get().runtime.output_dir))

    _app()
    sys.exit(max(_exit_codes, default=EXIT_OK))


if __name__ == "__main__":
    main()
