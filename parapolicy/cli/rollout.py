"""``parapolicy-rollout``: the Hydra entry point, and only that.

It checks the command line (``parapolicy.eval.config_check``), runs
:func:`parapolicy.eval.run.run_rollout` with a progress bar per pass, prints the summary table
and maps the outcome to an exit code. A ParapolicyError prints one line (``HYDRA_FULL_ERROR=1``
shows the traceback) and leaves no run directory behind.
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


def run_job(cfg, output_dir: str, run_label: str = "") -> int:
    """One Hydra job: run, report, and return its exit code. ``run_label`` ("run 2 of 6") names
    the job in a multirun, on its progress bars and summary."""
    from hydra.core.hydra_config import HydraConfig

    from parapolicy.errors import ParapolicyError
    from parapolicy.eval.progress import Progress
    from parapolicy.eval.report import summary_table
    from parapolicy.eval.run import run_rollout

    if run_label:
        log.info("%s: %s", run_label, " ".join(HydraConfig.get().overrides.task) or "(defaults)")
    # the episode length is read when a pass starts: env=auto sets it from the checkpoint
    progress = Progress(lambda: cfg.env.max_episode_steps, prefix=run_label) if cfg.get("progress") else None
    try:
        results = run_rollout(cfg, output_dir, progress=progress)
    except (ParapolicyError, KeyboardInterrupt) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        _remove_run_dir(output_dir)
        if isinstance(exc, KeyboardInterrupt):
            print("parapolicy-rollout: interrupted before the first episode; nothing written", file=sys.stderr)
            return EXIT_INTERRUPTED
        print(_one_line(exc), file=sys.stderr)
        return EXIT_BAD_INPUT
    log.info(("%s\n" % run_label if run_label else "") + summary_table(results))
    log.info("results: %s", os.path.join(output_dir, "results.json"))
    return _outcome(results)


def _one_line(exc) -> str:
    return f"parapolicy-rollout: error: {' '.join(str(exc).split())}"


def _check_command() -> None:
    """Compose and check every job of this command line before Hydra makes any folder: a mistake
    exits 2 with one line. In a multirun, the number of jobs is passed on to label them."""
    from hydra._internal.utils import get_args_parser

    from parapolicy.errors import ParapolicyError
    from parapolicy.eval.config_check import check_command
    from parapolicy.eval.multirun import TOTAL_ENV

    args, _ = get_args_parser().parse_known_args()  # a read-only look; Hydra parses argv itself
    if any((args.help, args.hydra_help, args.info, args.shell_completion, args.cfg, args.config_path,
            args.config_name, args.config_dir, args.experimental_rerun)):
        return  # Hydra's own modes, or a config tree other than ours
    try:
        jobs = check_command(args.overrides, multirun=args.multirun)
    except ParapolicyError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(_one_line(exc), file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    if args.multirun:
        os.environ[TOTAL_ENV] = str(len(jobs))


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from parapolicy.eval.build import CONFIG_DIR, register_sampler_configs
    from parapolicy.eval.multirun import run_label

    register_sampler_configs()  # samplers registered since import (a user's own) become sampler=<name> too
    _check_command()

    @hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="rollout")
    def _app(cfg):
        hydra_cfg = HydraConfig.get()
        label = run_label(hydra_cfg.job.num if hydra_cfg.mode == RunMode.MULTIRUN else None)
        _exit_codes.append(run_job(cfg, hydra_cfg.runtime.output_dir, label))

    _app()
    sys.exit(max(_exit_codes, default=EXIT_OK))


if __name__ == "__main__":
    main()
