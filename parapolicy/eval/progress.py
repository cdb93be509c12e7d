"""A progress bar in control steps with the running score, so long rollouts show movement."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm


class StepProgress:
    """``on_chunk`` callback for :func:`run_episodes`: advances by executed control steps; an
    episode that ends early fills its remaining steps, so the bar ends at its total."""

    def __init__(self, n_episodes: int, max_episode_steps, desc: str = "control steps", disable=False):
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
