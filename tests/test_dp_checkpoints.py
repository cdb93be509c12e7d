"""Loading upstream workspace checkpoints reproduces upstream predict_action exactly."""

import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint
from tests.support.upstream_reference import upstream_predict_action

import parapolicy


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpts")
    out = {}
    for name, make_cfg in POLICY_CFGS.items():
        cfg = make_cfg()
        path = root / f"{name}.ckpt"
        out[name] = (path, cfg, write_checkpoint(path, cfg))
    return out


@pytest.mark.parametrize("name", list(POLICY_CFGS))
def test_sequential_predict_action_equals_upstream_semantics(checkpoints, name):
    path, cfg, state_dicts = checkpoints[name]
    policy = parapolicy.load_policy(path)
    obs = sample_obs(cfg, batch=3, seed=5)
    got = policy.predict_action(obs, generator=torch.Generator().manual_seed(42))
    want_action, want_pred = upstream_predict_action(cfg, state_dicts["ema_model"], obs, torch.Generator().manual_seed(42))
    assert got["action"].shape == (3, cfg["n_action_steps"], want_action.shape[-1])
    assert got["action_pred"].shape == want_pred.shape
    assert (got["action_pred"] - want_pred).abs().max() <= 1e-5
    assert (got["action"] - want_action).abs().max() <= 1e-5
    assert got["stats"]["nfe"] == cfg["num_inference_steps"]
    assert policy.spec.source["weights"] == "ema_model"


def test_model_weights_used_when_cfg_disables_ema(tmp_path):
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    state_dicts = write_checkpoint(tmp_path / "no_ema.ckpt", cfg, use_ema=False)
    policy = parapolicy.load_policy(tmp_path / "no_ema.ckpt")
    obs = sample_obs(cfg)
    got = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    want, _ = upstream_predict_action(cfg, state_dicts["model"], obs, torch.Generator().manual_seed(0))
    assert (got - want).abs().max() <= 1e-5
    assert policy.spec.source["weights"] == "model"


@pytest.mark.parametrize(
    "name, mutate",
    [
        ("unet_lowdim_global_ddpm", lambda p: setattr(p.spec, "action_start", p.spec.action_start + 1)),
        ("unet_lowdim_inpaint_ddim", lambda p: setattr(p.spec, "action_start", p.spec.action_start - 1)),
        ("unet_hybrid_image", lambda p: setattr(p.obs_encoder, "obs_shapes", dict(reversed(p.obs_encoder.obs_shapes.items())))),
        ("unet_image", lambda p: setattr(p.obs_encoder, "rgb_keys", []) or p.obs_encoder.low_dim_keys.insert(0, "image")),
        ("transformer_lowdim", lambda p: setattr(p, "normalizer", _SwappedNormalizer(p.normalizer))),
    ],
)
def test_reference_comparison_catches_wrong_slice_or_feature_order(checkpoints, name, mutate):
    """The equality above is sensitive: a wrong slice or feature order breaks it."""
    path, cfg, state_dicts = checkpoints[name]
    policy = parapolicy.load_policy(path)
    mutate(policy)
    obs = sample_obs(cfg, seed=1)
    want, _ = upstream_predict_action(cfg, state_dicts["ema_model"], obs, torch.Generator().manual_seed(3))
    try:
        got = policy.predict_action(obs, generator=torch.Generator().manual_seed(3))["action"]
    except RuntimeError:
        return  # a feature-size mismatch is also a detected error
    assert (got - want).abs().max() > 1e-3


class _SwappedNormalizer(torch.nn.Module):
    """normalize and unnormalize exchanged: the wrong direction."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.fields = inner, inner.fields

    def normalize(self, key, x):
        return self.inner.unnormalize(key, x)

    def unnormalize(self, key, x):
        return self.inner.normalize(key, x)


def test_wrong_draw_order_changes_actions(checkpoints):
    """One (K,B,T,D) draw instead of per-step draws gives different numbers."""
    path, cfg, _ = checkpoints["unet_lowdim_global_ddpm"]
    policy = parapolicy.load_policy(path)
    obs = sample_obs(cfg)
    a = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    b = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["action"]
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(0)
    torch.randn(1, generator=g)  # shift the stream by one draw
    c = policy.predict_action(obs, generator=g)["action"]
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["unet_lowdim_global_ddpm", "unet_lowdim_inpaint_ddim", "transformer_hybrid_image"])
def test_picard_on_loaded_policy_converges_to_sequential(checkpoints, name):
    path, cfg, _ = checkpoints[name]
    policy = parapolicy.load_policy(path)
    obs = sample_obs(cfg, batch=2, seed=9)
    seq = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))["action"]
    errors = []
    for tol in (1e-1, 1e-3, 1e-6):
        policy.set_sampler("picard", window=len(policy.scheduler.timesteps), tolerance=tol)
        out = policy.predict_action(obs, generator=torch.Generator().manual_seed(1))
        errors.append(float((out["action"] - seq).abs().max()))
        assert out["stats"]["sampler"] == "picard"
    policy.set_sampler("sequential")
    assert errors[-1] < 1e-4
    assert errors[-1] <= errors[0]
