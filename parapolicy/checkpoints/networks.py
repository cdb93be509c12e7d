"""The networks a checkpoint describes, as one named bundle that every format's builder returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from parapolicy.policy import PolicySpec


@dataclass
class NetworkBundle:
    """Denoiser, observation encoder and (where the format states it beside them) the spec.

    Named fields, so a caller never depends on the order a builder happened to return them in.
    """

    model: nn.Module  # the denoiser: ConditionalUnet1D or TransformerForDiffusion
    obs_encoder: nn.Module | None = None  # None for low-dim policies
    spec: PolicySpec | None = None  # a DP cfg's horizons and conditioning; the LeRobot loader writes its own

    def modules(self) -> tuple:
        """The networks that exist, denoiser first."""
        return tuple(m for m in (self.model, self.obs_encoder) if m is not None)
