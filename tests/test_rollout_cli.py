"""The rollout CLI end to end on the toy task: results.json, wandb modes, paired mode, multirun."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from parapolicy.rollout import CONFIG_DIR, make_env_factory, run_rollout
from parapolicy.runner import run_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory):
    from test_training import _toy_cfg

    from parapolicy.train.dataset import save_buffer
    from parapolicy.train.trainer import train

    root = tmp_path_factory.mktemp("toyckpt")
    rng = np.random.default_rng(0)
    save_buffer(str(root / "d.npz"), [{"obs": rng.normal(size=(30, 4)), "action": rng.uniform(-1, 1, size=(30, 2))}
                                      for _ in range(3)])
    cfg = _toy_cfg(root / "d.npz")
    cfg["policy"]["num_inference_steps"] = 10
    return train(cfg, str(root / "run"), progress=False)


def _cli(args, cwd, timeout=300):
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_DIR=str(cwd), WANDB_SILENT="true")
    return subprocess.run([sys.executable, "-m", "parapolicy.rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("logger", ["disabled", "offline"])
def test_toy_rollout_through_cli_writes_results_json(toy_ckpt, tmp_path, logger):
    env = None if logger == "disabled" else {}
    proc = _cli([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=3", "seed=100000", f"logger={logger}",
                 "sampler=picard", "sampler.window=10", f"hydra.run.dir={tmp_path}", "progress=false"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(tmp_path / "results.json"))
    assert isinstance(results["mean_score"], float) and 0.0 <= results["mean_score"] <= 1.0
    assert isinstance(results["success_rate"], float)
    assert sorted(results["rewards_by_seed"]) == ["100000", "100001", "100002"]
    for key in ("latency_chunk_ms", "latency_step_ms"):
        assert set(results[key]) >= {"p50", "p95", "p99", "max"} and results[key]["p99"] >= results[key]["p50"]
    assert results["sampler"] == {"name": "picard", "window": 10, "tolerance": 0.1}
    assert results["nfe_per_chunk"] >= results["rounds_per_chunk"] > 0
    assert results["device"].startswith("cpu") and "torch" in results["versions"]
    if logger == "offline":
        assert any(name.startswith("offline-run") for name in os.listdir(tmp_path / "wandb")), env


def _cfg(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("rollout", overrides=overrides)


def test_paired_mode_with_identical_samplers_has_zero_deviation(toy_ckpt, tmp_path):
    cfg = _cfg([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=3", "logger=disabled", "progress=false",
                "+compare_sampler.name=sequential"])
    results = run_rollout(cfg, str(tmp_path))
    paired = results["paired"]
    assert paired["max_action_deviation"] == 0.0
    assert paired["score_difference_b_minus_a"]["mean"] == 0.0
    assert paired["mean_score_a"] == paired["mean_score_b"]
    assert json.load(open(tmp_path / "results.json"))["paired"]["max_action_deviation"] == 0.0


def test_paired_mode_reports_picard_deviation_within_tolerance_scale(toy_ckpt, tmp_path):
    cfg = _cfg([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=disabled", "progress=false",
                "+compare_sampler.name=picard", "+compare_sampler.window=10", "+compare_sampler.tolerance=0.001"])
    paired = run_rollout(cfg, str(tmp_path))["paired"]
    assert 0.0 <= paired["max_action_deviation"] < 1e-2


def test_cuda_graphs_on_a_cpu_policy_fail_before_any_episode(toy_ckpt, tmp_path):
    from parapolicy.errors import AccelerationError

    cfg = _cfg([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled", "progress=false",
                "policy.acceleration=cuda_graph"])
    with pytest.raises(AccelerationError, match="needs the policy on a CUDA device"):
        run_rollout(cfg, str(tmp_path))
    assert not (tmp_path / "results.json").exists()


def test_multirun_with_joblib_launcher_writes_one_results_per_job(toy_ckpt, tmp_path):
    proc = _cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"checkpoint={toy_ckpt}", "env=toy",
                 "n_episodes=2", "logger=disabled", "progress=false", "sampler=sequential,picard",
                 f"hydra.sweep.dir={tmp_path}"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = sorted(os.path.relpath(os.path.join(d, f), tmp_path) for d, _, fs in os.walk(tmp_path)
                   for f in fs if f == "results.json")
    assert found == ["0/results.json", "1/results.json"]
    samplers = {json.load(open(tmp_path / f))["sampler"]["name"] for f in found}
    assert samplers == {"sequential", "picard"}


def test_invalid_override_gets_hydras_error(tmp_path):
    proc = _cli(["sampler=turbo", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "Could not find 'sampler/turbo'" in proc.stderr


def test_an_env_that_raises_is_one_failed_episode_and_the_rest_finish(toy_ckpt):
    import parapolicy

    policy = parapolicy.load_policy(toy_ckpt)
    cfg = _cfg(["env=toy"])
    make = make_env_factory(cfg.env, policy.spec)
    count = {"n": 0}

    def flaky():
        env = make()
        count["n"] += 1
        if count["n"] == 2:  # the second env breaks on its second chunk
            original, calls = env.env.step, {"n": 0}

            def step(action):
                calls["n"] += 1
                if calls["n"] > 8:
                    raise RuntimeError("simulator exploded")
                return original(action)

            env.env.step = step
        return env

    run = run_batch(policy, flaky, [1, 2, 3], generator=torch.Generator().manual_seed(0))
    errors = {e.seed: e.error for e in run.episodes}
    assert errors[2] == "step: RuntimeError: simulator exploded"
    assert errors[1] is None and errors[3] is None
    assert all(e.steps > 8 for e in run.episodes if e.seed != 2)
    assert run.summary()["n_failed_with_error"] == 1


def test_ctrl_c_keeps_the_finished_part(toy_ckpt):
    import parapolicy

    policy = parapolicy.load_policy(toy_ckpt)
    make = make_env_factory(_cfg(["env=toy"]).env, policy.spec)

    class Interrupting:
        calls = 0

        def predict_action(self, obs, generator=None):
            Interrupting.calls += 1
            if Interrupting.calls == 3:
                raise KeyboardInterrupt
            return policy.predict_action(obs, generator=generator)

    run = run_batch(Interrupting(), make, [5, 6], generator=torch.Generator().manual_seed(0))
    assert run.interrupted and len(run.chunk_latency_ms) == 2
    assert all(e.steps == 16 for e in run.episodes)


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_gymnasium_vector_envs_give_the_same_episodes_as_the_list_runner(toy_ckpt, vector):
    import parapolicy

    policy = parapolicy.load_policy(toy_ckpt)
    make = make_env_factory(_cfg(["env=toy"]).env, policy.spec)
    seeds = [100000, 100001, 100002]
    ref = run_batch(policy, make, seeds, generator=torch.Generator().manual_seed(0), record_actions=True)
    got = run_batch(policy, make, seeds, generator=torch.Generator().manual_seed(0), record_actions=True, vector=vector)
    assert [(e.seed, e.max_reward, e.steps) for e in got.episodes] == [(e.seed, e.max_reward, e.steps) for e in ref.episodes]
    assert len(got.actions) == len(ref.actions)
    assert all(np.array_equal(a, b) for a, b in zip(got.actions, ref.actions))


def test_video_of_first_episode_is_written_as_mp4(toy_ckpt, tmp_path):
    import imageio.v2 as imageio

    cfg = _cfg([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=disabled", "progress=false",
                "video_episodes=1"])
    results = run_rollout(cfg, str(tmp_path))
    video = tmp_path / "episode_100000.mp4"
    assert video.exists() and results["n_episodes"] == 2
    frames = imageio.mimread(str(video))
    assert len(frames) == results["steps_by_seed"]["100000"] and frames[0].shape[:2] == (64, 64)


def test_submitit_local_multirun_and_slurm_config(toy_ckpt, tmp_path):
    proc = _cli(["-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", f"checkpoint={toy_ckpt}",
                 "env=toy", "n_episodes=1", "logger=disabled", "progress=false", "sampler=sequential",
                 f"hydra.sweep.dir={tmp_path / 'local'}"], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.load(open(tmp_path / "local" / "0" / "results.json"))["n_episodes"] == 1
    slurm = _cli(["hydra/launcher=submitit_slurm", "--cfg", "hydra", "--package", "hydra.launcher"], tmp_path)
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    assert "SlurmLauncher" in slurm.stdout and "timeout_min" in slurm.stdout


@pytest.mark.parametrize("sampler", sorted(f[:-5] for f in os.listdir(os.path.join(CONFIG_DIR, "sampler"))))
def test_every_sampler_config_rolls_out_with_its_settings(toy_ckpt, tmp_path, sampler):
    from omegaconf import OmegaConf

    cfg = _cfg([f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled", "progress=false",
                f"sampler={sampler}"])
    results = run_rollout(cfg, str(tmp_path))
    assert results["sampler"] == OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "sampler",
                                                                                    f"{sampler}.yaml")))
    assert results["n_episodes"] == 1 and results["rounds_per_chunk"] > 0
