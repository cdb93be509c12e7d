"""Sampler lookup by name, for ``Policy.set_sampler`` and the Hydra configs."""

from __future__ import annotations

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers.jacobian_newton import JacobianNewton
from parapolicy.samplers.newton_picard import NewtonPicard
from parapolicy.samplers.newton_prior import NewtonPrior
from parapolicy.samplers.piadm import PIADM
from parapolicy.samplers.picard import Picard
from parapolicy.samplers.randomized_midpoint import RandomizedMidpoint
from parapolicy.samplers.sequential import Sequential

SAMPLERS = {"sequential": Sequential, "picard": Picard, "newton_picard": NewtonPicard, "piadm": PIADM,
            "randomized_midpoint": RandomizedMidpoint, "newton_prior": NewtonPrior,
            "jacobian_newton": JacobianNewton}


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
