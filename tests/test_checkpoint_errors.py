"""Bad checkpoints and bad observations get one clear error each."""

import os
import pickle

import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint

import parapolicy
from parapolicy.checkpoints.dp_workspace import save_dp_workspace
from parapolicy.errors import CheckpointError, ObservationError, UntrustedCheckpointError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "lowdim.ckpt"
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    return path, cfg, write_checkpoint(path, cfg)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        parapolicy.load_policy(tmp_path / "nope.ckpt")


def test_directory_that_is_not_lerobot(tmp_path):
    with pytest.raises(CheckpointError, match="not a LeRobot pretrained_model dir"):
        parapolicy.load_policy(tmp_path)


def test_formats_are_one_table_asked_in_order(tmp_path, monkeypatch):
    from parapolicy.checkpoints.formats import DP_WORKSPACE, FORMATS, HUB_ID, LEROBOT_DIR, find_format

    monkeypatch.chdir(tmp_path)
    assert FORMATS == (HUB_ID, LEROBOT_DIR, DP_WORKSPACE)
    (tmp_path / "run.ckpt").write_bytes(b"")
    assert find_format("lerobot/diffusion_pusht") is HUB_ID
    assert find_format("run.ckpt") is DP_WORKSPACE  # any file: what it holds is checked when read
    with pytest.raises(CheckpointError, match=r"^'\.' is a directory but not a LeRobot pretrained_model dir "
                                              r"\(needs config.json \+ model.safetensors\)$"):
        find_format(".")


def test_corrupt_file(tmp_path):
    path = tmp_path / "garbage.ckpt"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        parapolicy.load_policy(path)


def test_truncated_file(good, tmp_path):
    data = good[0].read_bytes()
    path = tmp_path / "truncated.ckpt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a torch checkpoint|damaged or truncated"):
        parapolicy.load_policy(path)


def test_empty_file(tmp_path):
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        parapolicy.load_policy(tmp_path / "empty.ckpt")


def test_plain_state_dict_is_not_a_dp_checkpoint(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match=r"not a DiffusionPolicy workspace checkpoint: expected a dict with keys \['cfg', 'state_dicts'\]"):
        parapolicy.load_policy(tmp_path / "sd.pt")


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickle_naming_arbitrary_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"cfg": Exploit(), "state_dicts": {}}, path, pickle_module=pickle)
    with pytest.raises(UntrustedCheckpointError, match=r"references (posix|os)\.system.*trust_checkpoint=True"):
        parapolicy.load_policy(path)


def test_unknown_policy_target(good, tmp_path):
    path, cfg, state = good
    cfg = dict(cfg, _target_="my_lab.policies.FancyPolicy")
    save_dp_workspace(str(tmp_path / "x.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError, match="unsupported policy class 'my_lab.policies.FancyPolicy'"):
        parapolicy.load_policy(tmp_path / "x.ckpt")


def test_unknown_scheduler_target(tmp_path):
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    state = write_checkpoint(tmp_path / "a.ckpt", cfg)
    cfg["noise_scheduler"]["_target_"] = "os.system"
    save_dp_workspace(str(tmp_path / "b.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError, match="unsupported noise scheduler 'os.system'"):
        parapolicy.load_policy(tmp_path / "b.ckpt")


def test_missing_weights_are_listed(good, tmp_path):
    path, cfg, state = good
    ema = dict(state["ema_model"])
    del ema["model.final_conv.1.weight"]
    save_dp_workspace(str(tmp_path / "m.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
    with pytest.raises(CheckpointError, match=r"missing weights 'model\.final_conv\.1\.weight'"):
        parapolicy.load_policy(tmp_path / "m.ckpt")


def test_shape_mismatch_is_reported(good, tmp_path):
    path, cfg, state = good
    cfg = dict(cfg, model=dict(cfg["model"], down_dims=[16, 64]))
    save_dp_workspace(str(tmp_path / "s.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError, match=r"weight shapes do not match the cfg: 'model\.mid_modules\.0"):
        parapolicy.load_policy(tmp_path / "s.ckpt")


def test_model_dims_that_disagree_with_the_policy_cfg(good, tmp_path):
    path, cfg, state = good
    cfg = dict(cfg, model=dict(cfg["model"], global_cond_dim=14))
    save_dp_workspace(str(tmp_path / "s.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError, match="global_cond_dim must be 12 for this policy's global conditioning, found 14"):
        parapolicy.load_policy(tmp_path / "s.ckpt")


def test_normalizer_that_disagrees_with_cfg_dims(good, tmp_path):
    path, cfg, state = good
    ema = dict(state["ema_model"])
    for name in ("scale", "offset", "input_stats.min", "input_stats.max"):
        ema[f"normalizer.params_dict.obs.{name}"] = torch.ones(7)
    save_dp_workspace(str(tmp_path / "n.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
    with pytest.raises(CheckpointError, match="normalizer field 'obs' has 7 entries but the cfg says 'obs' has 6"):
        parapolicy.load_policy(tmp_path / "n.ckpt")


def test_use_ema_without_ema_weights(good, tmp_path):
    path, cfg, state = good
    save_dp_workspace(str(tmp_path / "e.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, {"model": state["model"]})
    with pytest.raises(CheckpointError, match="no 'ema_model' weights"):
        parapolicy.load_policy(tmp_path / "e.ckpt")
    assert parapolicy.load_policy(tmp_path / "e.ckpt", use_ema=False).spec.source["weights"] == "model"


def test_unresolved_eval_interpolations_are_evaluated_safely(good, tmp_path):
    path, cfg, state = good
    stored = {"horizon": 16, "n_obs_steps": 2, "n_latency_steps": 0, "training": {"use_ema": True},
              "policy": dict(cfg, horizon="${horizon}", n_obs_steps="${n_obs_steps}",
                             n_action_steps="${eval:'8-${n_latency_steps}'}")}
    save_dp_workspace(str(tmp_path / "i.ckpt"), stored, state)
    policy = parapolicy.load_policy(tmp_path / "i.ckpt")
    assert (policy.spec.horizon, policy.spec.n_action_steps) == (16, 8)
    stored["policy"]["n_action_steps"] = "${eval:'__import__(\"os\").getpid()'}"
    save_dp_workspace(str(tmp_path / "j.ckpt"), stored, state)
    with pytest.raises(CheckpointError, match="not plain arithmetic; pass trust_checkpoint=True"):
        parapolicy.load_policy(tmp_path / "j.ckpt")


@pytest.mark.parametrize(
    "obs, message",
    [
        ({}, r"obs is missing keys \['obs'\]"),
        ({"obs": torch.zeros(2, 2, 5)}, r"obs\['obs'\] has shape \(2, 2, 5\), expected \(B, >=2, 6\)"),
        ({"obs": torch.zeros(2, 1, 6)}, r"obs\['obs'\] has shape \(2, 1, 6\), expected \(B, >=2, 6\)"),
        ({"obs": torch.full((2, 2, 6), float("nan"))}, r"obs\['obs'\] contains NaN or inf"),
    ],
)
def test_bad_observations(good, obs, message):
    policy = parapolicy.load_policy(good[0])
    with pytest.raises(ObservationError, match=message):
        policy.predict_action(obs)


def test_image_obs_with_wrong_image_size(tmp_path):
    cfg = POLICY_CFGS["unet_hybrid_image"]()
    write_checkpoint(tmp_path / "img.ckpt", cfg)
    policy = parapolicy.load_policy(tmp_path / "img.ckpt")
    obs = sample_obs(cfg)
    obs["image"] = torch.rand(3, 2, 3, 96, 96)
    with pytest.raises(ObservationError, match=r"obs\['image'\] has shape \(3, 2, 3, 96, 96\), expected \(B, >=2, 3, 32, 32\)"):
        policy.predict_action(obs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_asking_for_cuda_without_a_gpu_is_one_clear_error(tmp_path):
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    with pytest.raises(CheckpointError, match="no CUDA device is available here"):
        parapolicy.load_policy(tmp_path / "p.ckpt", device="cuda")
