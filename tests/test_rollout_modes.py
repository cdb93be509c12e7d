"""Every rollout mode tells the truth the same way: the counts, scores and chunk numbers in
results.json, eval_info.json, the wandb metrics and the console table agree, and a run that
completed no episode never reports a score."""

import json
import re

import pytest
from tests.support.helpers import ProgressRecorder
from hydra import compose, initialize_config_dir

import parapolicy.logging
from parapolicy.eval.build import CONFIG_DIR
from parapolicy.eval.multirun import summary_of_runs
from parapolicy.eval.report import COLUMNS, format_table, run_row, summary_table
from parapolicy.eval.run import run_rollout
from parapolicy.policy import Policy

MODES = {
    "plain": [],
    "paired": ["sampler=picard", "sampler.window=4", "+compare_sampler.name=sequential"],
    "realtime": ["controller.mode=rtc", "controller.delay_ticks=4", "controller.guidance=hard"],
}
RUN_KEYS = ("mean_score", "success_rate", "n_episodes", "n_completed", "n_failed", "n_not_finished", "n_chunks",
            "rounds_per_chunk", "rows_per_round", "max_rows_per_round", "nfe_per_chunk")


class FakeWandb:
    """Stands in for ``RunLogger``: keeps what a run logs to wandb."""

    runs = []

    def __init__(self, **kwargs):
        self.logged, self.summaries = {}, {}
        FakeWandb.runs.append(self)

    def log(self, values, step=None):
        self.logged.update(values)

    def summary(self, values):
        self.summaries.update(values)

    def table(self, *args):
        pass

    histogram = video = table

    def finish(self):
        pass


def rollout(toy_ckpt, path, overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=offline",
                                            "env.max_episode_steps=24", "progress=false", *overrides])
    FakeWandb.runs.clear()
    progress = ProgressRecorder()
    results = run_rollout(cfg, str(path), progress=progress)
    (wandb,) = FakeWandb.runs
    rollout.passes = progress.passes
    return results, json.load(open(path / "results.json")), json.load(open(path / "eval_info.json")), wandb


@pytest.fixture(scope="module")
def runs(toy_ckpt, tmp_path_factory):
    """Each mode once, with wandb captured."""
    patch = pytest.MonkeyPatch()
    patch.setattr(parapolicy.logging, "RunLogger", FakeWandb)
    try:
        done = {}
        for mode, overrides in MODES.items():
            done[mode] = (*rollout(toy_ckpt, tmp_path_factory.mktemp(mode), overrides), rollout.passes)
        yield done
    finally:
        patch.undo()


def _numbers(table: str, label: str) -> list:
    (line,) = [line for line in table.splitlines() if line.startswith(label + " ")]
    return line[len(label):].split()


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_writes_the_true_counts_everywhere(runs, mode):
    results, written, info, wandb, _ = runs[mode]
    assert {k: written[k] for k in RUN_KEYS} == {k: results[k] for k in RUN_KEYS}
    assert (written["n_episodes"], written["n_completed"], written["n_failed"], written["n_not_finished"]) == (2, 2, 0, 0)
    assert sorted(written["rewards_by_seed"]) == ["100000", "100001"] and written["n_chunks"] > 0
    assert written["nfe_per_chunk"] == pytest.approx(written["rounds_per_chunk"] * written["rows_per_round"])
    assert info["overall"]["n_episodes"] == 2 and len(info["per_task"][0]["metrics"]["max_rewards"]) == 2
    assert info["overall"]["avg_max_reward"] == pytest.approx(written["mean_score"])
    assert info["latency"]["rows_per_round"] == written["rows_per_round"]
    metrics = written["metrics"]
    assert wandb.logged == wandb.summaries == metrics  # what wandb got is what results.json says it got
    for key in RUN_KEYS:
        assert metrics[f"rollout/{key}"] == written[key], key
    table = summary_table(written)
    assert table.startswith("parapolicy/ToyReach-v0: 2 of 2 episodes completed, 0 failed, 0 not finished")
    label = {"plain": "auto", "paired": "a picard", "realtime": "auto"}[mode]  # auto: the default
    cells = _numbers(table, label)
    assert cells[0] == "2/2" and "-" not in cells[:8]  # episodes, score, success, p50, p95, rounds, rows, NFE
    assert float(cells[5]) == pytest.approx(written["rounds_per_chunk"], abs=0.05)
    assert float(cells[6]) == pytest.approx(written["rows_per_round"], abs=0.05)


def test_the_realtime_mode_reports_its_delay_and_jumps_on_the_console_and_in_wandb(runs):
    _, written, _, _, _ = runs["realtime"]
    realtime = written["realtime"]
    assert (realtime["mode"], realtime["delay_ticks"], realtime["guidance"]) == ("rtc", 4, "hard")
    assert realtime["n_switches"] > 0 and realtime["max_jump"] >= realtime["mean_jump"] > 0
    assert written["metrics"]["rollout/realtime/mean_jump"] == realtime["mean_jump"]
    assert written["latency_step_ms"] is None  # the clock is simulated: no step wait was measured
    table = summary_table(written)
    assert "real time (simulated clock): mode rtc (hard guidance), delay 4 ticks" in table
    assert f"mean {realtime['mean_jump']:.3f}, max {realtime['max_jump']:.3f} over {realtime['n_switches']} switches" \
        in table


def test_the_paired_mode_reports_both_sides_with_units(runs):
    _, written, _, _, _ = runs["paired"]
    paired = written["paired"]
    assert (paired["b"]["n_episodes"], paired["b"]["n_completed"]) == (2, 2)
    assert paired["sampler_b"] == {"name": "sequential"} and paired["inference_b"] == written["inference"]
    assert written["metrics"]["rollout/b/n_completed"] == 2
    table = summary_table(written)
    b = _numbers(table, "b sequential")
    assert b[0] == "2/2" and b[2] != "-"  # the compare side's success is measured, not "-"
    assert "max action deviation b vs a: " in table and "env action units" in table


PASSES = {"plain": ["auto"], "paired": ["pass 1/3 picard", "pass 2/3 sequential", "pass 3/3 deviation check"],
          "realtime": ["rtc d=4 auto"]}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_pass_of_every_mode_shows_progress(runs, mode):
    passes = runs[mode][4]
    assert [p["desc"] for p in passes] == PASSES[mode]
    for p in passes:
        assert p["calls"] > 0 and (p["kind"] == "chunks" or p["finished"] == 2), p  # every episode's end seen


@pytest.mark.parametrize("mode", list(MODES))
def test_a_run_that_completed_no_episode_reports_no_score(toy_ckpt, tmp_path, monkeypatch, mode):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parapolicy.logging, "RunLogger", FakeWandb)
    monkeypatch.setattr(Policy, "predict_action", interrupted)
    _, written, info, wandb = rollout(toy_ckpt, tmp_path, MODES[mode])
    assert written["interrupted"] and (written["n_episodes"], written["n_completed"], written["n_not_finished"]) == (
        2, 0, 2)
    for key in ("mean_score", "success_rate", "latency_chunk_ms", "rounds_per_chunk", "rows_per_round",
                "nfe_per_chunk"):
        assert written[key] is None, key
    assert written["rewards_by_seed"] == {} and info["overall"]["n_episodes"] == 0
    assert info["overall"]["avg_max_reward"] is None  # NaN over no episodes is written as null, never a score
    assert "rollout/mean_score" not in wandb.logged and wandb.logged["rollout/n_completed"] == 0
    cells = _numbers(summary_table(written), "a picard" if mode == "paired" else "auto")
    assert cells[:3] == ["0/2", "-", "-"]


def test_a_multirun_summary_lists_every_job_and_the_ones_without_results(runs, tmp_path):
    for num, mode in enumerate(["plain", "paired", None]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
        if mode:
            (job / "results.json").write_text(json.dumps(runs[mode][1]))
    text = summary_of_runs(str(tmp_path), total=4)
    assert text.splitlines()[0] == "2 of 4 runs wrote results"
    assert _numbers(text, "run 1 auto")[0] == "2/2" and _numbers(text, "run 2 b sequential")[0] == "2/2"
    assert "run 3: no results.json" in text and "run 4: no results.json" in text


def test_tables_align_whatever_the_labels_and_settings():
    short = run_row("sequential", {"n_completed": 2, "n_episodes": 2, "mean_score": 0.5}, {"name": "sequential"}, None)
    long = run_row("run 12 b newton_prior", {"n_completed": 10, "n_episodes": 50, "mean_score": 0.91234,
                                             "success_rate": 1.0, "latency_chunk_ms": {"p50": 12345.6, "p95": 1.0},
                                             "rounds_per_chunk": 100.0, "rows_per_round": 1.0, "nfe_per_chunk": 8400.5},
                   {"name": "picard", "window": 100, "tolerance": 0.1}, {"scheduler": "ddpm", "num_inference_steps": 100})
    lines = format_table([short, long]).splitlines()
    header = lines[0]
    for head, _, _ in COLUMNS:  # every value ends where its header ends
        end = header.index(head) + len(head)
        for line in lines[2:]:
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), (head, line)
    assert re.search(r"window=100 tolerance=0.1 ddpm-100$", lines[3])
