"""Anderson-accelerated Picard: fewer rounds to the same fixed point.

Type-II Anderson mixing (as used for parallel diffusion sampling by ParaTAA, Tang et al.
2024, arXiv 2402.09970) applied between Picard rounds: the last ``memory`` Picard
updates G(X_k) and residuals F_k = G(X_k) - X_k over the states all of them share (the
window slides) give, per sample, the least-squares combination that best cancels the
residual; the next iterate is G(X_k) - dG @ gamma. At a fixed point every residual is zero,
so gamma = 0 and the iterate is the fixed point: the answer is the sequential one. The
mixing is dropped (plain Picard) whenever the residual grows or anything is non-finite.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.picard import Picard, sample_picard


class AndersonMixer:
    """Holds the recent (first index, X_k, G(X_k)) of one sampling call."""

    def __init__(self, memory: int, growth_limit: float = 2.0):
        self.memory, self.growth_limit = memory, growth_limit
        self.history: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self.last_residual = None
        self.fallbacks = 0

    def mix(self, first: int, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Next iterate for states first.. first+len(x)-1; ``g`` is their plain Picard update."""
        residual = float((g - x).pow(2).sum().sqrt())
        if self.last_residual is not None and residual > self.growth_limit * self.last_residual:
            self.history.clear()  # diverging: restart from plain Picard
            self.fallbacks += 1
        self.last_residual = residual
        self.history = (self.history + [(first, x, g)])[-(self.memory + 1) :]
        if len(self.history) < 2:
            return g
        lo = max(h[0] for h in self.history)
        hi = min(h[0] + h[1].shape[0] for h in self.history)
        if hi <= lo:
            self.history = self.history[-1:]
            return g
        xs = [h[1][lo - h[0] : hi - h[0]] for h in self.history]
        gs = [h[2][lo - h[0] : hi - h[0]] for h in self.history]
        batch = xs[0].shape[1]

        def per_sample(t):  # (K, B, ...) -> (B, K * prod(...))
            return t.transpose(0, 1).reshape(batch, -1).double()

        fs = [per_sample(gk - xk) for gk, xk in zip(gs, xs)]
        gflat = [per_sample(gk) for gk in gs]
        d_f = torch.stack([b - a for a, b in zip(fs[:-1], fs[1:])], dim=-1)  # (B, n, m)
        d_g = torch.stack([b - a for a, b in zip(gflat[:-1], gflat[1:])], dim=-1)
        gamma = torch.linalg.lstsq(d_f.cpu(), fs[-1].unsqueeze(-1).cpu()).solution.to(d_f.device)
        mixed = gflat[-1] - (d_g @ gamma).squeeze(-1)
        if not bool(torch.isfinite(mixed).all()):
            self.history = self.history[-1:]
            self.fallbacks += 1
            return g
        out = g.clone()
        shape = gs[-1].transpose(0, 1).shape
        out[lo - first : hi - first] = mixed.to(g.dtype).reshape(shape).transpose(0, 1)
        return out


@dataclass(frozen=True)
class AcceleratedPicard(Picard):
    """Picard with Anderson mixing of the last ``memory`` rounds (same window and tolerance)."""

    memory: int = 3
    name = "accelerated_picard"

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.memory, bool) or not isinstance(self.memory, int) or self.memory < 1:
            raise SamplerConfigError(f"accelerated_picard memory must be an integer >= 1, got {self.memory!r}")

    def sample(self, denoise_fn, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, callback=None,
               init_guess=None):
        mixer = AndersonMixer(self.memory)
        result = sample_picard(denoise_fn, scheduler, x_T, noises, window=self.window, tolerance=self.tolerance,
                               cond_data=cond_data, cond_mask=cond_mask, callback=callback, init_guess=init_guess,
                               mixer=mixer)
        result.stats.update(sampler=self.name, memory=self.memory, anderson_fallbacks=mixer.fallbacks)
        return result

    def config(self) -> dict:
        return {**super().config(), "name": self.name, "memory": self.memory}
