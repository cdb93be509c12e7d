"""ConditionalUnet1D: the temporal U-Net denoiser of DiffusionPolicy.

Module and parameter names follow upstream's checkpoints (``down_modules.0.0.blocks.0.
block.0.weight`` ...), so upstream state dicts load with ``strict=True``. The layout:
a sinusoidal step embedding, FiLM-conditioned residual conv blocks at each resolution,
stride-2 down/up sampling, and skip connections.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sin/cos embedding of the diffusion step."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=x.device) * -(math.log(10000) / (half - 1)))
        angles = x[:, None] * freqs[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish, held in ``self.block`` (upstream key layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, n_groups: int = 8):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv1d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, out_channels),
            nn.Mish(),
        )

    def forward(self, x):
        return self.block(x)


class _Unsqueeze(nn.Module):
    """(B, C) -> (B, C, 1): broadcast the FiLM vector over time."""

    def forward(self, x):
        return x.unsqueeze(-1)


class ConditionalResidualBlock1D(nn.Module):
    """Two conv blocks with FiLM (per-channel scale and bias, or bias only) in between."""

    def __init__(self, in_channels, out_channels, cond_dim, kernel_size=3, n_groups=8, cond_predict_scale=False):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                Conv1dBlock(in_channels, out_channels, kernel_size, n_groups),
                Conv1dBlock(out_channels, out_channels, kernel_size, n_groups),
            ]
        )
        self.out_channels = out_channels
        self.cond_predict_scale = cond_predict_scale
        film_channels = out_channels * 2 if cond_predict_scale else out_channels
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, film_channels), _Unsqueeze())
        self.residual_conv = (
            nn.Conv1d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x, cond):
        out = self.blocks[0](x)
        film = self.cond_encoder(cond)
        if self.cond_predict_scale:
            film = film.reshape(film.shape[0], 2, self.out_channels, 1)
            out = film[:, 0] * out + film[:, 1]  # first half scales, second half shifts
        else:
            out = out + film
        out = self.blocks[1](out)
        return out + self.residual_conv(x)


class Downsample1d(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x):
        return self.conv(x)


class ConditionalUnet1D(nn.Module):
    """Denoiser eps(x, t | global_cond, local_cond) over action sequences (B, T, input_dim)."""

    def __init__(
        self,
        input_dim: int,
        local_cond_dim: int | None = None,
        global_cond_dim: int | None = None,
        diffusion_step_embed_dim: int = 256,
        down_dims: Sequence[int] = (256, 512, 1024),
        kernel_size: int = 3,
        n_groups: int = 8,
        cond_predict_scale: bool = False,
    ):
        super().__init__()
        dims = [input_dim, *down_dims]
        dsed = diffusion_step_embed_dim
        self.diffusion_step_encoder = nn.Sequential(
            SinusoidalPosEmb(dsed), nn.Linear(dsed, dsed * 4), nn.Mish(), nn.Linear(dsed * 4, dsed)
        )
        cond_dim = dsed + (global_cond_dim or 0)

        def block(cin, cout):
            return ConditionalResidualBlock1D(cin, cout, cond_dim, kernel_size, n_groups, cond_predict_scale)

        pairs = list(zip(dims[:-1], dims[1:]))
        self.local_cond_encoder = None
        if local_cond_dim:
            # upstream keeps two encoders but only ever adds the first one's output
            self.local_cond_encoder = nn.ModuleList([block(local_cond_dim, down_dims[0]), block(local_cond_dim, down_dims[0])])
        mid = down_dims[-1]
        self.mid_modules = nn.ModuleList([block(mid, mid), block(mid, mid)])
        self.down_modules = nn.ModuleList(
            nn.ModuleList(
                [block(cin, cout), block(cout, cout), Downsample1d(cout) if i < len(pairs) - 1 else nn.Identity()]
            )
            for i, (cin, cout) in enumerate(pairs)
        )
        self.up_modules = nn.ModuleList(
            nn.ModuleList([block(cout * 2, cin), block(cin, cin), Upsample1d(cin)]) for cin, cout in reversed(pairs[1:])
        )
        self.final_conv = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size), nn.Conv1d(down_dims[0], input_dim, 1)
        )

    def forward(self, sample, timestep, local_cond=None, global_cond=None):
        x = sample.transpose(1, 2)  # (B, C, T)
        steps = torch.as_tensor(timestep, device=sample.device)
        if steps.dim() == 0:
            steps = steps[None]
        steps = steps.expand(sample.shape[0])
        cond = self.diffusion_step_encoder(steps)
        if global_cond is not None:
            cond = torch.cat([cond, global_cond], dim=-1)
        local_feature = None
        if local_cond is not None and self.local_cond_encoder is not None:
            local_feature = self.local_cond_encoder[0](local_cond.transpose(1, 2), cond)
        skips = []
        for i, (res1, res2, down) in enumerate(self.down_modules):
            x = res1(x, cond)
            if i == 0 and local_feature is not None:
                x = x + local_feature
            x = res2(x, cond)
            skips.append(x)
            x = down(x)
        for mid in self.mid_modules:
            x = mid(x, cond)
        for res1, res2, up in self.up_modules:
            x = torch.cat((x, skips.pop()), dim=1)
            x = res2(res1(x, cond), cond)
            x = up(x)
        return self.final_conv(x).transpose(1, 2)
