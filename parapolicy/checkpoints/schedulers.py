"""Noise schedulers named by a checkpoint, mapped onto diffusers classes (allow-listed)."""

from __future__ import annotations

from parapolicy.errors import CheckpointError

_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler")


def build_scheduler(cfg: dict):
    """Instantiate ``cfg['_target_']`` (e.g. ``diffusers.schedulers.scheduling_ddpm.DDPMScheduler``)."""
    import diffusers

    cfg = dict(cfg)
    target = str(cfg.pop("_target_", ""))
    name = target.rsplit(".", 1)[-1]
    if not target.startswith("diffusers") or name not in _SCHEDULERS:
        raise CheckpointError(f"unsupported noise scheduler {target!r}; supported: {', '.join(_SCHEDULERS)}")
    try:
        return getattr(diffusers, name)(**cfg)
    except TypeError as exc:
        raise CheckpointError(f"cannot build {name} from the checkpoint's settings: {exc}") from None
