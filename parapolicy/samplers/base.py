"""Defaults every sampler shares: no initial guess, no extra draws, settings as its config."""

from __future__ import annotations

import dataclasses


class SamplerBase:
    """Mixin for dataclass samplers: ``config()`` is the name plus the dataclass fields."""

    name = "sampler"
    accepts_initial_guess = False  # True: uses problem.init_guess as its starting trajectory

    def config(self) -> dict:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def extra_draws(self, x_T, generator) -> dict:
        """Random tensors this sampler needs beyond x_T and the per-step noises, drawn after them."""
        return {}
