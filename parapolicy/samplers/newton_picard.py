"""Picard with quasi-Newton corrections (the ParaSolver idea: Lu et al., ICLR 2025).

The whole trajectory is one nonlinear system; each round takes a Newton-type step on it
with every step Jacobian approximated by a per-sample secant slope (``secant``). Same
window, tolerance test, fixed point (the sequential answer) and non-finite fallback as
``Picard``; fewer rounds (``benchmarks/samplers.md``).

Kernel: ``kernels.window_round`` with ``SecantUpdate``; driver: ``solve_windowed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parapolicy.samplers.kernels import SecantUpdate
from parapolicy.samplers.picard import Picard


@dataclass(frozen=True)
class NewtonPicard(Picard):
    """Settings: window and tolerance, as ``Picard``.

    The default tolerance is the one that kept a sharp random-init upstream-size UNet within one
    action unit under DDIM-16 as well as DDPM-100 (``benchmarks/samplers.md``).
    """

    tolerance: float = 0.002
    name = "newton_picard"
    update = SecantUpdate()
