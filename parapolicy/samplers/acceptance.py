"""When a window's leading states are final: each acceptance rule's host and device forms together.

After a round the driver knows each window slot's worst change (in units of its step's
noise variance, over the samples). An acceptance rule says how many leading states that
makes final. Its host form judges the flags a round left (one host sync per round); its
device form is the same rule as tensor ops, run inside a k-rounds-per-sync kernel
(``sync.DeviceJudged``) so the host syncs once per k rounds. The two forms sit side by side
so that they change together; tests/test_multi_round.py holds them to the same iterates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ToleranceAcceptance:
    """Accept up to the first state whose change exceeds ``tolerance`` (that state included: its
    predecessors are final, so it is exact after this round). Exact: the fixed point is the
    sequential answer."""

    tolerance: float

    def host(self, worst: torch.Tensor, sweep: int, points: int) -> tuple[int, float | None]:
        """(states accepted, the worst accepted change in noise stds or None) from the slots'
        ``worst`` changes; ``sweep`` and ``points`` do not matter to a tolerance."""
        count = worst.shape[0]
        bad = torch.nonzero(worst > float(self.tolerance) ** 2).flatten()
        first_bad = int(bad[0]) if bad.numel() else count
        error = float(worst[:first_bad].max().sqrt()) if first_bad > 0 else None
        return min(first_bad + 1, count), error

    def load(self, threshold: torch.Tensor) -> None:
        """Write this call's setting where the device form reads it (a replay reuses the first call's ops)."""
        threshold.fill_(float(self.tolerance) ** 2)

    @staticmethod
    def device(threshold, worst, live, slots, count):
        """``host`` as tensor ops on a fixed-width window: (states accepted, worst accepted change
        squared), both 0-dim; slots past the last step (not ``live``) never block."""
        width = slots.shape[0]
        first_bad = torch.where(live & (worst > threshold), slots, width).amin().minimum(count)
        error = torch.where(slots < first_bad, worst, torch.zeros_like(worst)).amax()
        return (first_bad + 1).minimum(count), error


@dataclass(frozen=True)
class FixedSweepsAcceptance:
    """Accept the whole window after ``sweeps`` rounds on it, or once it is exact: a round over
    ``points`` network points fixes one more of them, so ``points`` rounds solve the block."""

    sweeps: int

    def host(self, worst: torch.Tensor, sweep: int, points: int) -> tuple[int, float | None]:
        """(states accepted, worst accepted change or None); ``sweep``: rounds already run on this window."""
        if sweep + 1 < min(self.sweeps, points):
            return 0, None
        return worst.shape[0], float(worst.max().sqrt())

    device = None  # no device form: fixed sweeps run one round per sync

