"""LinearNormalizer: per-field affine maps, stored as upstream stores them.

normalize is ``x * scale + offset`` and unnormalize ``(x - offset) / scale``, each applied
after casting to the parameters' dtype and flattening to (-1, len(scale)), exactly as
upstream, so normalized values are bit-identical. State-dict keys:
``params_dict.<field>.{scale,offset,input_stats.{min,max,mean,std}}``.
"""

from __future__ import annotations

import torch
from torch import nn

from parapolicy.tensor_safety import MAX_FEATURE_DIM, check_tensor_safe, key_path
from parapolicy.errors import CheckpointError

STAT_NAMES = ("min", "max", "mean", "std")


def _check_field(where: str, scale, offset, stats: dict) -> None:
    tensors = {"scale": scale, "offset": offset, **{f"input_stats.{k}": v for k, v in stats.items()}}
    for part, tensor in tensors.items():
        check_tensor_safe(f"{where}.{part}", tensor)
    size = scale.numel()
    if scale.dim() != 1 or not 1 <= size <= MAX_FEATURE_DIM:
        raise CheckpointError(f"{where}.scale must be 1-D with 1 to {MAX_FEATURE_DIM} entries, found shape {tuple(scale.shape)}")
    for part, tensor in tensors.items():
        if tuple(tensor.shape) != (size,):
            raise CheckpointError(f"{where}.{part} must have shape ({size},) like its scale, found {tuple(tensor.shape)}")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}.{part} must be finite, found {tensor[~torch.isfinite(tensor)][:4].tolist()}")


class LinearNormalizer(nn.Module):
    def __init__(self):
        super().__init__()
        self.params_dict = nn.ParameterDict()

    @property
    def fields(self) -> list[str]:
        return list(self.params_dict.keys())

    def set_field(self, name: str, scale, offset, input_stats: dict | None = None) -> None:
        stats = input_stats or {}
        entry = nn.ParameterDict(
            {
                "scale": nn.Parameter(torch.as_tensor(scale, dtype=torch.float32).clone(), requires_grad=False),
                "offset": nn.Parameter(torch.as_tensor(offset, dtype=torch.float32).clone(), requires_grad=False),
                "input_stats": nn.ParameterDict(
                    {
                        k: nn.Parameter(torch.as_tensor(stats[k], dtype=torch.float32).clone(), requires_grad=False)
                        for k in STAT_NAMES
                        if k in stats
                    }
                ),
            }
        )
        self.params_dict[name] = entry

    def load_from_flat(self, flat: dict, prefix: str = "normalizer.params_dict.", origin: str = "") -> None:
        """Rebuild every field from flat state-dict keys (upstream's loading does the same).

        Each field is checked before anything is copied: float tensors stored in full (no
        expanded views to clone), 1-D scale/offset/stats of one common size, all finite.
        """
        fields: dict[str, dict] = {}
        for key, value in flat.items():
            if not key.startswith(prefix):
                continue
            name, _, rest = key[len(prefix) :].partition(".")
            fields.setdefault(name, {})[rest] = value
        for name, entries in fields.items():
            if "scale" not in entries or "offset" not in entries:
                raise CheckpointError(f"{origin}: normalizer field {name!r} lacks scale/offset")
            stats = {k.split(".", 1)[1]: v for k, v in entries.items() if k.startswith("input_stats.")}
            unknown = sorted(k for k in entries if k not in ("scale", "offset") and k.split(".", 1)[-1] not in STAT_NAMES)
            if unknown:
                raise CheckpointError(f"{origin}: normalizer field {name!r} has unknown entries {unknown[:4]}")
            _check_field(key_path(f"{origin}: normalizer.params_dict", name), entries["scale"], entries["offset"], stats)
            self.set_field(name, entries["scale"], entries["offset"], stats)

    def _affine(self, name: str, x: torch.Tensor, forward: bool) -> torch.Tensor:
        entry = self.params_dict[name]
        scale, offset = entry["scale"], entry["offset"]
        x = x.to(device=scale.device, dtype=scale.dtype)
        shape = x.shape
        x = x.reshape(-1, scale.shape[0])
        x = x * scale + offset if forward else (x - offset) / scale
        return x.reshape(shape)

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self._affine(name, x, forward=True)

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return self._affine(name, x, forward=False)

    # keep nn.Module.__call__ unused: the normalizer is not a forward pass
    def forward(self, *args, **kwargs):  # pragma: no cover - guard
        raise TypeError("use normalize(name, x) / unnormalize(name, x)")


def fit_limits(data: torch.Tensor, output_min=-1.0, output_max=1.0, range_eps=1e-4) -> dict:
    """Upstream's 'limits' mode: map each dimension's [min, max] to [-1, 1].

    Dimensions whose range is below ``range_eps`` keep scale 1 and are centred instead.
    """
    x = torch.as_tensor(data, dtype=torch.float32).reshape(-1, data.shape[-1])
    dmin, dmax = x.min(0).values, x.max(0).values
    span = dmax - dmin
    ignore = span < range_eps
    span = torch.where(ignore, torch.full_like(span, output_max - output_min), span)
    scale = (output_max - output_min) / span
    offset = output_min - scale * dmin
    offset = torch.where(ignore, (output_max + output_min) / 2 - dmin, offset)
    stats = {"min": dmin, "max": dmax, "mean": x.mean(0), "std": x.std(0)}
    return {"scale": scale, "offset": offset, "input_stats": stats}
