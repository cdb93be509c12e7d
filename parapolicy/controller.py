"""Real-time control with a DiffusionPolicy: one ``act(obs)`` per control tick.

The controller keeps the last ``n_obs_steps`` observations (padded at the start by
repeating the first, as upstream's MultiStepWrapper) and a queue of planned actions.

* ``mode="sync"``: when the queue is empty, ``act`` runs inference and waits for it
  (upstream's behaviour; the tick that refills pays the latency).
* ``mode="async"``: inference for the next chunk runs in a background thread, started
  early enough -- from the measured latency -- that the queue does not run dry. A chunk
  planned from the observation at tick k covers ticks k, k+1, ...; when it arrives at
  tick k+d it replaces the not-yet-executed tail from index d on.

``warm_start=True`` (Picard only) starts each chunk's iteration from the trajectory implied
by the previous chunk's per-step network outputs, shifted along the horizon by the ticks
since it was planned, pushed through this chunk's fresh x_T and noises; the answer is
unchanged and only the number of rounds drops.
"""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from parapolicy.errors import ParapolicyError
from parapolicy.metrics import latency_summary


class ControllerError(ParapolicyError, RuntimeError):
    """Inference in the background thread failed; raised on the next ``act``."""


class Controller:
    def __init__(self, policy, control_hz: float = 10.0, n_action_steps: int | None = None, mode: str = "sync",
                 latency_budget_ms: float | None = None, generator: torch.Generator | None = None,
                 warm_start: bool = False, obs_key: str = "obs"):
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        if control_hz <= 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.policy, self.mode, self.obs_key = policy, mode, obs_key
        self.period_s = 1.0 / float(control_hz)
        self.n_action_steps = int(n_action_steps or policy.spec.n_action_steps)
        if not 1 <= self.n_action_steps <= policy.spec.horizon - policy.spec.action_start:
            raise ValueError(f"n_action_steps must be in [1, {policy.spec.horizon - policy.spec.action_start}]")
        self.latency_budget_ms = latency_budget_ms
        self.generator = generator
        self.warm_start = warm_start
        # one worker: inferences never overlap, in sync and async mode alike
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parapolicy-inference")
        self._closed = False
        self.chunk_latency_ms, self.act_latency_ms, self.rounds = [], [], []
        self.deadline_misses, self.empty_queue_waits = 0, 0
        self._inflight = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the episode: history, planned actions, in-flight result (stats are kept)."""
        self._wait_inflight()
        self._history = deque(maxlen=self.policy.spec.n_obs_steps)
        self._plan: list[np.ndarray] = []  # actions for ticks self._tick, self._tick + 1, ...
        self._tick = 0
        self._inflight = None  # (future, tick it was planned at)
        self._last_outputs = None  # (per-step denoiser outputs, tick they were planned at)

    def close(self) -> None:
        """Stop the inference thread; waits for a running inference (never hangs on a queue)."""
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------------ control
    def act(self, obs) -> np.ndarray:
        """The action for this tick (shape (Da,)), given this tick's observation."""
        if self._closed:
            raise ControllerError("controller is closed")
        started = time.perf_counter()
        self._history.append(obs)
        self._collect(block=False)
        if self.mode == "async":
            self._maybe_start()
        if not self._plan:
            self.empty_queue_waits += self._tick > 0 and self.mode == "async"
            if self._inflight is None:
                self._start()
            self._collect(block=True)
        action = self._plan.pop(0)
        self._tick += 1
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.act_latency_ms.append(elapsed_ms)
        budget = self.latency_budget_ms if self.latency_budget_ms is not None else self.period_s * 1000.0
        self.deadline_misses += elapsed_ms > budget
        return action

    @property
    def stats(self) -> dict:
        return {
            "chunk_latency_ms": latency_summary(self.chunk_latency_ms),
            "act_latency_ms": latency_summary(self.act_latency_ms),
            "deadline_misses": int(self.deadline_misses),
            "empty_queue_waits": int(self.empty_queue_waits),
            "ticks": len(self.act_latency_ms),
            "rounds_per_chunk": float(np.mean(self.rounds)) if self.rounds else 0.0,
            "period_ms": self.period_s * 1000.0,
        }

    # ------------------------------------------------------------------ internals
    def _obs_batch(self) -> dict:
        items = list(self._history)
        items = [items[0]] * (self._history.maxlen - len(items)) + items
        if isinstance(items[0], dict):
            return {k: torch.as_tensor(np.stack([o[k] for o in items]))[None] for k in items[0]}
        return {self.obs_key: torch.as_tensor(np.stack(items))[None]}

    def _expected_latency_s(self) -> float:
        recent = self.chunk_latency_ms[-5:]
        return (max(recent) / 1000.0) if recent else self.period_s * self.n_action_steps

    def _maybe_start(self) -> None:
        if self._inflight is not None or not self._plan:
            return
        ticks_needed = int(np.ceil(self._expected_latency_s() / self.period_s)) + 1
        if len(self._plan) <= ticks_needed:
            self._start()

    def _start(self) -> None:
        obs = self._obs_batch()
        guess = self._warm_guess() if self.warm_start else None
        self._inflight = (self._executor.submit(self._infer, obs, guess), self._tick)

    def _warm_guess(self):
        if self._last_outputs is None:
            return None
        outputs, planned_at = self._last_outputs  # (steps, B, horizon, D)
        shift = self._tick - planned_at
        if shift >= outputs.shape[2]:
            return None
        tail = outputs[:, :, shift:]
        return torch.cat([tail, tail[:, :, -1:].expand(-1, -1, shift, -1)], dim=2)

    def _infer(self, obs, guess):
        return self.policy.predict_action(obs, generator=self.generator, initial_guess=guess)

    def _collect(self, block: bool) -> None:
        if self._inflight is None:
            return
        future, planned_at = self._inflight
        if not block and not future.done():
            return
        self._inflight = None
        try:
            out = future.result()
        except Exception as exc:
            raise ControllerError(f"inference failed: {type(exc).__name__}: {exc}") from exc
        self.chunk_latency_ms.append(out["stats"]["latency_ms"])
        self.rounds.append(out["stats"].get("rounds", 0))
        if "denoiser_outputs" in out:
            self._last_outputs = (out["denoiser_outputs"].detach(), planned_at)
        chunk = out["action"][0, : self.n_action_steps].detach().cpu().numpy()
        late = self._tick - planned_at
        if late < len(chunk):
            self._plan = list(chunk[late:])
        elif not self._plan:
            self._plan = [chunk[-1]]  # inference took longer than the whole chunk: hold the last action

    def _wait_inflight(self) -> None:
        inflight = self._inflight
        if inflight is not None:
            try:
                inflight[0].result()
            except Exception:  # noqa: BLE001 - the episode is being discarded
                pass
