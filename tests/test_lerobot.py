"""LeRobot pretrained_model directories: key mapping, both stats layouts, export round trips."""

import json
import os

import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint
from safetensors.torch import load_file, save_file

import parapolicy
from parapolicy.checkpoints.lerobot import (
    POST_STATS,
    PRE_STATS,
    dp_unet_key_to_lerobot,
    export_lerobot,
    lerobot_unet_key_to_dp,
)
from parapolicy.errors import CheckpointError, ObservationError


def test_unet_key_mapping_matches_documented_renames():
    assert dp_unet_key_to_lerobot("down_modules.0.0.blocks.1.block.0.weight") == "down_modules.0.0.conv2.block.0.weight"
    assert dp_unet_key_to_lerobot("up_modules.1.2.conv.bias") == "up_modules.1.2.bias"
    assert dp_unet_key_to_lerobot("mid_modules.0.cond_encoder.1.weight") == "mid_modules.0.cond_encoder.1.weight"
    assert dp_unet_key_to_lerobot("final_conv.0.block.0.weight") == "final_conv.0.block.0.weight"
    for key in ["down_modules.1.2.conv.weight", "up_modules.0.1.blocks.0.block.1.bias", "down_modules.0.0.residual_conv.weight"]:
        assert lerobot_unet_key_to_dp(dp_unet_key_to_lerobot(key)) == key


@pytest.fixture(scope="module")
def dp_policy_and_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    write_checkpoint(root / "dp.ckpt", cfg)
    policy = parapolicy.load_policy(root / "dp.ckpt")
    return cfg, policy, export_lerobot(policy, str(root / "pretrained_model"))


def _lerobot_obs(cfg, seed=0):
    return {"observation.state": sample_obs(cfg, seed=seed)["obs"]}


def test_dp_policy_exported_to_lerobot_gives_the_same_actions(dp_policy_and_dir):
    cfg, dp_policy, out = dp_policy_and_dir
    assert sorted(os.listdir(out)) == sorted(["config.json", "model.safetensors", PRE_STATS, POST_STATS,
                                              "policy_preprocessor.json", "policy_postprocessor.json"])
    assert "diffusion.unet.down_modules.0.0.conv1.block.0.weight" in load_file(os.path.join(out, "model.safetensors"))
    loaded = parapolicy.load_policy(out)
    assert loaded.spec.source["format"] == "lerobot"
    want = dp_policy.predict_action(sample_obs(cfg), generator=torch.Generator().manual_seed(4))
    got = loaded.predict_action(_lerobot_obs(cfg), generator=torch.Generator().manual_seed(4))
    # DP's affine normaliser vs LeRobot's min/max formula: equal up to float rounding
    assert (got["action"] - want["action"]).abs().max() < 1e-4
    assert got["action"].shape == want["action"].shape


def test_lerobot_dir_round_trips_to_identical_actions(dp_policy_and_dir, tmp_path):
    cfg, _, out = dp_policy_and_dir
    first = parapolicy.load_policy(out)
    again = parapolicy.load_policy(export_lerobot(first, str(tmp_path / "again")))
    obs = _lerobot_obs(cfg, seed=3)
    a = first.predict_action(obs, generator=torch.Generator().manual_seed(8))["action"]
    b = again.predict_action(obs, generator=torch.Generator().manual_seed(8))["action"]
    assert torch.equal(a, b)


def test_legacy_stats_in_model_buffers_load_too(dp_policy_and_dir, tmp_path):
    """lerobot <= 0.3 kept the stats as normalize_* buffers inside model.safetensors."""
    cfg, _, out = dp_policy_and_dir
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    weights = load_file(os.path.join(out, "model.safetensors"))
    pre, post = load_file(os.path.join(out, PRE_STATS)), load_file(os.path.join(out, POST_STATS))
    for key, value in pre.items():
        feature, _, stat = key.rpartition(".")
        weights[f"normalize_inputs.buffer_{feature.replace('.', '_')}.{stat}"] = value
    for key, value in post.items():
        weights[f"unnormalize_outputs.buffer_action.{key.split('.')[-1]}"] = value
        weights[f"normalize_targets.buffer_action.{key.split('.')[-1]}"] = value.clone()
    save_file(weights, str(legacy / "model.safetensors"))
    config = json.load(open(os.path.join(out, "config.json")))
    json.dump(config, open(legacy / "config.json", "w"))
    old = parapolicy.load_policy(legacy)
    new = parapolicy.load_policy(out)
    assert old.normalizer.legacy and not new.normalizer.legacy
    obs = _lerobot_obs(cfg, seed=5)
    a = old.predict_action(obs, generator=torch.Generator().manual_seed(1))["action"]
    b = new.predict_action(obs, generator=torch.Generator().manual_seed(1))["action"]
    assert (a - b).abs().max() < 1e-4


def test_lerobot_image_policy_round_trip(tmp_path):
    """An image+state LeRobot policy: built from a config, exported, reloaded identically."""
    from parapolicy.checkpoints.lerobot import load_lerobot

    d = tmp_path / "img"
    d.mkdir()
    config = {
        "type": "diffusion", "n_obs_steps": 2, "horizon": 16, "n_action_steps": 8,
        "input_features": {"observation.state": {"type": "STATE", "shape": [2]},
                           "observation.image": {"type": "VISUAL", "shape": [3, 32, 32]}},
        "output_features": {"action": {"type": "ACTION", "shape": [2]}},
        "normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"},
        "crop_shape": [28, 28], "use_group_norm": True, "spatial_softmax_num_keypoints": 8,
        "down_dims": [16, 32], "kernel_size": 3, "n_groups": 4, "diffusion_step_embed_dim": 16,
        "use_film_scale_modulation": True, "noise_scheduler_type": "DDIM", "num_inference_steps": 6,
    }
    json.dump(config, open(d / "config.json", "w"))
    from parapolicy.checkpoints.lerobot import LeRobotObsEncoder
    from parapolicy.models.unet1d import ConditionalUnet1D

    torch.manual_seed(0)
    enc = LeRobotObsEncoder({"observation.state": (2,), "observation.image": (3, 32, 32)}, ["observation.image"],
                            (28, 28), True, 8, False)
    unet = ConditionalUnet1D(2, global_cond_dim=(2 + 16) * 2, diffusion_step_embed_dim=16, down_dims=(16, 32),
                             kernel_size=3, n_groups=4, cond_predict_scale=True)
    from parapolicy.checkpoints.lerobot import dp_unet_key_to_lerobot as rename

    weights = {"diffusion.unet." + rename(k): v for k, v in unet.state_dict().items()}
    weights.update({"diffusion." + k: v for k, v in enc.state_dict().items()})
    save_file(weights, str(d / "model.safetensors"))
    save_file({"observation.state.min": torch.zeros(2), "observation.state.max": torch.full((2,), 512.0),
               "observation.image.mean": torch.full((3, 1, 1), 0.5), "observation.image.std": torch.full((3, 1, 1), 0.5)},
              str(d / PRE_STATS))
    save_file({"action.min": torch.zeros(2), "action.max": torch.full((2,), 512.0)}, str(d / POST_STATS))
    policy = load_lerobot(str(d))
    obs = {"observation.state": 512 * torch.rand(2, 2, 2), "observation.image": torch.rand(2, 2, 3, 32, 32)}
    out = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, 8, 2) and out["action_pred"].shape == (2, 16, 2)
    again = parapolicy.load_policy(export_lerobot(policy, str(tmp_path / "again")))
    same = again.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["action"], same["action"])
    with pytest.raises(ObservationError, match=r"obs is missing keys \['observation.image'\]"):
        policy.predict_action({"observation.state": obs["observation.state"]})


def test_non_diffusion_lerobot_dir_is_rejected(dp_policy_and_dir, tmp_path):
    _, _, out = dp_policy_and_dir
    d = tmp_path / "act"
    d.mkdir()
    config = json.load(open(os.path.join(out, "config.json")))
    config["type"] = "act"
    json.dump(config, open(d / "config.json", "w"))
    (d / "model.safetensors").write_bytes(open(os.path.join(out, "model.safetensors"), "rb").read())
    with pytest.raises(CheckpointError, match="config.json holds a LeRobot 'act' policy, expected 'diffusion'"):
        parapolicy.load_policy(d)
