"""Real-time control with a DiffusionPolicy: one ``act(obs)`` per control tick.

The controller keeps the last ``n_obs_steps`` observations (padded at the start by
repeating the first, as upstream's MultiStepWrapper) and a queue of planned actions.

* ``mode="sync"``: when the queue is empty, ``act`` runs inference and waits for it
  (upstream's behaviour; the tick that refills pays the latency).
* ``mode="async"``: inference for the next chunk runs in a background thread, started
  early enough -- from the measured latency -- that the queue does not run dry. A chunk
  planned from the observation at tick k covers ticks k, k+1, ...; when it arrives at
  tick k+d it replaces the not-yet-executed tail from index d on (naive async: the switch
  jumps between two independent samples).
* ``mode="rtc"``: real-time chunking. Like async, but the new chunk is sampled with its
  first d actions fixed to the ones the robot executes meanwhile (``guidance`` "soft", the
  default, or "hard", see ``parapolicy.samplers.prefix``), so it continues the old plan instead of
  jumping. d is ``delay_ticks`` when given, else the measured latency in ticks plus one.

``warm_start=True`` (any sampler that declares ``accepts_initial_guess``) starts each chunk's iteration from
the previous chunk's denoised sample, shifted along the horizon by the ticks since it was
planned: the trajectory whose denoiser always predicts that plan, pushed through this
chunk's fresh x_T and noises. The answer is unchanged; only the number of rounds drops.

Inference runs in a daemon thread; ``close(timeout)`` cancels it between sampler rounds
(through the sampler's callback), so it returns within the timeout, and raises a failure
that no ``act`` has reported yet. One controller drives one robot: ``act`` from two
threads at once is refused with one clear error.
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
import torch

from parapolicy import chunking
from parapolicy.chunk_log import ChunkLog
from parapolicy.chunking import Plan, PlannedSample, check_guidance, check_number, executed_slice, rtc_prefix
from parapolicy.chunking import shifted_plan  # noqa: F401  (documented here before the core existed)
from parapolicy.errors import ControllerConfigError, ParapolicyError
from parapolicy.samplers import SamplingCancelled
from parapolicy.metrics import latency_summary
from parapolicy.samplers.prefix import DEFAULT_MAX_GUIDANCE_WEIGHT, ActionPrefix

MODES = tuple(m for m in chunking.MODES if m not in chunking.AVERAGING_MODES)  # one plan queue, one action a tick


class ControllerError(ParapolicyError, RuntimeError):
    """Inference in the background thread failed, or the controller is closed or used concurrently."""


class InferenceCancelled(SamplingCancelled):
    """``close`` stopped an inference between two sampler rounds."""


class _Inference:
    """One predict_action call in a daemon thread, cancellable between sampler rounds."""

    def __init__(self, fn, planned_at: int, frozen: int):
        self.planned_at, self.frozen = planned_at, frozen
        self.cancel, self.done = threading.Event(), threading.Event()
        self.result, self.error, self.reported = None, None, False
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True, name="parapolicy-inference")
        self.thread.start()

    def _run(self, fn):
        try:
            self.result = fn(self._between_rounds)
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that calls act/close
            self.error = exc
        finally:
            self.done.set()

    def _between_rounds(self, event) -> None:
        if self.cancel.is_set():
            raise InferenceCancelled("the controller was closed during inference")

    @property
    def unreported_failure(self):
        failed = self.done.is_set() and self.error is not None and not isinstance(self.error, InferenceCancelled)
        return self.error if failed and not self.reported else None


class Controller:
    def __init__(self, policy, control_hz: float = 10.0, n_action_steps: int | None = None, mode: str = "sync",
                 latency_budget_ms: float | None = None, generator: torch.Generator | None = None,
                 warm_start: bool = False, obs_key: str = "obs", delay_ticks: int | None = None,
                 guidance: str = "soft", max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT):
        if not callable(getattr(policy, "predict_action", None)) or not hasattr(policy, "spec"):
            raise ControllerConfigError(f"policy must be a parapolicy Policy (spec, predict_action), got "
                                        f"{type(policy).__name__}")
        if not isinstance(mode, str) or mode not in MODES:
            raise ControllerConfigError(f"mode must be one of {MODES}, got {mode!r}")
        check_number("control_hz", control_hz)
        if latency_budget_ms is not None:
            check_number("latency_budget_ms", latency_budget_ms)
        spec = policy.spec
        executable = executed_slice(spec)
        available = executable.stop - executable.start
        steps = spec.n_action_steps if n_action_steps is None else n_action_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= available:
            raise ControllerConfigError(f"n_action_steps must be an integer in [1, {available}], got {n_action_steps!r}")
        if delay_ticks is not None:
            if mode != "rtc":
                raise ControllerConfigError(f"delay_ticks applies to mode='rtc', got mode={mode!r}")
            if isinstance(delay_ticks, bool) or not isinstance(delay_ticks, int) or not 0 <= delay_ticks < steps:
                raise ControllerConfigError(f"delay_ticks must be an integer in [0, {steps - 1}] "
                                            f"(n_action_steps={steps}), got {delay_ticks!r}")
        check_guidance(guidance, max_guidance_weight)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ControllerConfigError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        if not isinstance(warm_start, bool):
            raise ControllerConfigError(f"warm_start must be true or false, got {warm_start!r}")
        if not isinstance(obs_key, str):
            raise ControllerConfigError(f"obs_key must be a string, got {obs_key!r}")
        self.policy, self.mode, self.obs_key = policy, mode, obs_key
        self.period_s = 1.0 / float(control_hz)
        self.n_action_steps, self.delay_ticks, self.guidance = steps, delay_ticks, guidance
        self.max_guidance_weight = max_guidance_weight
        self.latency_budget_ms = latency_budget_ms
        self.generator = generator
        self.warm_start = warm_start
        self._closed = False
        self._act_lock = threading.Lock()
        self.chunks, self.act_latency_ms = ChunkLog(), []
        self.measured_delay_ticks, self.jumps = [], []
        self.deadline_misses, self.empty_queue_waits, self.late_chunks = 0, 0, 0
        self._inflight = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        """Forget the episode: history, planned actions, in-flight inference (stats are kept)."""
        if self._inflight is not None:
            self._inflight.cancel.set()
            self._inflight.done.wait()
        self._history = deque(maxlen=self.policy.spec.n_obs_steps)
        self._executing: Plan | None = None  # gives the actions for ticks self._tick ... its end
        self._tick = 0
        self._inflight = None
        self._last_sample: PlannedSample | None = None
        self._received: Plan | None = None  # the newest chunk: every action it planned, its switch tick
        self._last_action = None

    def close(self, timeout: float = 5.0) -> bool:
        """Cancel a running inference between sampler rounds and wait at most ``timeout`` s.

        Returns whether the inference thread has stopped (True when none was running).
        Raises ``ControllerError`` for an inference failure that no ``act`` has reported.
        """
        check_number("timeout", timeout, minimum_exclusive=-1e-9)
        if self._closed:
            return True
        self._closed = True
        inflight = self._inflight
        if inflight is None:
            return True
        inflight.cancel.set()
        stopped = inflight.done.wait(timeout)
        failure = inflight.unreported_failure
        if failure is not None:
            inflight.reported = True
            raise ControllerError(f"inference failed before close: {type(failure).__name__}: {failure}") from failure
        return stopped

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            return False
        try:
            self.close()
        except ControllerError as failure:  # the exception already in flight is the one to see
            exc.add_note(str(failure))
        return False

    # ------------------------------------------------------------------ control
    def act(self, obs) -> np.ndarray:
        """The action for this tick (shape (Da,)), given this tick's observation."""
        if not self._act_lock.acquire(blocking=False):
            raise ControllerError("act() called from two threads at once; one controller drives one robot: "
                                  "call act() from one control loop")
        try:
            return self._act(obs)
        finally:
            self._act_lock.release()

    def _act(self, obs) -> np.ndarray:
        if self._closed:
            raise ControllerError("controller is closed")
        started = time.perf_counter()
        self._history.append(self._checked_obs(obs))
        self._collect(block=False)
        if self.mode != "sync":
            self._maybe_start()
        if not self._queued():
            self.empty_queue_waits += self._tick > 0 and self.mode != "sync"
            if self._inflight is None:
                self._start()
            self._collect(block=True)
        action = self._executing.action_at(self._tick)[0]
        if self._tick == self._received.switch_tick and self._last_action is not None:
            self.jumps.append(float(np.linalg.norm(action - self._last_action)))
        self._last_action = action
        self._tick += 1
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.act_latency_ms.append(elapsed_ms)
        budget = self.latency_budget_ms if self.latency_budget_ms is not None else self.period_s * 1000.0
        self.deadline_misses += elapsed_ms > budget
        return action

    @property
    def chunk_latency_ms(self) -> list:
        return self.chunks.latency_ms

    @property
    def rounds(self) -> list:
        return self.chunks.rounds

    @property
    def nfe(self) -> list:
        return self.chunks.nfe

    @property
    def fallbacks(self) -> int:
        return len(self.chunks.fallbacks)

    @property
    def stats(self) -> dict:
        """Latencies, deadline misses, delays, jumps at chunk switches, rounds and fallbacks."""
        jumps = np.asarray(self.jumps, dtype=float)
        delays = np.asarray(self.measured_delay_ticks, dtype=float)
        return {
            "mode": self.mode,
            "chunk_latency_ms": latency_summary(self.chunk_latency_ms),
            "act_latency_ms": latency_summary(self.act_latency_ms),
            "deadline_misses": int(self.deadline_misses),
            "empty_queue_waits": int(self.empty_queue_waits),
            "late_chunks": int(self.late_chunks),
            "ticks": len(self.act_latency_ms),
            "delay_ticks": {"mean": float(delays.mean()) if delays.size else 0.0,
                            "max": int(delays.max()) if delays.size else 0},
            "jump_at_switch": {"count": int(jumps.size), "mean": float(jumps.mean()) if jumps.size else 0.0,
                               "max": float(jumps.max()) if jumps.size else 0.0},
            "rounds_per_chunk": float(np.mean(self.rounds)) if self.rounds else 0.0,
            "nfe_per_chunk": float(np.mean(self.nfe)) if self.nfe else 0.0,
            "fallbacks": int(self.fallbacks),
            "period_ms": self.period_s * 1000.0,
        }

    # ------------------------------------------------------------------ internals
    def _checked_obs(self, obs):
        """This tick's observation as arrays of the policy's step shapes, checked before it enters
        the history: a bad one is one ControllerError, and the next good one works."""
        shapes = self.policy.spec.obs_shapes
        if not isinstance(obs, dict):
            if list(shapes) != [self.obs_key]:
                raise ControllerError(f"act(obs): expected a dict with keys {list(shapes)}, got {type(obs).__name__}")
            return self._checked_obs({self.obs_key: obs})[self.obs_key]
        checked = {}
        for key, shape in shapes.items():
            if key not in obs:
                raise ControllerError(f"act(obs): obs lacks {key!r}; expected keys {list(shapes)}, got "
                                      f"{sorted(map(str, obs))[:8]}")
            try:
                value = np.array(obs[key])
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ControllerError(f"act(obs): obs[{key!r}] must be a numeric array of shape {tuple(shape)}, got "
                                      f"{type(obs[key]).__name__} ({str(exc)[:80]})") from None
            if value.dtype.kind not in "biuf" or tuple(value.shape) != tuple(shape):
                raise ControllerError(f"act(obs): obs[{key!r}] must be a numeric array of shape {tuple(shape)}, got "
                                      f"{value.dtype} of shape {tuple(value.shape)}")
            if not np.isfinite(value).all():
                raise ControllerError(f"act(obs): obs[{key!r}] contains NaN or inf")
            checked[key] = value
        return checked

    def _obs_batch(self) -> dict:
        items = list(self._history)
        items = [items[0]] * (self._history.maxlen - len(items)) + items
        return {k: v[None] for k, v in chunking.stack_observations(items, self.obs_key).items()}

    def _queued(self) -> int:
        """Planned actions left for this tick and the next ones."""
        return self._executing.remaining(self._tick) if self._executing is not None else 0

    def _expected_latency_s(self) -> float:
        recent = self.chunk_latency_ms[-5:]
        return (max(recent) / 1000.0) if recent else self.period_s * self.n_action_steps

    def _delay_ticks(self) -> int:
        """Ticks that may pass before the next chunk lands: fixed, or measured (+1 tick margin)."""
        if self.delay_ticks is not None:
            return self.delay_ticks
        return int(np.ceil(self._expected_latency_s() / self.period_s)) + 1

    def _maybe_start(self) -> None:
        if self._inflight is not None or not self._queued():
            return
        if self._queued() <= self._delay_ticks():
            self._start()

    def _start(self) -> None:
        obs = self._obs_batch()
        guess = self._warm_guess() if self.warm_start else None
        prefix = self._prefix()
        frozen = prefix.frozen if prefix is not None else 0
        self._inflight = _Inference(lambda check: self._infer(obs, guess, prefix, check), self._tick, frozen)

    def _prefix(self) -> ActionPrefix | None:
        """RTC: the actions that execute while this chunk is computed, and the rest of the old plan."""
        if self.mode != "rtc" or not self._queued() or self._received is None:
            return None
        frozen = min(self._delay_ticks(), self._queued())
        return rtc_prefix(self._received, self._tick, frozen, self.guidance, self.max_guidance_weight)

    def _warm_guess(self):
        return self._last_sample.guess(self._tick) if self._last_sample is not None else None

    def _infer(self, obs, guess, prefix, check):
        kwargs = {"generator": self.generator, "initial_guess": guess}
        kwargs["callback"] = check
        if prefix is not None:
            kwargs["prefix"] = prefix
        return self.policy.predict_action(obs, **kwargs)

    def _collect(self, block: bool) -> None:
        inflight = self._inflight
        if inflight is None:
            return
        if not block and not inflight.done.is_set():
            return
        inflight.done.wait()
        self._inflight = None
        if inflight.error is not None:
            inflight.reported = True
            exc = inflight.error
            raise ControllerError(f"inference failed: {type(exc).__name__}: {exc}") from exc
        out = inflight.result
        self.chunks.append(out["stats"])
        if "sample" in out:
            self._last_sample = PlannedSample(out["sample"].detach(), inflight.planned_at)
        planned = out["action_pred"][:1, executed_slice(self.policy.spec)].detach().cpu().numpy()
        received = Plan(inflight.planned_at, planned, usable_from=self._tick, frozen=inflight.frozen,
                        until=inflight.planned_at + self.n_action_steps)
        self._received = received
        late = self._tick - inflight.planned_at
        if inflight.planned_at > 0:
            self.measured_delay_ticks.append(late)
            self.late_chunks += self.mode == "rtc" and late > inflight.frozen
        if late < self.n_action_steps:
            self._executing = received
        elif not self._queued():
            self._executing = received.holding_last(self._tick)  # inference took longer than the whole chunk
