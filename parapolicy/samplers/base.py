"""What every sampler declares: its name, its capabilities and its settings (the dataclass fields).

The Policy, the controller and real-time chunking ask a sampler what it can do, never which
one it is. Defining a subclass with its own ``name`` registers it (``registry.SAMPLERS``).
"""

from __future__ import annotations

import dataclasses

from parapolicy.samplers.registry import register


class SamplerBase:
    """Mixin for dataclass samplers: ``config()`` is the name plus the dataclass fields (private
    ``_`` fields, such as caches, are state, not settings)."""

    name = "sampler"
    exact = False  # True: converges to the sequential sampler's answer for the same draws (tolerance aside)
    accepts_initial_guess = False  # True: uses problem.init_guess as its starting trajectory
    supports_prefix = False  # True: exact on the scheduler's own steps (denoise(x, t) with its integer t): RTC applies
    capturable = False  # True: its rounds run as CUDA-graph replays under policy.accelerate("cuda_graph")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            register(cls)

    @classmethod
    def capabilities(cls) -> dict:
        return {flag: bool(getattr(cls, flag)) for flag in CAPABILITIES}

    def config(self) -> dict:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                      if not f.name.startswith("_")}}

    def extra_draws(self, x_T, generator) -> dict:
        """Random tensors this sampler needs beyond x_T and the per-step noises, drawn after them."""
        return {}


CAPABILITIES = ("exact", "accepts_initial_guess", "supports_prefix", "capturable")
