"""Sampler lookup by name: every ``SamplerBase`` subclass that names itself registers here.

A sampler is one module: defining the class (with ``name`` and its capabilities) is all it
takes for ``Policy.set_sampler``, the rollout CLI (``sampler=<name>``, its settings from the
dataclass defaults) and the real-time controller to know it.
"""

from __future__ import annotations

from parapolicy.errors import SamplerConfigError

SAMPLERS: dict[str, type] = {}


def register(cls: type) -> type:
    """Add ``cls`` under ``cls.name``; a second class may not take a name already registered."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name.isidentifier():
        raise SamplerConfigError(f"a sampler's name must be an identifier, got {name!r} on {cls.__qualname__}")
    known = SAMPLERS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise SamplerConfigError(f"sampler name {name!r} is taken by {known.__module__}.{known.__qualname__}")
    SAMPLERS[name] = cls
    return cls


def unregister(name: str) -> None:
    """Forget a sampler (a test's toy sampler, say)."""
    SAMPLERS.pop(name, None)


def make_sampler(name: str, **settings):
    """Build a sampler from its name and settings, with one clear error for bad input."""
    try:
        cls = SAMPLERS[name]
    except (KeyError, TypeError):
        raise SamplerConfigError(f"unknown sampler {name!r}; choose one of: {', '.join(sorted(SAMPLERS))}") from None
    try:
        return cls(**settings)
    except TypeError as exc:
        raise SamplerConfigError(f"bad settings for sampler {name!r}: {exc}") from None
