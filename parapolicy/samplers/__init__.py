"""Samplers: pure functions of (denoiser, scheduler, initial noise, per-step noises).

``Sequential`` reproduces upstream DiffusionPolicy's loop; ``Picard`` is ParaDiGMS'
parallel-in-time iteration that converges to the same trajectory; ``NewtonPicard`` reaches it
in fewer rounds; ``PIADM`` (block Picard) and ``RandomizedMidpoint`` (probability-flow ODE)
trade exactness to the sequential answer for a fixed round budget.
"""

from parapolicy.samplers.common import SampleResult
from parapolicy.samplers.newton_picard import NewtonPicard
from parapolicy.samplers.noise import NoiseDraws, draw_noises
from parapolicy.samplers.piadm import PIADM, sample_piadm
from parapolicy.samplers.picard import Picard, sample_picard, warm_start_guess
from parapolicy.samplers.randomized_midpoint import RandomizedMidpoint, sample_randomized_midpoint
from parapolicy.samplers.registry import SAMPLERS, make_sampler
from parapolicy.samplers.sequential import Sequential, sample_sequential
from parapolicy.samplers.step_rules import StepRule, make_step_rule

__all__ = [
    "NewtonPicard",
    "NoiseDraws",
    "PIADM",
    "Picard",
    "RandomizedMidpoint",
    "SAMPLERS",
    "SampleResult",
    "Sequential",
    "StepRule",
    "draw_noises",
    "make_sampler",
    "make_step_rule",
    "sample_piadm",
    "sample_picard",
    "sample_randomized_midpoint",
    "sample_sequential",
    "warm_start_guess",
]
