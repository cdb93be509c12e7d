"""wandb sweep files, without a wandb server: wandb's sweep engine validates them and proposes the
runs; every proposed run composes, and runs execute and report the sweep metric."""

import os

import pytest
import yaml
from hydra import compose, initialize_config_dir

from parapolicy.errors import RolloutConfigError
from parapolicy.eval.build import CONFIG_DIR
from parapolicy.eval.report import SCORE_DROP_PENALTY_MS, latency_at_equal_score
from parapolicy.eval.run import run_rollout
from parapolicy.eval.sweep import best_run, load_sweep, planned_runs, run_overrides, run_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_DIR = os.path.join(ROOT, "configs", "sweeps")
SWEEPS = sorted(os.path.join(SWEEP_DIR, f) for f in os.listdir(SWEEP_DIR))


@pytest.mark.parametrize("path", SWEEPS, ids=os.path.basename)
def test_every_proposed_run_of_every_sweep_file_composes(path):
    config = load_sweep(path)
    proposed = []
    run_sweep(config, lambda overrides: proposed.append(overrides) or ({}, 0))
    grid = 1
    for spec in config["parameters"].values():
        grid *= len(spec.get("values", [None]))
    assert len(proposed) == grid > 1
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        for overrides in proposed:
            cfg = compose("rollout", overrides=overrides)
            assert cfg.compare_sampler.name == "sequential"
            assert config["metric"]["name"] == "rollout/latency_at_equal_score_ms"


@pytest.mark.parametrize("path, runs", [("picard_window.yaml", 9), ("sampler_compare.yaml", 3)])
def test_a_sweep_announces_run_k_of_its_planned_total(path, runs):
    config = load_sweep(os.path.join(SWEEP_DIR, path))
    seen = []
    run_sweep(config, lambda overrides: ({}, 0), on_run=lambda k, total, overrides: seen.append((k, total)))
    assert planned_runs(config) == runs and seen == [(k, runs) for k in range(1, runs + 1)]
    seen.clear()
    run_sweep(config, lambda overrides: ({}, 0), max_runs=2, on_run=lambda k, total, overrides: seen.append((k, total)))
    assert seen == [(1, 2), (2, 2)]  # --max-runs limits the sweep and its total
    assert planned_runs(dict(config, method="random")) is None  # random/bayes: unbounded without a limit


def test_a_file_outside_the_sweep_schema_is_one_clear_error(tmp_path):
    bad = dict(yaml.safe_load(open(SWEEPS[0])), method="gridd")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(RolloutConfigError, match="does not match wandb's sweep schema: 'gridd' is not one of"):
        load_sweep(str(tmp_path / "bad.yaml"))


def test_run_overrides_follow_the_command_and_extras_replace_the_same_key():
    config = {"command": ["${program}", "${args_no_hyphens}", "n_episodes=20", "logger=online"]}
    got = run_overrides(config, {"sampler": {"value": "picard"}, "sampler.window": {"value": 4}},
                        extra=["logger=offline", "env=toy"])
    assert got == ["sampler=picard", "sampler.window=4", "n_episodes=20", "logger=offline", "env=toy"]


def test_a_proposed_sampler_run_executes_and_reports_latency_at_equal_score(toy_ckpt, tmp_path):
    config = load_sweep(os.path.join(SWEEP_DIR, "picard_window.yaml"))
    done = []

    def in_process(overrides):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose("rollout", overrides=overrides)
        done.append(run_rollout(cfg, str(tmp_path)))
        return done[-1]["metrics"], 0

    (run,) = run_sweep(config, in_process, max_runs=1,
                       extra=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled"])
    results = done[0]
    assert results["sampler"] == {"name": "picard", "window": 4, "tolerance": 0.05, "max_rows": 64}
    assert results["paired"]["sampler_b"] == {"name": "sequential"}
    assert run.summary_metrics["rollout/latency_at_equal_score_ms"] == latency_at_equal_score(results)
    assert run.state == "finished"


def test_best_run_follows_the_metric_goal():
    from sweeps import SweepRun

    runs = [SweepRun(name=n, summaryMetrics={"m": v}) for n, v in (("a", 3.0), ("b", 1.0), ("c", 2.0))]
    assert best_run({"metric": {"name": "m", "goal": "minimize"}}, runs).name == "b"
    assert best_run({"metric": {"name": "m", "goal": "maximize"}}, runs).name == "a"
    assert best_run({"metric": {"name": "other", "goal": "maximize"}}, runs) is None


def test_latency_at_equal_score_penalises_only_a_significant_score_drop():
    def results(ci):
        return {"latency_chunk_ms": {"p50": 12.0}, "paired": {"score_difference_b_minus_a": {"ci95": ci}}}

    assert latency_at_equal_score(results([-0.1, 0.2])) == 12.0  # sampler a within the reference's CI
    assert latency_at_equal_score(results([-0.3, -0.1])) == 12.0  # a scores better than the reference
    assert latency_at_equal_score(results([0.05, 0.3])) == 12.0 + SCORE_DROP_PENALTY_MS
