"""The plain denoising loop: one network call per step, as upstream's ``conditional_sample``.

Kernel: ``kernels.sequential_chain``; driver: ``driver.solve_chain``; no settings. With
upstream's draws (``draw_noises``) it reproduces upstream bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.driver import solve_chain
from parapolicy.samplers.problem import DenoisingProblem, SampleResult


@dataclass(frozen=True)
class Sequential(SamplerBase):
    """Every step in order; the reference every exact parallel sampler converges to."""

    name = "sequential"
    exact = True
    supports_prefix = True
    capturable = True

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        return solve_chain(problem, self.name)
