"""Run a wandb sweep file locally and offline with wandb's sweep engine (the ``sweeps`` package).

    python scripts/sweep_local.py configs/sweeps/picard_window.yaml n_episodes=10 logger=offline

Extra ``KEY=VALUE`` arguments are appended to every run (replacing the file's value for the same
key). Each run is a ``parapolicy-rollout`` in ``--dir/<n>``, announced as ``sweep run k of N``;
``--max-runs`` stops early. At the end one table shows every run, then the sweep metric.
"""

import argparse
import json
import os
import time

from parapolicy.eval.report import runs_table
from parapolicy.eval.sweep import best_run, cli_runner, load_sweep, planned_runs, run_label, run_sweep


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep_file")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE added to every run")
    p.add_argument("--max-runs", type=int, default=None, help="stop after this many runs (default: the whole grid)")
    p.add_argument("--dir", default=os.path.join("multirun", "sweep", time.strftime("%Y-%m-%d_%H-%M-%S")))
    args = p.parse_intermixed_args(argv)
    config = load_sweep(args.sweep_file)
    total = planned_runs(config, args.max_runs)
    count = f"{total} run{'s' if total != 1 else ''}" if total else "unbounded runs (limit them with --max-runs)"
    print(f"sweep {args.sweep_file}: {count} in {args.dir}", flush=True)

    def announce(k, n, overrides):
        print(f"{run_label(k, n)}: {' '.join(overrides)}", flush=True)

    runs = run_sweep(config, cli_runner(args.dir, total), max_runs=args.max_runs, extra=args.overrides,
                     on_run=announce)
    metric = (config.get("metric") or {}).get("name")
    found = []
    for k, run in enumerate(runs):
        path = os.path.join(args.dir, str(k), "results.json")
        found.append((f"run {k + 1}", json.load(open(path)) if os.path.exists(path) else None))
    print(runs_table(found))
    for run in runs:
        params = " ".join(f"{k}={v['value']}" for k, v in run.config.items())
        print(f"{run.name}: {params}  {metric}={run.summary_metrics.get(metric)}  exit {run.exitcode}")
    best = best_run(config, runs)
    if best is not None:
        print(f"best ({(config.get('metric') or {}).get('goal')} {metric}): {best.name}")
    return 0 if runs and all(r.exitcode == 0 for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
