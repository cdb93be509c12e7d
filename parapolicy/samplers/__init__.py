"""Samplers in layers: step rule -> problem -> round kernels -> one driver -> executors.

``step_rule`` holds the schedule maths (and DDIM's eta); ``problem`` the contract
(``DenoisingProblem`` in, ``SampleResult`` with ``SampleStats`` out, the ``Sampler``
protocol); ``kernels`` the work of one round on typed ``buffers``; ``acceptance`` when a
window's states are final and ``sync`` who judges that (the host each round, or the device
for k rounds); ``driver`` the one loop every windowed sampler shares; ``executor`` who runs
a kernel, once per rule content and shapes (``fingerprint``). Each sampler module is which kernel, which driver
settings, and declares its capabilities (``SamplerBase``); defining it registers it
(``registry``). ``Sequential`` reproduces upstream's loop; ``Picard``, ``NewtonPicard``,
``NewtonPrior``, ``JacobianNewton`` and ``QuasiNewton`` converge to the same trajectory in
parallel rounds; ``PIADM`` and ``RandomizedMidpoint`` trade exactness for a fixed round budget.
"""

from parapolicy.samplers.auto import Auto
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.executor import EAGER, EagerExecutor, Executor
from parapolicy.samplers.jacobian_newton import JacobianNewton
from parapolicy.samplers.newton_picard import NewtonPicard
from parapolicy.samplers.newton_prior import NewtonPrior, prior_trajectory
from parapolicy.samplers.noise import NoiseDraws, draw_noises
from parapolicy.samplers.piadm import PIADM
from parapolicy.samplers.picard import Picard
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, Sampler, SampleStats, SamplingCancelled
from parapolicy.samplers.quasi_newton import QuasiNewton
from parapolicy.samplers.randomized_midpoint import RandomizedMidpoint
from parapolicy.samplers.registry import SAMPLERS, make_sampler
from parapolicy.samplers.sequential import Sequential
from parapolicy.samplers.step_rule import StepCoefficients, StepRule, make_step_rule

__all__ = [
    "Auto",
    "DenoisingProblem",
    "EAGER",
    "EagerExecutor",
    "Executor",
    "JacobianNewton",
    "NewtonPicard",
    "NewtonPrior",
    "NoiseDraws",
    "PIADM",
    "Picard",
    "QuasiNewton",
    "RandomizedMidpoint",
    "SAMPLERS",
    "SampleResult",
    "SampleStats",
    "Sampler",
    "SamplerBase",
    "SamplingCancelled",
    "Sequential",
    "StepCoefficients",
    "StepRule",
    "draw_noises",
    "make_sampler",
    "make_step_rule",
    "prior_trajectory",
]
