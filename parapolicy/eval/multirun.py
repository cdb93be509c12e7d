"""Runs of a multirun or sweep: which one is running ("run 2 of 6") and one table at the end.

The CLI knows the number of runs before the first starts (it composes every job first) and
passes it on in the environment, so jobs in launcher processes label themselves too; a sweep
runner labels its runs the same way. ``MultirunSummary`` is a Hydra callback: after the last
job of a multirun (any launcher) it reads every job's results.json and prints one table.
"""

from __future__ import annotations

import json
import os

from hydra.experimental.callback import Callback

TOTAL_ENV = "PARAPOLICY_MULTIRUN_TOTAL"  # number of jobs of this multirun, set by the CLI
LABEL_ENV = "PARAPOLICY_RUN_LABEL"  # a sweep runner's label for the rollout it starts ("sweep run 2 of 9")


def run_label(job_num: int | None = None) -> str:
    """This run's label: a sweep's, or ``run k of N`` for multirun job ``job_num`` (0-based)."""
    if os.environ.get(LABEL_ENV):
        return os.environ[LABEL_ENV]
    if job_num is None:
        return ""
    total = os.environ.get(TOTAL_ENV)
    return f"run {job_num + 1} of {total}" if total else f"run {job_num + 1}"


def job_results(sweep_dir: str) -> dict:
    """{job number: results.json dict or None} for every job folder Hydra left under ``sweep_dir``."""
    from omegaconf import OmegaConf

    found = {}
    for folder, dirs, files in os.walk(sweep_dir):
        if "hydra.yaml" not in files or os.path.basename(folder) != ".hydra":
            continue
        job_dir = os.path.dirname(folder)
        num = int(OmegaConf.load(os.path.join(folder, "hydra.yaml")).hydra.job.num)
        path = os.path.join(job_dir, "results.json")
        found[num] = json.load(open(path)) if os.path.exists(path) else None
    return found


def summary_of_runs(sweep_dir: str, total: int | None = None) -> str:
    """The table of every job's results; jobs that wrote none (bad input, a crash) are listed as such."""
    from parapolicy.eval.report import runs_table

    found = job_results(sweep_dir)
    n = max(total or 0, max(found, default=-1) + 1)
    return runs_table([(f"run {k + 1}", found.get(k)) for k in range(n)])


class MultirunSummary(Callback):
    """Prints the number of runs before a multirun and one summary table after it."""

    def on_multirun_start(self, config, **kwargs) -> None:
        total = os.environ.get(TOTAL_ENV)
        if total:
            print(f"multirun: {total} run{'s' if total != '1' else ''} in {config.hydra.sweep.dir}", flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        total = os.environ.get(TOTAL_ENV)
        text = summary_of_runs(str(config.hydra.sweep.dir), int(total) if total else None)
        print(f"multirun summary ({config.hydra.sweep.dir}):\n{text}", flush=True)
        with open(os.path.join(str(config.hydra.sweep.dir), "summary.log"), "w") as f:
            f.write(text + "\n")
