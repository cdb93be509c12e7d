"""The parapolicy-rollout CLI as a user sees it: files, console summary, exit codes, errors, help.

Tests run the CLI as a subprocess and use the library (``parapolicy.eval``) in-process; nothing
imports the CLI module.
"""

import json
import os
import textwrap

import pytest

from parapolicy.errors import CheckpointError
from parapolicy.eval.build import logged_config
from parapolicy.eval.run import prepare, run_rollout
from parapolicy.samplers import SAMPLERS
from tests.support.cli import cli, compose_rollout
from tests.support.helpers import ProgressRecorder

def test_a_multirun_labels_its_jobs_and_writes_results_logs_and_one_summary(toy_ckpt, tmp_path):
    """The one end-to-end CLI test of the default run: every other subprocess test is marked slow."""
    proc = cli(["-m", f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "seed=100000", "logger=offline",
                "sampler=sequential,picard", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "multirun: 2 runs in" in proc.stdout and "run 1 of 2: " in proc.stdout and "run 2 of 2: " in proc.stdout
    for num, name in enumerate(["sequential", "picard"]):
        run = tmp_path / "sweep" / str(num)
        results = json.load(open(run / "results.json"))
        assert sorted(results["rewards_by_seed"]) == ["100000", "100001"]
        assert (results["n_episodes"], results["n_completed"], results["n_failed"]) == (2, 2, 0)
        assert results["sampler"] == SAMPLERS[name]().config()
        assert results["nfe_per_chunk"] >= results["rounds_per_chunk"] > 0 and results["n_fallbacks"] == 0
        for key in ("latency_chunk_ms", "latency_step_ms"):
            assert set(results[key]) >= {"p50", "p95", "p99", "max"} and results[key]["p99"] >= results[key]["p50"]
        info = json.load(open(run / "eval_info.json"))
        assert set(info) == {"per_task", "per_group", "overall", "latency"}
        assert info["overall"]["avg_max_reward"] == pytest.approx(results["mean_score"])
        assert info["overall"]["pc_success"] == pytest.approx(100 * results["success_rate"])
        assert info["per_task"][0]["metrics"]["max_rewards"] == [results["rewards_by_seed"][s] for s in
                                                                 ("100000", "100001")]
        assert info["latency"]["chunk_ms"] == results["latency_chunk_ms"]
        log = open(run / "rollout.log").read()
        assert "2 of 2 episodes completed" in log and "results:" in log and "[INFO]" in log
        assert f"run {num + 1} of 2: {name}: control steps" in proc.stderr  # each job's progress bar, labelled
        assert any(entry.startswith("offline-run") for entry in os.listdir(run / "wandb"))
    summary = proc.stdout.split("multirun summary")[1]
    assert "2 of 2 runs wrote results" in summary and "run 1 sequential " in summary and "run 2 picard " in summary
    assert f"window=100 tolerance={SAMPLERS['picard']().tolerance}" in summary  # settings in their own column
    assert open(tmp_path / "sweep" / "summary.log").read().startswith("2 of 2 runs wrote results")


BAD_INPUT = [
    ("n_episodes=0", "n_episodes must be an integer >= 1, got 0"),
    ("policy.device=tpu", "invalid device 'tpu'"),  # refused while loading, after the run dir exists
    ("sampler=nonexistent", f"sampler=nonexistent: no such sampler; choose one of: {', '.join(sorted(SAMPLERS))}"),
    ("env=nonexistent", "env=nonexistent: no such env; choose one of: "),  # the list: test_config_check
    ("sampler.window=0", "sampler.window=0: auto has no window; choose a sampler that has one, e.g. sampler=picard"),
    ("device=cuda", "unknown key 'device' (in device=cuda); did you mean policy.device=cuda?"),
]


@pytest.mark.slow
@pytest.mark.parametrize("override, message", BAD_INPUT, ids=[o for o, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path, override, message):
    proc = cli(["env=toy", override, "logger=disabled", f"hydra.run.dir={tmp_path}/out/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"parapolicy-rollout: error: {message}") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "out").exists()


SECRET = "s3cr3t-Value-4242"


def test_a_checkpoint_path_is_taken_literally_never_interpolated(toy_ckpt, tmp_path, monkeypatch):
    """``${oc.env:...}`` in a quoted file name stays text: no secret in errors, logs or results."""
    monkeypatch.setenv("PARAPOLICY_TEST_SECRET", SECRET)
    literal = tmp_path / "run${oc.env:PARAPOLICY_TEST_SECRET}.ckpt"
    cfg = compose_rollout([f"checkpoint='{literal}'", "env=toy", "logger=disabled"])
    with pytest.raises(CheckpointError, match="no checkpoint file at") as info:
        prepare(cfg)
    assert str(literal) in str(info.value) and SECRET not in str(info.value)
    literal.write_bytes(open(toy_ckpt, "rb").read())  # a file of that very name is the one loaded
    assert prepare(cfg)[0] == str(literal)
    logged = logged_config(cfg)
    assert logged["checkpoint"] == str(literal) and SECRET not in json.dumps(logged)


@pytest.mark.slow
def test_the_cli_prints_a_literal_checkpoint_path_not_the_environment(tmp_path):
    proc = cli(["env=toy", "checkpoint='/nonexistent/x${oc.env:PARAPOLICY_TEST_SECRET}.ckpt'", "logger=disabled",
                f"hydra.run.dir={tmp_path}/run"], tmp_path, extra_env={"PARAPOLICY_TEST_SECRET": SECRET})
    assert proc.returncode == 2, proc.stderr
    assert "/nonexistent/x${oc.env:PARAPOLICY_TEST_SECRET}.ckpt" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_an_unwritable_run_dir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    proc = cli(["env=toy", "logger=disabled", f"hydra.run.dir={tmp_path}/file/run"], tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"parapolicy-rollout: error: hydra.run.dir={tmp_path}/file/run: ")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = cli(["env=toy", "n_episodes=0", "logger=disabled", f"hydra.run.dir={tmp_path}/run"], tmp_path,
               extra_env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "RolloutConfigError" in proc.stderr


FAULTY_ENV = textwrap.dedent('''
    import multiprocessing
    import os
    import signal

    import gymnasium as gym
    from parapolicy_envs.toy import ToyReachEnv

    class FaultyToy(ToyReachEnv):
        """On the ninth step of seed 100001: raises RuntimeError or KeyboardInterrupt, or ("sigint")
        sends the rollout process a real Ctrl-C (from an async worker: to its parent)."""

        def __init__(self, fault="error", **kwargs):
            super().__init__(**kwargs)
            self.fault = fault

        def reset(self, *, seed=None, options=None):
            self.bad, self.t = seed == 100001, 0
            return super().reset(seed=seed, options=options)

        def step(self, action):
            self.t += 1
            if self.bad and self.t == 9 and self.fault == "sigint":
                os.kill(os.getppid() if multiprocessing.parent_process() else os.getpid(), signal.SIGINT)
            elif self.bad and self.t == 9:
                raise KeyboardInterrupt if self.fault == "interrupt" else RuntimeError("simulator exploded")
            return super().step(action)

    gym.register("FaultyToy-v0", entry_point=FaultyToy, max_episode_steps=60, disable_env_checker=True)
''')


@pytest.mark.slow
@pytest.mark.parametrize("fault, code", [("error", 3), ("interrupt", 130)])
def test_failed_or_interrupted_episodes_exit_non_zero_with_true_counts(toy_ckpt, tmp_path, fault, code):
    (tmp_path / "faulty_env.py").write_text(FAULTY_ENV)
    proc = cli([f"checkpoint={toy_ckpt}", "env=toy", "env.id=faulty_env:FaultyToy-v0", f"+env.kwargs.fault={fault}",
                "n_episodes=3", "n_envs=2", "logger=disabled", "progress=false", f"hydra.run.dir={tmp_path}/run"],
               tmp_path, pythonpath=[tmp_path])
    assert proc.returncode == code, proc.stderr[-3000:]
    results = json.load(open(tmp_path / "run" / "results.json"))
    if fault == "error":
        assert (results["n_completed"], results["n_failed"], results["n_not_finished"]) == (2, 1, 0)
        assert results["errors"] == {"100001": "step: RuntimeError: simulator exploded"}
        assert "2 of 3 episodes completed, 1 failed, 0 not finished" in proc.stdout
    else:
        assert results["interrupted"] and (results["n_completed"], results["n_not_finished"]) == (0, 3)
        assert "0 of 3 episodes completed, 0 failed, 3 not finished (interrupted)" in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("vector", ["list", "async"])
def test_ctrl_c_ends_the_run_with_130_and_keeps_finished_episodes(toy_ckpt, tmp_path, vector):
    (tmp_path / "faulty_env.py").write_text(FAULTY_ENV)
    proc = cli([f"checkpoint={toy_ckpt}", "env=toy", "env.id=faulty_env:FaultyToy-v0", "+env.kwargs.fault=sigint",
                "n_episodes=3", "n_envs=1", f"vector={vector}", "logger=disabled", "progress=false",
                f"hydra.run.dir={tmp_path}/run"], tmp_path, pythonpath=[tmp_path])
    assert proc.returncode == 130, proc.stderr[-3000:]
    results = json.load(open(tmp_path / "run" / "results.json"))
    assert results["interrupted"] and (results["n_completed"], results["n_not_finished"]) == (1, 2)
    assert list(results["rewards_by_seed"]) == ["100000"]


@pytest.mark.slow
def test_help_explains_the_keys_and_lists_only_rollout_groups(tmp_path):
    proc = cli(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    groups = proc.stdout.split("Config groups (GROUP=OPTION):")[1].split("Main keys:")[0]
    assert [line.split(":")[0].strip() for line in groups.strip().splitlines()] == ["controller", "env", "logger",
                                                                                    "policy", "sampler"]
    for text in ("checkpoint=PATH", "compare_sampler", "vector=list", "Exit codes", "130 interrupted"):
        assert text in proc.stdout


def test_paired_mode_with_identical_samplers_has_zero_deviation(toy_ckpt, tmp_path):
    from parapolicy.eval.report import summary_table

    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=disabled",
                           "sampler=sequential", "+compare_sampler.name=sequential"])
    results = run_rollout(cfg, str(tmp_path))
    paired = results["paired"]
    assert paired["max_action_deviation"] == 0.0
    assert paired["score_difference_b_minus_a"] == {"mean": 0.0, "ci95": [0.0, 0.0], "n": 2}
    assert paired["b"]["mean_score"] == results["mean_score"] and paired["b"]["n_completed"] == 2
    assert json.load(open(tmp_path / "results.json"))["paired"]["max_action_deviation"] == 0.0
    table = summary_table(results)
    assert "score difference b - a: +0.000 (95% CI +0.000 .. +0.000, 2 paired episodes)" in table
    assert "max action deviation b vs a: 0 env action units" in table


def test_paired_mode_reports_picard_deviation_within_tolerance_scale(toy_ckpt, tmp_path):
    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled", "sampler=sequential",
                           "+compare_sampler.name=picard", "+compare_sampler.window=10",
                           "+compare_sampler.tolerance=0.001"])
    paired = run_rollout(cfg, str(tmp_path))["paired"]
    assert 0.0 <= paired["max_action_deviation"] < 1e-2


def test_cuda_graphs_on_a_cpu_policy_fail_before_anything_is_written(toy_ckpt, tmp_path):
    from parapolicy.errors import AccelerationError

    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled",
                           "policy.acceleration=cuda_graph"])
    with pytest.raises(AccelerationError, match="needs the policy on a CUDA device"):
        run_rollout(cfg, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_video_of_first_episode_is_written_as_mp4(toy_ckpt, tmp_path):
    import imageio.v2 as imageio

    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled",
                           "video_episodes=1"])
    progress = ProgressRecorder()
    results = run_rollout(cfg, str(tmp_path), progress=progress)
    assert [(p["desc"], p["finished"]) for p in progress.passes] == [("auto", 1), ("video", 1)]
    frames = imageio.mimread(str(tmp_path / "episode_100000.mp4"))
    assert len(frames) == results["steps_by_seed"]["100000"] and frames[0].shape[:2] == (64, 64)
    assert json.load(open(tmp_path / "eval_info.json"))["overall"]["video_paths"] == [
        str(tmp_path / "episode_100000.mp4")]


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_config_rolls_out_with_its_settings(toy_ckpt, tmp_path, sampler):
    cfg = compose_rollout([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled",
                           f"sampler={sampler}"])
    results = run_rollout(cfg, str(tmp_path))
    assert results["sampler"] == SAMPLERS[sampler]().config()  # the dataclass defaults, as they ran
    assert results["n_completed"] == 1 and results["rounds_per_chunk"] > 0


@pytest.mark.slow
def test_multirun_with_joblib_launcher_writes_one_results_per_job(toy_ckpt, tmp_path):
    proc = cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"checkpoint={toy_ckpt}", "env=toy",
                "n_episodes=1", "logger=disabled", "progress=false", "sampler=sequential,picard",
                f"hydra.sweep.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path)
                   for f in fs if f == "results.json")
    assert found == ["0/results.json", "1/results.json"]
    assert {json.load(open(tmp_path / f))["sampler"]["name"] for f in found} == {"sequential", "picard"}


@pytest.mark.slow
def test_submitit_local_multirun_and_slurm_config(toy_ckpt, tmp_path):
    proc = cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", f"checkpoint={toy_ckpt}",
                "env=toy", "n_episodes=1", "logger=disabled", "progress=false", "sampler=sequential",
                f"hydra.sweep.dir={tmp_path / 'local'}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(tmp_path / "local" / "0" / "results.json"))["n_completed"] == 1
    slurm = cli(["hydra/launcher=submitit_slurm", "--cfg", "hydra", "--package", "hydra.launcher"], tmp_path)
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert "SlurmLauncher" in slurm.stdout and "timeout_min" in slurm.stdout
