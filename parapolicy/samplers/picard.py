"""ParaDiGMS Picard iteration (Shih et al., NeurIPS 2023, arXiv 2305.16317).

Guess the whole denoising trajectory (every state = x_T, or the problem's initial guess),
then repeat: evaluate the network on a sliding window of ``window`` states in ONE batched
call, rebuild each state as the window start plus the summed one-step residuals, and
slide the window past every leading state whose change is below ``tolerance`` (in units
of that step's noise std). The fixed point is exactly the sequential trajectory for the
same noise draws, so ``tolerance`` is the only accuracy knob.

Kernel: ``kernels.window_round`` with ``PicardUpdate``, judged by ``ToleranceAcceptance``
(on the device, ``sync.DeviceJudged``, when ``rounds_per_sync`` > 1); driver: ``solve_windowed``.
"""

from __future__ import annotations

from dataclasses import dataclass

from parapolicy.samplers.acceptance import ToleranceAcceptance
from parapolicy.samplers.base import SamplerBase
from parapolicy.samplers.driver import solve_windowed
from parapolicy.samplers.kernels import PicardUpdate
from parapolicy.samplers.problem import DenoisingProblem, SampleResult, check_bounded_int, check_tolerance


@dataclass(frozen=True)
class Picard(SamplerBase):
    """Settings: window (steps per batched call), tolerance, rounds_per_sync (rounds per
    kernel call between host syncs: 1 reads the flags every round; k > 1 keeps acceptance
    on the device for k rounds, for GPU graph replays, with up to k - 1 wasted rounds), and
    max_rows, the row budget every exact sampler shares: network rows per round per sample,
    never exceeded (the window runs at most ``max_rows`` steps; a call's cost grows with its
    rows, so a wider window can save rounds and still lose time). The default tolerance is the
    one that kept a sharp random-init upstream-size UNet within one action unit under DDIM-16 as
    well as DDPM-100, not only the trained policies: where Picard contracts slowly, a small change
    certifies little (``benchmarks/samplers.md``)."""

    window: int = 100
    tolerance: float = 0.002
    rounds_per_sync: int = 1
    max_rows: int = 64
    name = "picard"
    exact = True
    accepts_initial_guess = True
    supports_prefix = True
    capturable = True
    update = PicardUpdate()

    def __post_init__(self):
        check_bounded_int(self.name, "window", self.window)
        check_tolerance(self.name, self.tolerance)
        check_bounded_int(self.name, "rounds_per_sync", self.rounds_per_sync)
        check_bounded_int(self.name, "max_rows", self.max_rows)

    def config(self) -> dict:
        """The settings; ``rounds_per_sync`` only where it differs from one round per sync."""
        config = super().config()
        if self.rounds_per_sync == 1:
            del config["rounds_per_sync"]
        return config

    def sample(self, problem: DenoisingProblem) -> SampleResult:
        window = min(self.window, self.max_rows)  # the steps the row budget allows per round and sample
        return solve_windowed(problem, self.update, ToleranceAcceptance(self.tolerance), name=self.name,
                              window=window, settings=self.settings_for(problem, window),
                              rounds_per_sync=self.rounds_per_sync)

    def settings_for(self, problem: DenoisingProblem, window: int) -> dict:
        """The settings this call ran with, as ``SampleStats.settings`` reports them."""
        settings = {"window": min(window, problem.rule.num_steps), "tolerance": float(self.tolerance),
                    "max_rows": self.max_rows}
        if self.rounds_per_sync != 1:
            settings["rounds_per_sync"] = self.rounds_per_sync
        return settings
