"""TransformerForDiffusion: DiffusionPolicy's time-series transformer denoiser.

Action tokens attend (causally) to themselves and to condition tokens [step embedding,
observation embeddings]. Parameter and buffer names follow upstream's checkpoints,
including the persistent ``mask``/``memory_mask`` buffers and ``_dummy_variable``. The causal
flags are passed explicitly (they are what PyTorch would detect from the masks): detecting
them compares tensors on the device, which a CUDA-graph capture cannot contain.
"""

from __future__ import annotations

import torch
from torch import nn

from parapolicy.models.unet1d import SinusoidalPosEmb


def _additive_mask(allowed: torch.Tensor) -> torch.Tensor:
    return allowed.float().masked_fill(~allowed, float("-inf")).masked_fill(allowed, 0.0)


class TransformerForDiffusion(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        horizon: int,
        n_obs_steps: int | None = None,
        cond_dim: int = 0,
        n_layer: int = 12,
        n_head: int = 12,
        n_emb: int = 768,
        p_drop_emb: float = 0.1,
        p_drop_attn: float = 0.1,
        causal_attn: bool = False,
        time_as_cond: bool = True,
        obs_as_cond: bool = False,
        n_cond_layers: int = 0,
    ):
        super().__init__()
        self._dummy_variable = nn.Parameter()
        n_obs_steps = horizon if n_obs_steps is None else n_obs_steps
        tokens, cond_tokens = horizon, 1
        if not time_as_cond:
            tokens, cond_tokens = tokens + 1, cond_tokens - 1
        obs_as_cond = cond_dim > 0
        if obs_as_cond:
            assert time_as_cond, "observation tokens need the step embedding as a condition token"
            cond_tokens += n_obs_steps

        self.input_emb = nn.Linear(input_dim, n_emb)
        self.pos_emb = nn.Parameter(torch.zeros(1, tokens, n_emb))
        self.drop = nn.Dropout(p_drop_emb)
        self.time_emb = SinusoidalPosEmb(n_emb)
        self.cond_obs_emb = nn.Linear(cond_dim, n_emb) if obs_as_cond else None
        self.cond_pos_emb = None
        self.encoder = None
        self.decoder = None
        self.encoder_only = cond_tokens == 0

        def layer(cls):
            return cls(
                d_model=n_emb,
                nhead=n_head,
                dim_feedforward=4 * n_emb,
                dropout=p_drop_attn,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )

        if not self.encoder_only:
            self.cond_pos_emb = nn.Parameter(torch.zeros(1, cond_tokens, n_emb))
            if n_cond_layers > 0:
                self.encoder = nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), num_layers=n_cond_layers)
            else:
                self.encoder = nn.Sequential(nn.Linear(n_emb, 4 * n_emb), nn.Mish(), nn.Linear(4 * n_emb, n_emb))
            self.decoder = nn.TransformerDecoder(layer(nn.TransformerDecoderLayer), num_layers=n_layer)
        else:
            self.encoder = nn.TransformerEncoder(layer(nn.TransformerEncoderLayer), num_layers=n_layer)

        if causal_attn:
            idx = torch.arange(tokens)
            self.register_buffer("mask", _additive_mask(idx[:, None] >= idx[None, :]))
            if time_as_cond and obs_as_cond:
                t, s = torch.meshgrid(torch.arange(tokens), torch.arange(cond_tokens), indexing="ij")
                self.register_buffer("memory_mask", _additive_mask(t >= (s - 1)))
            else:
                self.memory_mask = None
        else:
            self.mask = None
            self.memory_mask = None

        self.ln_f = nn.LayerNorm(n_emb)
        self.head = nn.Linear(n_emb, output_dim)
        self.time_as_cond, self.obs_as_cond = time_as_cond, obs_as_cond

    def forward(self, sample, timestep, cond=None):
        steps = torch.as_tensor(timestep, device=sample.device)
        if steps.dim() == 0:
            steps = steps[None]
        steps = steps.expand(sample.shape[0])
        time_emb = self.time_emb(steps).unsqueeze(1)
        input_emb = self.input_emb(sample)
        if self.encoder_only:
            tokens = torch.cat([time_emb, input_emb], dim=1)
            x = self.drop(tokens + self.pos_emb[:, : tokens.shape[1], :])
            x = self.encoder(src=x, mask=self.mask, is_causal=self.mask is not None)[:, 1:, :]
        else:
            cond_emb = time_emb
            if self.obs_as_cond:
                cond_emb = torch.cat([cond_emb, self.cond_obs_emb(cond)], dim=1)
            memory = self.encoder(self.drop(cond_emb + self.cond_pos_emb[:, : cond_emb.shape[1], :]))
            x = self.drop(input_emb + self.pos_emb[:, : input_emb.shape[1], :])
            x = self.decoder(tgt=x, memory=memory, tgt_mask=self.mask, memory_mask=self.memory_mask,
                             tgt_is_causal=self.mask is not None)
        return self.head(self.ln_f(x))
