"""CUDA checks: run with `python -m pytest -m gpu` on a machine with a GPU (skipped elsewhere)."""

import pytest
import torch
from dp_fixtures import POLICY_CFGS, sample_obs, write_checkpoint

import parapolicy

pytestmark = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize("name", ["unet_lowdim_global_ddpm", "unet_hybrid_image"])
def test_cuda_sequential_matches_cpu_and_picard_converges(tmp_path, name):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cfg = POLICY_CFGS[name]()
    write_checkpoint(tmp_path / "p.ckpt", cfg)
    obs = sample_obs(cfg, batch=4)
    cpu = parapolicy.load_policy(tmp_path / "p.ckpt").predict_action(obs, generator=torch.Generator().manual_seed(0))
    gpu_policy = parapolicy.load_policy(tmp_path / "p.ckpt", device="cuda")
    gpu = gpu_policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert (gpu["action"].cpu() - cpu["action"]).abs().max() < 1e-3
    gpu_policy.set_sampler("picard", window=100, tolerance=1e-4)
    par = gpu_policy.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert (par["action"] - gpu["action"]).abs().max() < 1e-3
    assert par["stats"]["parallel_iters"] < par["stats"]["nfe"]
