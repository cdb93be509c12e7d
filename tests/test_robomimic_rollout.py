"""robomimic checkpoints in envs: the env a checkpoint names, action conversion, bad pairings.

The fast tests use stand-in envs (no robosuite) except one rollout through the Python path;
the CLI runs of each upstream checkpoint kind are slow.
"""

import json
import os
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf
from tests.support.cli import cli, compose_rollout

from parapolicy.checkpoints.dp_task import read_task
from parapolicy.errors import CheckpointError, EnvPairingError
from parapolicy.eval.env_choice import env_for_task, resolve_env
from parapolicy.eval.run import run_rollout
from parapolicy_envs.actions import Rotation6dActions, adapt_actions
from parapolicy_envs.adapters import adapt_observations
from parapolicy_envs.rotations import axis_angle_to_rotation_6d


class StandIn(gym.Env):
    """An env with a robomimic env's declared control mode; it records the actions it gets."""

    def __init__(self, abs_action=False, n_arms=1, obs_space=None):
        self.abs_action, self.n_arms, self.got = abs_action, n_arms, []
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (7 * n_arms,))
        self.observation_space = obs_space or gym.spaces.Box(-np.inf, np.inf, (19,))
        self.spec = SimpleNamespace(id="StandIn-lowdim-v0")

    def step(self, action):
        self.got.append(np.asarray(action))
        return self.observation_space.sample(), 0.0, False, False, {}


def test_two_arm_6d_actions_become_axis_angle_per_arm():
    env = StandIn(abs_action=True, n_arms=2)
    wrapped = adapt_actions(env, 20, abs_action=True)
    assert isinstance(wrapped, Rotation6dActions) and wrapped.action_space.shape == (20,)
    rotvecs = np.array([[0.1, -0.2, 0.3], [2.0, 0.5, -1.0]])
    arms = [np.concatenate([[1, 2, 3], axis_angle_to_rotation_6d(r), [-1]]) for r in rotvecs]
    wrapped.step(np.concatenate(arms))
    np.testing.assert_allclose(env.got[0].reshape(2, 7)[:, 3:6], rotvecs, atol=1e-9)
    np.testing.assert_allclose(env.got[0].reshape(2, 7)[:, [0, 1, 2, 6]], [[1, 2, 3, -1]] * 2)


@pytest.mark.parametrize("env_abs, dim, ckpt_abs, words", [
    (False, 10, True, ["absolute pose actions (10-d", "delta OSC_POSE control (7-d)"]),
    (False, 10, None, ["absolute pose actions (10-d", "delta OSC_POSE control (7-d)"]),
    (True, 7, False, ["delta actions (7-d)", "absolute pose control (7-d"]),
    (False, 5, False, ["5-d actions", "takes 7-d actions"]),
])
def test_a_checkpoint_whose_actions_do_not_fit_the_env_is_one_error_naming_both(env_abs, dim, ckpt_abs, words):
    with pytest.raises(EnvPairingError) as err:
        adapt_actions(StandIn(abs_action=env_abs), dim, ckpt_abs, "checkpoint 'mine.ckpt'")
    assert all(w in str(err.value) for w in ["checkpoint 'mine.ckpt'", "'StandIn-lowdim-v0'", *words])


def test_an_image_checkpoint_in_a_lowdim_env_is_one_error_naming_both():
    inputs = {"agentview_image": (3, 84, 84), "robot0_eef_pos": (3,)}
    with pytest.raises(EnvPairingError) as err:
        adapt_observations(StandIn(), inputs, checkpoint="checkpoint 'mine.ckpt'")
    text = str(err.value)
    assert text.startswith("checkpoint 'mine.ckpt' inputs {agentview_image: (3, 84, 84), robot0_eef_pos: (3,)} "
                           "cannot be built from env 'StandIn-lowdim-v0' observations {obs: (19,)}")
    assert "an image checkpoint cannot run in a low-dim env" in text
    image_env = StandIn(obs_space=gym.spaces.Dict({"agentview_image": gym.spaces.Box(0, 1, (3, 84, 84))}))
    with pytest.raises(EnvPairingError, match="a low-dim checkpoint cannot run in an image env"):
        adapt_observations(image_env, {"obs": (19,)})


def _spec(task, obs_shapes=None):
    return SimpleNamespace(task=task, obs_shapes=obs_shapes or {"obs": (19,)})


def test_the_env_comes_from_the_checkpoints_upstream_task():
    runner = "diffusion_policy.env_runner.robomimic_{}_runner.Robomimic{}Runner"
    lowdim = OmegaConf.create({"task": {"task_name": "tool_hang", "env_runner": {
        "_target_": runner.format("lowdim", "Lowdim"), "abs_action": True, "max_steps": 700}}})
    got = env_for_task(_spec(read_task(lowdim)))
    assert (got["id"], got["kwargs"], got["max_episode_steps"]) == ("parapolicy/ToolHang-lowdim-v0",
                                                                  {"abs_action": True}, 700)
    image = OmegaConf.create({"task": {"abs_action": False, "env_runner": {  # task name from the dataset path
        "_target_": runner.format("image", "Image"), "dataset_path": "data/robomimic/datasets/can/mh/image.hdf5",
        "max_steps": "${eval:'500 if \"mh\" == \"mh\" else 400'}"}}})
    got = env_for_task(_spec(read_task(image), {"agentview_image": (3, 96, 96), "robot0_eef_pos": (3,)}))
    assert (got["id"], got["kwargs"], got["max_episode_steps"]) == ("parapolicy/Can-image-v0",
                                                                  {"abs_action": False, "image_size": 96}, 500)
    pusht = OmegaConf.create({"task": {"env_runner": {
        "_target_": "diffusion_policy.env_runner.pusht_keypoints_runner.PushTKeypointsRunner"}}})
    assert env_for_task(_spec(read_task(pusht)))["id"] == "parapolicy/PushT-keypoints-v0"
    assert read_task(OmegaConf.create({"policy": {}})) == {} and env_for_task(_spec({})) is None
    with pytest.raises(CheckpointError, match="abs_action must be true or false"):
        read_task(OmegaConf.create({"task": {"abs_action": "yes"}}))


def test_env_auto_falls_back_to_pusht_and_keeps_command_line_settings():
    cfg = compose_rollout(["env.max_episode_steps=16"])
    assert cfg.env.id == "auto"
    resolve_env(cfg, _spec({}))
    assert (cfg.env.id, cfg.env.max_episode_steps) == ("parapolicy/PushT-keypoints-v0", 16)


def test_an_absolute_lowdim_checkpoint_rolls_out_in_the_env_it_names(robomimic_ckpt, tmp_path):
    pytest.importorskip("robomimic")
    cfg = compose_rollout([f"checkpoint={robomimic_ckpt('lowdim_abs')}", "n_episodes=1", "env.max_episode_steps=8",
                           "logger=disabled", "progress=false"])
    results = run_rollout(cfg, str(tmp_path))
    assert results["env"] == "parapolicy/Lift-lowdim-v0" and cfg.env.kwargs.abs_action is True
    assert results["n_completed"] == 1 and results["policy"]["n_action_steps"] == 8


KIND_ENVS = {"lowdim_delta": ("parapolicy/Lift-lowdim-v0", False), "lowdim_abs": ("parapolicy/Lift-lowdim-v0", True),
             "image_abs": ("parapolicy/Lift-image-v0", True), "transport_abs": ("parapolicy/Transport-lowdim-v0", True)}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KIND_ENVS))
def test_each_upstream_checkpoint_kind_rolls_out_with_one_command(kind, robomimic_ckpt, tmp_path):
    pytest.importorskip("robomimic")
    proc = cli([f"checkpoint={robomimic_ckpt(kind)}", "n_episodes=1", "env.max_episode_steps=16", "logger=disabled",
                f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(tmp_path / "run" / "results.json"))
    env_id, abs_action = KIND_ENVS[kind]
    assert results["env"] == env_id and results["n_completed"] == 1
    config = json.load(open(tmp_path / "run" / "eval_info.json"))  # noqa: F841 - written next to results
    hydra_cfg = OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml")
    assert hydra_cfg.env.id == "auto"  # the command named no env
    assert f"'abs_action': {abs_action}" in open(tmp_path / "run" / "rollout.log").read()


@pytest.mark.slow
@pytest.mark.parametrize("kind, env, words", [
    ("image_abs", "robomimic_lift", ["an image checkpoint cannot run in a low-dim env", "'parapolicy/Lift-lowdim-v0'"]),
    ("lowdim_abs", "robomimic_lift", ["absolute pose actions (10-d", "delta OSC_POSE control (7-d)"]),
])
def test_bad_pairings_on_the_command_line_are_one_error_line(kind, env, words, robomimic_ckpt, tmp_path):
    pytest.importorskip("robomimic")
    proc = cli([f"checkpoint={robomimic_ckpt(kind)}", f"env={env}", "n_episodes=1", "logger=disabled",
                f"hydra.run.dir={tmp_path}/run"], tmp_path)
    assert proc.returncode == 2
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("parapolicy-rollout: error:")]
    assert all(w in line for w in words) and os.path.basename(robomimic_ckpt(kind)) in line
    assert not (tmp_path / "run").exists()


LIFT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "parapolicy", "assets",
                    "checkpoints", "lift_lowdim_unet.ckpt")


def test_the_shipped_lift_policy_is_small_has_its_card_and_names_its_env():
    import parapolicy

    assert os.path.getsize(LIFT) <= 25 * 1024 * 1024 and os.path.isfile(LIFT.replace(".ckpt", ".md"))
    policy = parapolicy.load_policy(LIFT)
    assert policy.spec.source["weights"] == "ema_model" and policy.spec.action_dim == 7
    got = env_for_task(policy.spec)
    assert (got["id"], got["kwargs"], got["max_episode_steps"]) == ("parapolicy/Lift-lowdim-v0", {"abs_action": False},
                                                                  400)


def test_the_shipped_lift_policy_acts_in_its_env():
    """As the PushT and toy checkpoints' test: one chunk from the env's first observation has the
    env's action size and stays within its [-1, 1] delta box (5% slack)."""
    pytest.importorskip("robomimic")
    import parapolicy
    import torch

    policy = parapolicy.load_policy(LIFT)
    env = gym.make("parapolicy/Lift-lowdim-v0")
    obs, _ = env.reset(seed=100000)
    out = policy.predict_action({"obs": torch.as_tensor(np.stack([obs, obs]), dtype=torch.float32)[None]},
                                generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (1, policy.spec.n_action_steps, env.action_space.shape[0])
    low, high = env.action_space.low, env.action_space.high
    action = out["action"].numpy()
    assert ((action >= low - 0.05 * (high - low)) & (action <= high + 0.05 * (high - low))).all()


@pytest.mark.slow
def test_the_shipped_lift_policy_lifts_the_cube(tmp_path):
    pytest.importorskip("robomimic")
    cfg = compose_rollout([f"checkpoint={LIFT}", "n_episodes=3", "env.max_episode_steps=160", "logger=disabled",
                           "progress=false"])
    results = run_rollout(cfg, str(tmp_path))
    assert results["env"] == "parapolicy/Lift-lowdim-v0" and results["success_rate"] == 1.0
