"""The native hybrid encoder equals the one upstream builds through robomimic.

Skipped unless robomimic (0.3.x) is importable; it is an optional heavy dependency
(`pip install robomimic==0.3.0 --no-deps termcolor h5py psutil matplotlib tensorboard`).
"""

import sys
import types

import pytest
import torch
from torch import nn

from parapolicy.models.vision import RobomimicObsEncoder


def _robomimic():
    if "mujoco_py" not in sys.modules:  # robomimic's env module imports it; never used here
        stub = types.ModuleType("mujoco_py")
        stub.builder = types.SimpleNamespace(MujocoException=Exception)
        sys.modules["mujoco_py"] = stub
    return pytest.importorskip("robomimic.algo")


def _upstream_encoder(obs_shapes, rgb_keys, crop):
    """DP's recipe: bc config with image defaults, algo_factory, keep the obs encoder, BN -> GN."""
    algo = _robomimic()
    import robomimic.utils.obs_utils as obs_utils
    from robomimic.config import config_factory
    from robomimic.scripts.generate_paper_configs import modify_config_for_default_image_exp

    config = config_factory("bc")
    config.unlock()
    config.algo.rnn.enabled = True
    modify_config_for_default_image_exp(config)
    with config.values_unlocked():
        config.observation.modalities.obs.low_dim = [k for k in obs_shapes if k not in rgb_keys]
        config.observation.modalities.obs.rgb = list(rgb_keys)
        config.observation.encoder.rgb.obs_randomizer_kwargs.crop_height = crop[0]
        config.observation.encoder.rgb.obs_randomizer_kwargs.crop_width = crop[1]
    obs_utils.initialize_obs_utils_with_config(config)
    policy = algo.algo_factory("bc", config, obs_key_shapes=obs_shapes, ac_dim=2, device="cpu")
    encoder = policy.nets["policy"].nets["encoder"].nets["obs"]

    def swap(module):
        for name, child in module.named_children():
            if isinstance(child, nn.BatchNorm2d):
                setattr(module, name, nn.GroupNorm(child.num_features // 16, child.num_features))
            else:
                swap(child)

    swap(encoder)
    return encoder


def test_state_dict_keys_shapes_and_features_match_robomimic():
    obs_shapes = {"image": [3, 96, 96], "agent_pos": [2]}
    upstream = _upstream_encoder(obs_shapes, ["image"], (84, 84)).eval()
    native = RobomimicObsEncoder(obs_shapes, ["image"], crop_shape=(84, 84), group_norm=True).eval()
    theirs = {k: tuple(v.shape) for k, v in upstream.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in native.state_dict().items()}
    assert ours == theirs
    native.load_state_dict(upstream.state_dict(), strict=True)
    obs = {"image": torch.rand(4, 3, 96, 96), "agent_pos": torch.rand(4, 2)}
    # upstream's eval path: DP swaps robomimic's random crop for a center crop
    cropped = dict(obs, image=obs["image"][..., 6:90, 6:90])
    with torch.no_grad():
        feats = []
        for key in obs_shapes:
            x = cropped[key]
            net = upstream.obs_nets[key]
            if net is not None:
                x = torch.relu(net(x))
            feats.append(x.reshape(4, -1))
        want = torch.cat(feats, -1)
        got = native(obs)
    assert got.shape == (4, 66)
    assert torch.allclose(got, want, atol=1e-6)
