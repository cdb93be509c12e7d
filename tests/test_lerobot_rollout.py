"""LeRobot PushT checkpoints roll out in gym-pusht's and parapolicy's PushT envs via adapters."""

import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from tests.support.lerobot_eras import HUB_2024_KEYPOINTS, V0_5, small, write_dir
from omegaconf import OmegaConf

import parapolicy
from parapolicy.errors import ObservationError
from parapolicy_envs.adapters import make_adapted_env
from parapolicy_envs.pusht import upstream_initial_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATE_INPUTS = {"observation.environment_state": (16,), "observation.state": (2,)}
IMAGE_INPUTS = {"observation.image": (3, 96, 96), "observation.state": (2,)}


@pytest.fixture(scope="module")
def lerobot_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_pusht")
    image = small(V0_5, image_side=96)
    image["num_inference_steps"] = 4
    return {"state": write_dir(root / "state", small(HUB_2024_KEYPOINTS), "buffers"),
            "image": write_dir(root / "image", image, "processor")}


def _cli(args, cwd):
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_DIR=str(cwd), WANDB_SILENT="true",
               PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "envs")]))
    return subprocess.run([sys.executable, "-m", "parapolicy.cli.rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("kind, env_config", [("state", "gym_pusht_state"), ("image", "gym_pusht_pixels")])
def test_lerobot_pusht_checkpoint_rolls_out_through_the_cli(lerobot_dirs, kind, env_config, tmp_path):
    proc = _cli([f"checkpoint={lerobot_dirs[kind]}", f"env={env_config}", "n_episodes=2", "env.max_episode_steps=16",
                 "logger=disabled", "progress=false", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.load(open(tmp_path / "results.json"))
    assert results["env"] == "gym_pusht/PushT-v0" and sorted(results["rewards_by_seed"]) == ["100000", "100001"]
    assert not results["errors"] and all(steps == 16 for steps in results["steps_by_seed"].values())


@pytest.mark.parametrize("env_id, kwargs, inputs", [
    ("gym_pusht/PushT-v0", {"obs_type": "environment_state_agent_pos"}, STATE_INPUTS),
    ("gym_pusht/PushT-v0", {"obs_type": "pixels_agent_pos"}, IMAGE_INPUTS),
    ("parapolicy/PushT-keypoints-v0", {}, STATE_INPUTS),
    ("parapolicy/PushT-image-v0", {}, IMAGE_INPUTS),
    ("parapolicy/PushT-image-v0", {}, STATE_INPUTS),
])
def test_adapters_give_lerobot_keys_shapes_and_scale(env_id, kwargs, inputs):
    env = make_adapted_env(env_id, kwargs, inputs)
    obs, _ = env.reset(seed=3)
    assert {k: v.shape for k, v in obs.items()} == inputs
    assert all(v.dtype == np.float32 for v in obs.values())
    if "observation.image" in obs:
        assert 0.0 <= obs["observation.image"].min() and obs["observation.image"].max() <= 1.0
        assert obs["observation.image"].max() > obs["observation.image"].min()
    obs2, *_ = env.step(env.action_space.sample())
    assert obs2.keys() == obs.keys()
    env.close()


def test_parapolicy_pusht_env_state_equals_gym_pushts_environment_state():
    ours = make_adapted_env("parapolicy/PushT-keypoints-v0", {}, STATE_INPUTS)
    theirs = gym.make("gym_pusht/PushT-v0", obs_type="environment_state_agent_pos")
    a, _ = ours.reset(seed=7)
    b, _ = theirs.reset(seed=7, options={"reset_to_state": upstream_initial_state(7)})
    np.testing.assert_allclose(a["observation.environment_state"], b["environment_state"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(a["observation.state"], b["agent_pos"], rtol=0, atol=1e-4)


def test_wrong_pairing_is_one_clear_error_listing_both(lerobot_dirs):
    from parapolicy.eval.build import CONFIG_DIR, make_env_factory

    policy = parapolicy.load_policy(lerobot_dirs["image"])
    env_cfg = OmegaConf.load(os.path.join(CONFIG_DIR, "env", "gym_pusht_state.yaml"))
    with pytest.raises(ObservationError) as err:
        make_env_factory(env_cfg, policy.spec)
    message = str(err.value)
    assert message.startswith("checkpoint 'image' inputs {observation.image: (3, 96, 96), "
                              "observation.state: (2,)} cannot be built from env 'gym_pusht/PushT-v0' observations "
                              "{agent_pos: (2,), environment_state: (16,)}")
    assert "an image checkpoint cannot run in a low-dim env" in message
    assert message.endswith("'observation.image' has no source")
    with pytest.raises(ObservationError, match=r"'observation.image' needs shape \(3, 64, 64\), the env gives "
                                               r"\(3, 96, 96\)"):
        make_adapted_env("gym_pusht/PushT-v0", {"obs_type": "pixels_agent_pos"},
                         {"observation.image": (3, 64, 64), "observation.state": (2,)})
