"""What one ``predict_action`` call returns: a typed action chunk that still reads like upstream's dict.

Code inside parapolicy reads the fields (``chunk.action_pred``, ``chunk.stats.sampling.rounds``,
``chunk.stats.latency_ms``); code written against upstream's DiffusionPolicy keeps working
with ``out["action"]``, ``"sample" in out`` and ``out["stats"]["rounds"]``, because both
classes are also mappings over the same names the dict had.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field, fields

import torch

from parapolicy.samplers import SampleStats


@dataclass(frozen=True, eq=False)
class ChunkStats(Mapping):
    """The sampler's ``SampleStats`` and the call's wall time (None until ``predict_action`` timed it).

    As a mapping it is the flat dict ``predict_action`` always returned: the sampler's
    ``as_dict()`` names, then ``latency_ms``; it compares equal to that dict.
    """

    sampling: SampleStats
    latency_ms: float | None = None

    def as_dict(self) -> dict:
        timed = {} if self.latency_ms is None else {"latency_ms": self.latency_ms}
        return {**self.sampling.as_dict(), **timed}

    def __getitem__(self, key):
        return self.as_dict()[key]

    def __iter__(self):
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


@dataclass(eq=False)
class ActionChunk(MutableMapping):
    """Actions in env units, the normalized sample behind them, and how the sampler got there.

    ``action`` (B, n_action_steps, Da), ``action_pred`` (B, horizon, Da), ``sample`` (B, horizon, D),
    ``denoiser_outputs`` (steps, B, horizon, D) when the sampler kept them, and for inpainting
    lowdim policies ``obs_pred``/``action_obs_pred``. As a mapping a field set to None is absent,
    as the key was from the dict; other keys a caller adds are kept beside the fields.
    """

    action: torch.Tensor
    action_pred: torch.Tensor
    sample: torch.Tensor
    stats: ChunkStats | Mapping
    denoiser_outputs: torch.Tensor | None = None
    obs_pred: torch.Tensor | None = None
    action_obs_pred: torch.Tensor | None = None
    extra: dict = field(default_factory=dict, repr=False)

    def _names(self) -> list:
        return [f.name for f in fields(self) if f.name != "extra"]

    def __getitem__(self, key):
        if key in self._names() and getattr(self, key) is not None:
            return getattr(self, key)
        return self.extra[key]

    def __setitem__(self, key, value) -> None:
        if key in self._names():
            setattr(self, key, value)
        else:
            self.extra[key] = value

    def __delitem__(self, key) -> None:
        if key in self._names() and getattr(self, key) is not None:
            setattr(self, key, None)
        else:
            del self.extra[key]

    def __iter__(self):
        yield from (name for name in self._names() if getattr(self, name) is not None)
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)
