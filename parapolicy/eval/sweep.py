"""wandb sweep files run locally and offline, with wandb's own open-source sweep engine.

``sweeps.next_run`` (the engine behind the wandb server's grid/random/bayes methods) proposes
each run from the sweep file and the finished runs; the run's command line is built from the
file's ``command`` section as the wandb agent builds it, and its metric is read back from the
run's results.json (``metrics``, the names logged to wandb).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from parapolicy.errors import RolloutConfigError


def load_sweep(path: str) -> dict:
    """A sweep file, validated against wandb's sweep schema."""
    import jsonschema
    from sweeps import SweepConfig

    with open(path) as f:
        config = yaml.safe_load(f)
    try:
        SweepConfig(config)
    except jsonschema.ValidationError as exc:
        raise RolloutConfigError(f"sweep file {path} does not match wandb's sweep schema: {exc.message}") from None
    return config


def run_overrides(config: dict, run_config: dict, extra=()) -> list[str]:
    """The CLI overrides of one proposed run: the file's ``command`` with ``${args_no_hyphens}``
    expanded, then ``extra`` (which replaces overrides of the same key)."""
    args = []
    for item in config.get("command") or ["${program}", "${args_no_hyphens}"]:
        if item in ("${program}", "${env}", "${interpreter}"):
            continue
        if item == "${args_no_hyphens}":
            args += [f"{key}={value['value']}" for key, value in run_config.items()]
        elif item.startswith("${"):
            raise RolloutConfigError(f"sweep command macro {item} is not supported locally "
                                     f"(expected ${{program}} and ${{args_no_hyphens}})")
        else:
            args.append(item)
    merged = {}
    for arg in [*args, *extra]:
        merged[arg.split("=", 1)[0]] = arg
    return list(merged.values())


def planned_runs(config: dict, max_runs: int | None = None) -> int | None:
    """How many runs a sweep file asks for: a grid's size (every combination of ``values``), capped
    by ``max_runs``; random and bayes sweeps run until stopped, so only ``max_runs`` bounds them."""
    if config.get("method") != "grid":
        return max_runs
    size = 1
    for spec in (config.get("parameters") or {}).values():
        size *= len(spec["values"]) if "values" in spec else 1
    return size if max_runs is None else min(size, max_runs)


def run_label(k: int, total: int | None) -> str:
    return f"sweep run {k} of {total}" if total else f"sweep run {k}"


def cli_runner(sweep_dir: str, total: int | None = None):
    """Runs each proposed run as ``parapolicy-rollout`` in ``sweep_dir/<n>``, labelled ``sweep run k
    of N`` on its progress bars and summary; returns its metrics."""
    from parapolicy.eval.multirun import LABEL_ENV

    count = {"n": 0}

    def run(overrides):
        out = os.path.join(sweep_dir, str(count["n"]))
        count["n"] += 1
        env = dict(os.environ, **{LABEL_ENV: run_label(count["n"], total)})
        proc = subprocess.run([sys.executable, "-m", "parapolicy.cli.rollout", *overrides, f"hydra.run.dir={out}"],
                              env=env)
        path = os.path.join(out, "results.json")
        if not os.path.exists(path):
            return {}, proc.returncode
        with open(path) as f:
            return json.load(f)["metrics"], proc.returncode

    return run


def run_sweep(config: dict, runner, max_runs: int | None = None, extra=(), on_run=None) -> list:
    """Ask the engine for runs until it has none left (or ``max_runs``); returns the SweepRuns.

    ``on_run(k, total, overrides)`` is called before run k (1-based) of ``planned_runs`` starts.
    """
    from sweeps import RunState, next_run

    runs, total = [], planned_runs(config, max_runs)
    while max_runs is None or len(runs) < max_runs:
        proposed = next_run(config, runs, validate=True)
        if proposed is None:
            break
        overrides = run_overrides(config, proposed.config, extra)
        if on_run is not None:
            on_run(len(runs) + 1, total, overrides)
        metrics, code = runner(overrides)
        proposed.name = f"run-{len(runs)}"
        proposed.summary_metrics = metrics
        proposed.exitcode = code
        proposed.state = RunState.finished if code == 0 else RunState.failed
        runs.append(proposed)
    return runs


def best_run(config: dict, runs):
    """The finished run with the best value of the sweep's metric (None if none has it)."""
    metric = config.get("metric") or {}
    name, sign = metric.get("name"), (-1 if metric.get("goal") == "maximize" else 1)
    scored = [r for r in runs if name in (r.summary_metrics or {})]
    return min(scored, key=lambda r: sign * r.summary_metrics[name]) if scored else None
