"""Every LeRobot release layout loads: config schemas, stats layouts, defaults, exporter."""

import json
import os

import pytest
import torch
from tests.support.lerobot_eras import (
    ERA_CONFIGS,
    HUB_2024,
    HUB_2024_KEYPOINTS,
    V0_3,
    V0_6,
    lerobot_obs,
    small,
    write_dir,
)
from safetensors.torch import load_file

import parapolicy
from parapolicy.checkpoints.lerobot import ERAS, config_fields, export_lerobot
from parapolicy.errors import CheckpointError


def test_exporter_writes_each_release_field_list_exactly():
    for era, config in ERA_CONFIGS.items():
        assert config_fields(era) == list(config), era
    assert set(ERAS) == set(ERA_CONFIGS)


@pytest.mark.parametrize("era", list(ERA_CONFIGS))
def test_release_config_loads_with_its_stats_layout(era, tmp_path):
    layout = "buffers" if era in ("hub-2024", "0.3") else "processor"
    policy = parapolicy.load_policy(write_dir(tmp_path / era, small(ERA_CONFIGS[era]), layout))
    config = ERA_CONFIGS[era]
    assert policy.spec.source["stats"] == layout
    assert (policy.spec.horizon, policy.spec.n_action_steps) == (config["horizon"], config["n_action_steps"])
    # num_inference_steps null means num_train_timesteps (LeRobot's DiffusionModel.__init__)
    assert len(policy.scheduler.timesteps) == 100
    out = policy.predict_action(lerobot_obs(policy), generator=torch.Generator().manual_seed(0))
    assert out["action"].shape == (2, config["n_action_steps"], 2)
    assert torch.isfinite(out["action"]).all()


def test_v0_6_defaults_batchnorm_and_per_camera_encoder_with_one_camera(tmp_path):
    d = write_dir(tmp_path / "v06", small(V0_6), "processor")
    keys = load_file(os.path.join(d, "model.safetensors"))
    assert "diffusion.rgb_encoder.0.backbone.1.running_mean" in keys
    policy = parapolicy.load_policy(d)
    bn = policy.obs_encoder.rgb_encoder[0].backbone[1]
    assert isinstance(bn, torch.nn.BatchNorm2d) and not bn.training
    assert torch.equal(bn.running_mean, keys["diffusion.rgb_encoder.0.backbone.1.running_mean"])
    image = torch.rand(2, 3, 64, 64)
    a = policy.obs_encoder.rgb_encoder[0](image)
    bn.running_mean.add_(1.0)  # eval mode reads the stored running statistics
    assert not torch.allclose(a, policy.obs_encoder.rgb_encoder[0](image))


def test_ddim_and_explicit_steps_from_the_2024_keypoints_config(tmp_path):
    policy = parapolicy.load_policy(write_dir(tmp_path / "kp", small(HUB_2024_KEYPOINTS), "buffers"))
    assert type(policy.scheduler).__name__ == "DDIMScheduler"
    assert policy.scheduler.timesteps.tolist() == list(range(90, -1, -10))
    assert policy.normalizer.modes["observation.environment_state"] == "MIN_MAX"  # per-key mode of that era


def test_env_state_is_unnormalised_in_feature_configs(tmp_path):
    """0.2+: ENV has no entry in LeRobot's default normalization_mapping, so it is left as is."""
    config = small(V0_3)
    config["input_features"] = {"observation.environment_state": {"type": "ENV", "shape": [16]},
                                "observation.state": {"type": "STATE", "shape": [2]}}
    policy = parapolicy.load_policy(write_dir(tmp_path / "env", config, "buffers"))
    assert policy.normalizer.modes["observation.environment_state"] == "IDENTITY"
    x = torch.rand(1, 2, 16) * 500
    assert torch.equal(policy.normalizer.normalize("observation.environment_state", x), x)


def test_quantile_modes_use_their_statistics(tmp_path):
    config = small(V0_6)
    config["normalization_mapping"] = {"VISUAL": "MEAN_STD", "STATE": "QUANTILES", "ACTION": "QUANTILE10"}
    policy = parapolicy.load_policy(write_dir(tmp_path / "q", config, "processor"))
    stats = policy.normalizer.stats
    q01, q99 = stats["observation.state"]["q01"], stats["observation.state"]["q99"]
    assert torch.allclose(policy.normalizer.normalize("observation.state", q99[None]), torch.ones(1, 2))
    assert torch.allclose(policy.normalizer.normalize("observation.state", q01[None]), -torch.ones(1, 2))
    q10, q90 = stats["action"]["q10"], stats["action"]["q90"]
    assert torch.allclose(policy.normalizer.unnormalize("action", torch.zeros(1, 2)), (q10 + q90)[None] / 2)


def test_export_to_each_layout_round_trips(tmp_path):
    config = small(V0_6)
    config["num_inference_steps"] = 10  # a short loop: this test is about layouts
    source = parapolicy.load_policy(write_dir(tmp_path / "src", config, "processor"))
    obs = lerobot_obs(source, seed=2)
    want = source.predict_action(obs, generator=torch.Generator().manual_seed(5))["action"]
    for era in ERA_CONFIGS:
        out = export_lerobot(source, str(tmp_path / era), era=era)
        assert list(json.load(open(os.path.join(out, "config.json")))) == list(ERA_CONFIGS[era])
        has_processor = os.path.exists(os.path.join(out, "policy_preprocessor.json"))
        assert has_processor == (era not in ("hub-2024", "0.3"))
        got = parapolicy.load_policy(out).predict_action(obs, generator=torch.Generator().manual_seed(5))["action"]
        # <= 0.3 layouts use LeRobot's older min/max formula (x-min)/(max-min+1e-8): float rounding apart
        assert torch.equal(got, want) if has_processor else (got - want).abs().max() < 1e-3, era


def test_unsupported_settings_are_named_harmless_ones_ignored(tmp_path):
    config = small(V0_6)
    config["some_future_training_flag"] = {"anything": [1, 2]}
    config["compile_model"] = True
    parapolicy.load_policy(write_dir(tmp_path / "ok", config, "processor"))
    for field, value, message in [("resize_shape", [64, 64], "resize_shape=\\[64, 64\\]"),
                                  ("vision_backbone", "resnet50", "vision_backbone='resnet50'"),
                                  ("use_peft", True, "use_peft=true")]:
        bad = dict(small(V0_6), **{field: value})
        d = tmp_path / field
        write_dir(d, small(V0_6), "processor")
        json.dump(bad, open(d / "config.json", "w"))
        with pytest.raises(CheckpointError, match=f"unsupported settings: {message}"):
            parapolicy.load_policy(d)


def test_config_without_type_or_features_is_refused(tmp_path):
    d = write_dir(tmp_path / "x", small(HUB_2024), "buffers")
    config = small(HUB_2024)
    del config["input_shapes"]
    json.dump(config, open(d + "/config.json", "w"))
    with pytest.raises(CheckpointError, match="neither 'input_features' \\(0.2\\+\\) nor 'input_shapes' \\(2024\\)"):
        parapolicy.load_policy(d)
