"""CUDA checks: run with `python -m pytest -m gpu` on a machine with a GPU (skipped elsewhere)."""

import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint

import parapolicy

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _fp32_checkpoint(tmp_path, cfg, batch):
    """A random-weight checkpoint of ``cfg`` and ``batch`` observations for it, with TF32 off,
    so GPU and CPU answers compare closely."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    return tmp_path / "p.ckpt", sample_obs(cfg, batch=batch)


@needs_cuda
@pytest.mark.parametrize("name", ["unet_lowdim_global_ddpm", "unet_hybrid_image"])
def test_cuda_sequential_matches_cpu_and_picard_converges(tmp_path, name):
    ckpt, obs = _fp32_checkpoint(tmp_path, POLICY_CFGS[name](), batch=4)
    cpu = parapolicy.load_policy(ckpt).predict_action(obs, generator=torch.Generator().manual_seed(0))
    gpu_policy = parapolicy.load_policy(ckpt, device="cuda")
    gpu = gpu_policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert (gpu["action"].cpu() - cpu["action"]).abs().max() < 1e-3
    gpu_policy.set_sampler("picard", window=100, tolerance=1e-4)
    par = gpu_policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert (par["action"] - gpu["action"]).abs().max() < 1e-3
    assert par["stats"]["rounds"] < par["stats"]["nfe"]


GRAPH_SAMPLERS = [
    ("sequential", {}),
    ("picard", {"window": 7, "tolerance": 1e-4}),
    ("newton_picard", {"window": 100, "tolerance": 1e-4}),
    ("piadm", {"blocks": 3, "points": 4, "iterations": 3}),
    ("randomized_midpoint", {"blocks": 2, "points": 4, "iterations": 3}),
]


def _actions(policy, obs, seed=0):
    return policy.predict_action(obs, generator=torch.Generator().manual_seed(seed))["action_pred"]


def _dpm_cfg():
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    cfg["noise_scheduler"] = {"_target_": "diffusers.DPMSolverMultistepScheduler", "num_train_timesteps": 100,
                              "beta_schedule": "squaredcos_cap_v2"}
    cfg["num_inference_steps"] = 16
    return cfg


CFGS = {**POLICY_CFGS, "unet_lowdim_global_dpm": _dpm_cfg}


@needs_cuda
@pytest.mark.parametrize("name", ["unet_lowdim_global_ddpm", "unet_lowdim_inpaint_ddim", "unet_lowdim_global_dpm",
                                  "transformer_lowdim", "unet_hybrid_image"])
def test_cuda_graphs_give_the_eager_answer_for_every_sampler(tmp_path, name):
    ckpt, obs = _fp32_checkpoint(tmp_path, CFGS[name](), batch=3)
    policy = parapolicy.load_policy(ckpt, device="cuda")
    for sampler, settings in GRAPH_SAMPLERS:  # piadm/randomized_midpoint run on their own grid, any scheduler
        policy.set_sampler(sampler, **settings)
        eager = _actions(policy.accelerate("eager"), obs)
        graphed = _actions(policy.accelerate("cuda_graph"), obs)
        scale = 1.0 + float(eager.abs().max())
        assert float((graphed - eager).abs().max()) <= 1e-4 * scale, sampler
        assert torch.equal(_actions(policy, obs), graphed), sampler  # replays are deterministic
        if sampler in ("sequential", "picard", "newton_picard", "piadm") and not name.endswith("dpm"):
            stats = policy.predict_action(obs, generator=torch.Generator().manual_seed(0))["stats"]
            assert stats["captured"], sampler  # one replay per round
        # one graph per padded row count: batch 3 x window slots 1..7 -> 4, 8, 16, 32 rows at most
        assert policy._accelerated.shapes_built <= 8, sampler


@needs_cuda
def test_compile_gives_the_eager_answer(tmp_path):
    ckpt, obs = _fp32_checkpoint(tmp_path, POLICY_CFGS["unet_lowdim_global_ddpm"](), batch=2)
    policy = parapolicy.load_policy(ckpt, device="cuda")
    policy.set_sampler("picard", window=100, tolerance=1e-4)
    eager = _actions(policy, obs)
    compiled = _actions(policy.accelerate("compile"), obs)
    assert float((compiled - eager).abs().max()) <= 1e-4 * (1.0 + float(eager.abs().max()))


@needs_cuda
def test_a_graphed_policy_moved_to_cpu_says_so(tmp_path):
    from parapolicy.errors import AccelerationError

    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    policy = parapolicy.load_policy(tmp_path / "p.ckpt", device="cuda").accelerate("cuda_graph")
    policy.to("cpu")
    with pytest.raises(AccelerationError, match="needs CUDA but the policy is now on cpu"):
        policy.predict_action(sample_obs(cfg, batch=1))


@needs_cuda
@pytest.mark.parametrize("name", ["unet_lowdim_global_ddpm", "unet_lowdim_inpaint_ddim"])
def test_cuda_graphed_multi_round_kernel_gives_the_eager_answer(tmp_path, name):
    """Several rounds per graph replay (``rounds_per_sync``): graphed == eager within 1e-4, same rounds."""
    ckpt, obs = _fp32_checkpoint(tmp_path, POLICY_CFGS[name](), batch=3)
    policy = parapolicy.load_policy(ckpt, device="cuda")
    for sampler in ("picard", "newton_picard"):
        policy.set_sampler(sampler, window=8, tolerance=1e-4)
        one = policy.accelerate("eager").predict_action(obs, generator=torch.Generator().manual_seed(0))
        for k in (2, 5):
            policy.set_sampler(sampler, window=8, tolerance=1e-4, rounds_per_sync=k)
            eager = policy.accelerate("eager").predict_action(obs, generator=torch.Generator().manual_seed(0))
            graphed = policy.accelerate("cuda_graph").predict_action(obs, generator=torch.Generator().manual_seed(0))
            scale = 1.0 + float(eager["action_pred"].abs().max())
            assert float((graphed["action_pred"] - eager["action_pred"]).abs().max()) <= 1e-4 * scale, (sampler, k)
            assert float((eager["action_pred"] - one["action_pred"]).abs().max()) <= 1e-4 * scale, (sampler, k)
            assert graphed["stats"]["captured"] and graphed["stats"]["rounds_per_sync"] == k
            assert graphed["stats"]["rounds"] == eager["stats"]["rounds"] == one["stats"]["rounds"], (sampler, k)
