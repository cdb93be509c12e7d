"""Networks have upstream's structure: parameter counts and key names of known checkpoints."""

import torch

from parapolicy.models.transformer import TransformerForDiffusion
from parapolicy.models.unet1d import ConditionalUnet1D


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_upstream_size_lowdim_unet_has_65_8M_parameters_and_upstream_keys():
    # PushT lowdim: Da=2, global cond 20*2, dsed 256, down (256, 512, 1024), k5, g8, FiLM scale
    unet = ConditionalUnet1D(2, global_cond_dim=40, diffusion_step_embed_dim=256, down_dims=(256, 512, 1024),
                             kernel_size=5, n_groups=8, cond_predict_scale=True)
    assert _count(unet) == 65_783_298
    shapes = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert shapes["diffusion_step_encoder.1.weight"] == (1024, 256)
    assert shapes["down_modules.0.0.blocks.0.block.0.weight"] == (256, 2, 5)
    assert shapes["down_modules.0.0.cond_encoder.1.weight"] == (512, 296)  # 2*C outputs: scale then bias
    assert shapes["down_modules.0.0.residual_conv.weight"] == (256, 2, 1)
    assert "down_modules.1.2.conv.weight" in shapes and "down_modules.2.2.conv.weight" not in shapes
    assert shapes["up_modules.1.2.conv.weight"] == (256, 256, 4)  # every up stage upsamples
    assert shapes["final_conv.1.weight"] == (2, 256, 1)
    assert not any(k.startswith("local_cond_encoder") for k in shapes)


def test_image_unet_size_matches_published_hybrid_policy():
    # LeRobot/DP PushT image UNet: global cond (64+2)*2, dsed 128, down (512, 1024, 2048)
    unet = ConditionalUnet1D(2, global_cond_dim=132, diffusion_step_embed_dim=128, down_dims=(512, 1024, 2048),
                             kernel_size=5, n_groups=8, cond_predict_scale=True)
    assert _count(unet) == 251_511_938


def test_local_cond_unet_has_two_local_encoders():
    unet = ConditionalUnet1D(2, local_cond_dim=20, diffusion_step_embed_dim=32, down_dims=(32, 64), n_groups=8)
    keys = unet.state_dict().keys()
    assert "local_cond_encoder.0.blocks.0.block.0.weight" in keys and "local_cond_encoder.1.residual_conv.weight" in keys


def test_transformer_keys_masks_and_buffers():
    t = TransformerForDiffusion(2, 2, 10, 2, cond_dim=20, n_layer=2, n_head=4, n_emb=32, causal_attn=True,
                                time_as_cond=True, obs_as_cond=True, n_cond_layers=0)
    sd = t.state_dict()
    assert sd["_dummy_variable"].shape == (0,)
    assert sd["pos_emb"].shape == (1, 10, 32) and sd["cond_pos_emb"].shape == (1, 3, 32)
    assert {"encoder.0.weight", "encoder.2.weight", "decoder.layers.1.multihead_attn.in_proj_weight",
            "decoder.layers.0.norm3.weight", "ln_f.weight", "head.weight"} <= set(sd)
    # causal self-attention; action token t sees condition tokens s <= t + 1
    assert sd["mask"][3, 4] == float("-inf") and sd["mask"][4, 3] == 0
    assert sd["memory_mask"][0, 1] == 0 and sd["memory_mask"][0, 2] == float("-inf")


def test_scalar_and_per_row_timesteps_embed_identically():
    unet = ConditionalUnet1D(2, global_cond_dim=4, diffusion_step_embed_dim=16, down_dims=(16, 32), n_groups=4)
    x, cond = torch.randn(3, 8, 2), torch.randn(3, 4)
    assert torch.equal(unet(x, torch.tensor(7), global_cond=cond), unet(x, torch.full((3,), 7), global_cond=cond))
