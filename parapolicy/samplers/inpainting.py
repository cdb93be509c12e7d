"""Inpainting: entries of the trajectory held at known values, as upstream's conditioning mask."""

from __future__ import annotations

import torch


def impose(x: torch.Tensor, cond_data: torch.Tensor | None, cond_mask: torch.Tensor | None) -> torch.Tensor:
    """Overwrite the inpainted entries, as upstream does before every call and at the end.

    ``x`` may carry extra leading (window) dims; the condition broadcasts over them.
    """
    if cond_mask is None:
        return x
    return torch.where(cond_mask, cond_data, x)
