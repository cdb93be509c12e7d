"""Progress bars for every pass of a rollout, so no part of a long run is silent.

A closed-loop pass counts control steps with the running score; the paired deviation check
counts chunks. Each bar is labelled with its pass (``pass 3/3 deviation check``) and, in a
multirun or sweep, with the run (``run 2 of 6``).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm


class StepBar:
    """``on_chunk(steps, finished)`` callback: advances by executed control steps; an episode that
    ends early fills its remaining steps, so the bar ends at its total."""

    def __init__(self, desc: str, n_episodes: int, max_episode_steps, disable=False):
        # max_episode_steps may be a callable read at the first chunk: env=auto learns it from the checkpoint
        self.n_episodes, self._max_steps = n_episodes, max_episode_steps
        self.desc, self.disable = desc, disable
        self.bar = None  # created by the first chunk, so an error before it prints only itself
        self.scores, self.failed = [], 0

    def __call__(self, steps: int, finished) -> None:
        if self.bar is None:
            steps = self._max_steps() if callable(self._max_steps) else self._max_steps
            self.max_steps = int(steps)
            self.total = self.n_episodes * self.max_steps
            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", disable=self.disable, dynamic_ncols=True)
        self.bar.update(steps)
        for res in finished:
            self.bar.update(max(0, self.max_steps - res.steps))
            if res.status == "failed":
                self.failed += 1
            else:
                self.scores.append(res.max_reward)
        if finished:
            score = f"{np.mean(self.scores):.3f}" if self.scores else "-"
            self.bar.set_postfix(episodes=len(self.scores) + self.failed, score=score, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class ChunkBar:
    """Called once per chunk (``on_check()``): a pass measured in chunks, of a known total."""

    def __init__(self, desc: str, total: int, disable=False):
        self.desc, self.total, self.disable = desc, int(total), disable
        self.bar = None

    def __call__(self, *_) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.desc, unit="chunk", disable=self.disable, dynamic_ncols=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Progress:
    """Hands out one bar per pass, closing the previous one; ``prefix`` starts every label."""

    def __init__(self, max_episode_steps, prefix: str = "", disable=False):
        # an int, or a callable read when a pass starts (env=auto learns the length from the checkpoint)
        self.max_steps, self.prefix, self.disable = max_episode_steps, prefix, disable
        self.current = None

    def _label(self, desc: str) -> str:
        return f"{self.prefix}: {desc}" if self.prefix else desc

    def episodes(self, desc: str, n_episodes: int) -> StepBar:
        """A bar in control steps for a closed-loop pass over ``n_episodes`` episodes."""
        return self._start(StepBar(self._label(f"{desc}: control steps"), n_episodes, self.max_steps, self.disable))

    def chunks(self, desc: str, total: int) -> ChunkBar:
        return self._start(ChunkBar(self._label(desc), total, self.disable))

    def _start(self, bar):
        self.close()
        self.current = bar
        return bar

    def close(self) -> None:
        if self.current is not None:
            self.current.close()
            self.current = None
