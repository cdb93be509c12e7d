"""Demonstration collection and training write files the loader reads back."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import parapolicy
from parapolicy.train.dataset import load_buffer, window_indices
from parapolicy.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_window_indices_pad_like_upstream_sequence_sampler():
    rows = window_indices(np.array([5]), horizon=4, pad_before=1, pad_after=2)
    assert rows[0].tolist() == [-1, 3, 0, 5] and rows[-1].tolist() == [3, 7, 0, 5]
    assert len(rows) == 5


@pytest.mark.slow  # spawns the script
def test_collect_demos_writes_a_replay_buffer(tmp_path):
    out = tmp_path / "toy.npz"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "collect_demos.py"), "--env", "toy",
                           "--episodes", "3", "--workers", "1", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "expert success 3/3" in proc.stdout
    buf = load_buffer(str(out))
    assert buf["obs"].shape[1] == 4 and buf["action"].shape[1] == 2
    assert buf["episode_ends"][-1] == len(buf["action"]) and len(buf["episode_ends"]) == 3


def _toy_cfg(data_path):
    from omegaconf import OmegaConf

    from parapolicy.checkpoints.dp_cfg import safe_arithmetic

    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", safe_arithmetic)
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", "train", "toy.yaml"))
    cfg.data.path = str(data_path)
    cfg.training.num_steps = 2
    cfg.training.batch_size = 8
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra")
    return plain


def test_train_two_steps_then_load_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    from parapolicy.train.dataset import save_buffer

    save_buffer(str(tmp_path / "d.npz"), [{"obs": rng.normal(size=(20, 4)), "action": rng.normal(size=(20, 2))}
                                          for _ in range(3)])
    cfg = _toy_cfg(tmp_path / "d.npz")
    path = train(cfg, str(tmp_path / "run"), progress=False)
    policy = parapolicy.load_policy(path)
    assert policy.spec.source["weights"] == "ema_model"
    out = policy.predict_action({"obs": torch.zeros(2, 2, 4)}, generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, 8, 2)
    cfg["training"]["num_steps"] = 3  # resumes from step 2 and runs one more
    train(cfg, str(tmp_path / "run"), progress=False)
    from parapolicy.checkpoints.dp_workspace import read_payload
    from parapolicy.checkpoints.safe_pickle import allow_list_pickle

    payload = read_payload(path)
    assert allow_list_pickle.loads(payload["pickles"]["global_step"]) == 3
    assert set(payload["state_dicts"]) >= {"model", "ema_model", "optimizer"}


@pytest.mark.slow  # spawns the script
def test_train_script_runs_through_hydra(tmp_path):
    rng = np.random.default_rng(1)
    from parapolicy.train.dataset import save_buffer

    save_buffer(str(tmp_path / "d.npz"), [{"obs": rng.normal(size=(20, 4)), "action": rng.normal(size=(20, 2))}])
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "train.py"), "--config-name", "toy",
                           f"data.path={tmp_path / 'd.npz'}", f"out_dir={tmp_path / 'out'}", "training.num_steps=2",
                           "training.batch_size=4", "logger.mode=disabled"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, WANDB_MODE="disabled"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert parapolicy.load_policy(tmp_path / "out" / "checkpoints" / "latest.ckpt").spec.horizon == 16


def test_pusht_image_demos_replay_and_hybrid_image_training(tmp_path):
    """Image demos are a deterministic replay of the keypoint run; the hybrid policy trains and loads."""
    from omegaconf import OmegaConf

    from parapolicy.train.dataset import save_buffer
    from parapolicy_envs.demos import render_pusht_images, run_expert_episode

    episode = run_expert_episode("pusht", 3, max_steps=12)
    images = render_pusht_images(3, episode["action"], episode["state"])
    assert images["image"].shape == (12, 3, 96, 96) and images["image"].dtype == np.uint8
    np.testing.assert_allclose(images["agent_pos"], episode["obs"][:, 18:20], atol=1e-9)
    save_buffer(str(tmp_path / "img.npz"), [{"action": episode["action"], **images}])
    cfg = OmegaConf.load(os.path.join(ROOT, "configs", "train", "pusht_image.yaml"))
    cfg.data.path = str(tmp_path / "img.npz")
    cfg.training.num_steps, cfg.training.batch_size = 2, 2
    cfg.policy.down_dims, cfg.policy.diffusion_step_embed_dim, cfg.policy.num_inference_steps = [16, 32], 16, 4
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra")
    policy = parapolicy.load_policy(train(plain, str(tmp_path / "run"), progress=False))
    assert policy.spec.family == "unet_hybrid_image"
    obs = {"image": torch.rand(1, 2, 3, 96, 96), "agent_pos": 100 + 300 * torch.rand(1, 2, 2)}
    assert policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"].shape == (1, 8, 2)


def test_a_checkpoint_from_our_training_matches_upstream_semantics(tmp_path):
    """Our own trainer writes upstream's format: the loaded policy equals the step-by-step
    restatement of upstream's predict_action on the stored cfg and EMA weights."""
    from tests.support.upstream_reference import upstream_predict_action

    from parapolicy.checkpoints.dp_cfg import to_plain
    from parapolicy.checkpoints.dp_workspace import read_payload
    from parapolicy.train.dataset import save_buffer

    rng = np.random.default_rng(2)
    save_buffer(str(tmp_path / "d.npz"), [{"obs": rng.normal(size=(25, 4)), "action": rng.normal(size=(25, 2))}
                                          for _ in range(2)])
    cfg = _toy_cfg(tmp_path / "d.npz")
    cfg["policy"]["num_inference_steps"] = 12
    path = train(cfg, str(tmp_path / "run"), progress=False)
    payload = read_payload(path)
    policy_cfg = to_plain(payload["cfg"]["policy"])
    obs = {"obs": torch.as_tensor(rng.normal(size=(3, 2, 4)))}
    want, _ = upstream_predict_action(policy_cfg, payload["state_dicts"]["ema_model"], obs,
                                      torch.Generator().manual_seed(9))
    got = parapolicy.load_policy(path).predict_action(obs, generator=torch.Generator().manual_seed(9))["action"]
    assert (got - want).abs().max() <= 1e-5
