"""Who judges a windowed run's rounds, and so how often the host syncs: every round, or every k.

``HostJudged`` (one round per sync): the round kernel leaves flags, the host reads them
(the only sync of a round), judges them with the acceptance's host form and slides the
window. ``DeviceJudged`` (k rounds per kernel call): after each round the acceptance's
device form, the slide and the counters run as tensor ops, so the host syncs once per k
rounds; the iterates are the same, and rounds run after convergence are masked no-ops that
still cost a network call. Each slide is written here in both forms, side by side: the
window moves past the accepted states, and slots entering it start from the latest state
unless the run started from a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.samplers.buffers import WindowBuffers


@dataclass(frozen=True)
class Progress:
    """Where a run stands after a sync: the window start and the counters its stats report.
    ``widest``: the most rows per sample one round evaluated."""

    start: int = 0
    rounds: int = 0
    nfe: int = 0
    widest: int = 0
    non_finite: bool = False


def slide_on_host(traj: torch.Tensor, start: int, accepted: int, width: int, n_steps: int, fill: bool) -> int:
    """The new window start; entering slots start from the old window's last state when ``fill``."""
    end = min(start + width, n_steps)
    new_start = start + accepted
    new_end = min(new_start + width, n_steps)
    if new_end > end and fill:
        traj[end + 1 : new_end + 1] = traj[end]
    return new_start


def slide_on_device(buf: WindowBuffers, accepted: torch.Tensor, n_steps: int) -> None:
    """``slide_on_host`` as tensor ops on a fixed-width window (``buf.fill`` for ``fill``)."""
    traj, start, slots = buf.traj, buf.start, buf.slots
    width = slots.shape[0]
    end, new_start = (start + width).clamp(max=n_steps), start + accepted
    rows = new_start + slots + 1  # the new window's next states; those past the old end enter now
    entering = (rows > end) & (rows <= (new_start + width).clamp(max=n_steps)) & buf.fill
    entering = entering.view(-1, *([1] * (traj.dim() - 1)))
    traj.index_copy_(0, rows, torch.where(entering, traj.index_select(0, end.view(1)), traj.index_select(0, rows)))
    start.copy_(new_start)


class HostJudged:
    """One round per kernel call; the host reads its flags, judges and slides.

    Run eagerly, a round evaluates only the live slots; captured, the whole fixed-width
    window (padding rows included, which is what ``widest`` reports).
    """

    key = "window"

    def __init__(self, acceptance, width: int, n_steps: int, captures: bool, extra_points: int):
        self.acceptance, self.width, self.n_steps = acceptance, width, n_steps
        self.captures, self.extra_points = captures, extra_points
        self.sweep, self.max_error = 0, 0.0  # rounds run at the current start; worst accepted change

    @property
    def pad(self) -> int:
        return self.width if self.captures else 0

    @staticmethod
    def kernel(round_kernel):
        """``round_kernel``, then the flags the host reads: each slot's worst change, then non-finite."""

        def one_round(buf, denoise, step, batch, n_steps, update):
            index, worst, finite = round_kernel(buf, denoise, step, batch, n_steps, update)
            buf.flags[: index.shape[0]].copy_(worst)
            buf.flags[-1:].copy_((~finite).to(buf.flags.dtype).view(1))

        return one_round

    def begin(self, buf: WindowBuffers, problem) -> None:
        self.all_slots, self.fill = buf.slots, problem.init_guess is None

    def advance(self, buf: WindowBuffers, run, progress: Progress) -> Progress:
        start = progress.start
        count = min(start + self.width, self.n_steps) - start
        buf.start.fill_(start)
        buf.sweep.fill_(self.sweep)
        if not self.captures:
            buf.slots = self.all_slots[:count]  # eager: live slots only
        run()
        points = count + self.extra_points
        rounds, nfe = progress.rounds + 1, progress.nfe + points
        widest = max(progress.widest, (self.width if self.captures else count) + self.extra_points)
        flags = buf.flags.detach().cpu()  # the one host sync of the round
        if flags[-1]:
            return Progress(start, rounds, nfe, widest, non_finite=True)
        accepted, error = self.acceptance.host(flags[:count], self.sweep, points)
        if error is not None:
            self.max_error = max(self.max_error, error)
        self.sweep = 0 if accepted else self.sweep + 1
        new_start = slide_on_host(buf.traj, start, accepted, self.width, self.n_steps, self.fill)
        return Progress(new_start, rounds, nfe, widest)

    def finish(self, buf: WindowBuffers) -> float:
        """The worst accepted change; the buffers as built (all slots)."""
        buf.slots = self.all_slots
        return self.max_error


class DeviceJudged:
    """``rounds`` rounds per kernel call (one graph replay), judged and slid on the device.

    The window always has its full width, so its buffers carry ``width`` padding rows; a
    round after convergence (start = n_steps) or after non-finite values only touches them
    and counts nothing. The acceptance needs a device form (a tolerance).
    """

    def __init__(self, acceptance, width: int, n_steps: int, rounds: int):
        self.acceptance, self.width, self.n_steps, self.rounds = acceptance, width, n_steps, rounds
        self.key = ("synced", rounds)

    @property
    def pad(self) -> int:
        return self.width  # fixed-width windows read up to ``width`` rows past the last step

    def kernel(self, round_kernel):
        """``rounds`` x (``round_kernel``, then acceptance, counters and slide as tensor ops)."""
        accept, rounds = self.acceptance.device, self.rounds  # the device form reads its setting from buffers

        def judged_rounds(buf, denoise, step, batch, n_steps, update):
            for _ in range(rounds):
                _judged_round(buf, round_kernel, accept, denoise, step, batch, n_steps, update)

        return judged_rounds

    def begin(self, buf: WindowBuffers, problem) -> None:
        buf.start.zero_()
        buf.status.zero_()
        self.acceptance.load(buf.threshold)
        buf.fill.fill_(problem.init_guess is None)

    def advance(self, buf: WindowBuffers, run, progress: Progress) -> Progress:
        run()
        snapshot = torch.cat([buf.start.view(1).to(buf.status.dtype), buf.status]).tolist()  # the sync
        return Progress(int(snapshot[0]), int(snapshot[1]), int(snapshot[2]), self.width, bool(snapshot[4]))

    def finish(self, buf: WindowBuffers) -> float:
        return float(buf.status[2].sqrt())


def _judged_round(buf: WindowBuffers, round_kernel, accept, denoise, step, batch: int, n_steps: int, update) -> None:
    """One round, then what ``HostJudged`` does on the host, counted into ``buf.status``."""
    start, status, slots = buf.start, buf.status, buf.slots
    width = slots.shape[0]
    active = (start < n_steps) & (status[3] == 0)
    index, worst, finite = round_kernel(buf, denoise, step, batch, n_steps, update)  # converged: padding rows only
    live = index < n_steps
    count = (n_steps - start).clamp(0, width)
    accepted, error = accept(buf.threshold, worst, live, slots, count)
    accepted = torch.where(active & finite, accepted, 0)
    status[0] += active.to(status.dtype)
    status[1] += (active * count).to(status.dtype)
    status[2] = torch.where(active, status[2].maximum(error), status[2])
    status[3] = torch.where(active & ~finite, torch.ones_like(status[3]), status[3])
    slide_on_device(buf, accepted, n_steps)
