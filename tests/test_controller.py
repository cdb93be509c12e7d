"""The real-time controller: sync parity with the runner, async queue, warm starts, shutdown."""

import threading
import time

import numpy as np
import pytest
import torch

import parapolicy
from parapolicy.controller import ControllerError
from parapolicy.errors import ControllerConfigError
from parapolicy.eval.episodes import run_batch
from parapolicy_envs import MultiStepWrapper
from parapolicy_envs.toy import ToyReachEnv


def test_sync_controller_reproduces_the_rollout_runner(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    run = run_batch(policy, lambda: MultiStepWrapper(ToyReachEnv(), 2, 8, 60), [100000],
                    generator=torch.Generator().manual_seed(0), record_actions=True)
    expected = np.concatenate([chunk[0] for chunk in run.actions])[: run.episodes[0].steps]
    env = ToyReachEnv()
    obs, _ = env.reset(seed=100000)
    got = []
    with parapolicy.Controller(policy, control_hz=10, mode="sync", generator=torch.Generator().manual_seed(0)) as c:
        for _ in range(len(expected)):
            action = c.act(obs)
            got.append(action)
            obs, _, terminated, _, _ = env.step(action)
            if terminated:
                break
    assert np.array_equal(np.stack(got), expected[: len(got)])
    assert c.stats["chunk_latency_ms"]["count"] == int(np.ceil(len(got) / 8))


def test_async_controller_never_runs_dry_at_the_toy_control_rate(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    env = ToyReachEnv()
    obs, _ = env.reset(seed=100001)
    with parapolicy.Controller(policy, control_hz=ToyReachEnv.control_hz, mode="async") as c:
        next_tick = time.perf_counter()
        for _ in range(40):
            obs, *_ = env.step(c.act(obs))
            next_tick += c.period_s
            time.sleep(max(0.0, next_tick - time.perf_counter()))
        stats = c.stats
    assert stats["empty_queue_waits"] == 0
    assert stats["ticks"] == 40 and stats["chunk_latency_ms"]["count"] >= 5


def test_warm_started_picard_matches_cold_picard_with_no_more_rounds(toy_ckpt):  # noqa: F811
    observations = [np.array([0.1 * np.sin(i / 5), -0.6 + 0.03 * i, 0.2, 0.3], dtype=np.float32) for i in range(48)]

    def drive(warm):
        policy = parapolicy.load_policy(toy_ckpt).set_sampler("picard", window=10, tolerance=0.01)
        with parapolicy.Controller(policy, mode="sync", warm_start=warm, generator=torch.Generator().manual_seed(3)) as c:
            actions = np.stack([c.act(o) for o in observations])
        return actions, c.rounds

    cold_actions, cold_rounds = drive(False)
    warm_actions, warm_rounds = drive(True)
    assert np.abs(warm_actions - cold_actions).max() < 1e-2
    assert np.mean(warm_rounds) <= np.mean(cold_rounds)


class _GuessRecorder:
    """The real policy, recording each call's initial guess and output."""

    def __init__(self, policy):
        self.policy, self.spec, self.calls = policy, policy.spec, []

    def predict_action(self, obs, generator=None, initial_guess=None, callback=None):
        out = self.policy.predict_action(obs, generator=generator, initial_guess=initial_guess, callback=callback)
        self.calls.append((initial_guess, out))
        return out


def test_the_warm_start_is_the_previous_sample_moved_by_the_executed_ticks(toy_ckpt):  # noqa: F811
    recorder = _GuessRecorder(parapolicy.load_policy(toy_ckpt).set_sampler("jacobian_newton"))
    obs = np.array([0.1, -0.5, 0.2, 0.3], dtype=np.float32)
    with parapolicy.Controller(recorder, mode="sync", warm_start=True, generator=torch.Generator().manual_seed(4)) as c:
        for _ in range(16):
            c.act(obs)
    (first_guess, first), (second_guess, second) = recorder.calls
    assert first_guess is None and not first["stats"]["initial_guess"]
    ticks = recorder.spec.n_action_steps
    sample = first["sample"]
    expected = torch.cat([sample[:, ticks:], sample[:, -1:].expand(-1, ticks, -1)], dim=1)
    assert torch.equal(second_guess, expected) and second["stats"]["initial_guess"]


class _SlowPolicy:
    def __init__(self, policy, delay, fail=False):
        self.policy, self.delay, self.fail, self.spec = policy, delay, fail, policy.spec

    def predict_action(self, obs, generator=None, initial_guess=None, callback=None):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("GPU fell off the bus")
        return self.policy.predict_action(obs, generator=generator)


def test_close_with_inference_in_flight_does_not_hang(toy_ckpt):  # noqa: F811
    slow = _SlowPolicy(parapolicy.load_policy(toy_ckpt), delay=0.3)
    c = parapolicy.Controller(slow, control_hz=10, mode="async")
    c.act(np.zeros(4, dtype=np.float32))  # first chunk (waits)
    for _ in range(6):
        c.act(np.zeros(4, dtype=np.float32))  # the refill starts in the background
    closer = threading.Thread(target=c.close)
    closer.start()
    closer.join(timeout=5)
    assert not closer.is_alive()
    with pytest.raises(ControllerError, match="closed"):
        c.act(np.zeros(4, dtype=np.float32))


def test_background_error_surfaces_on_act(toy_ckpt):  # noqa: F811
    broken = _SlowPolicy(parapolicy.load_policy(toy_ckpt), delay=0.0, fail=True)
    with parapolicy.Controller(broken, mode="async") as c:
        with pytest.raises(ControllerError, match="inference failed: RuntimeError: GPU fell off the bus"):
            c.act(np.zeros(4, dtype=np.float32))


# ---------------------------------------------------------------- lifecycle (issue 13 item 8)
class _RoundsPolicy:
    """Stands in for a policy: ``rounds`` sampler rounds of ``round_s`` seconds each, calling the
    sampler callback between rounds as every sampler does; can fail, hang, or report a fallback."""

    def __init__(self, spec, rounds=50, round_s=0.05, fail=False, hang=False, fallback=None):
        self.spec, self.rounds, self.round_s = spec, rounds, round_s
        self.fail, self.hang, self.fallback = fail, hang, fallback
        self.calls, self.prefixes = 0, []
        self.release = threading.Event()

    def predict_action(self, obs, generator=None, initial_guess=None, callback=None, prefix=None):
        self.calls += 1
        self.prefixes.append(prefix)
        if self.hang:
            self.release.wait(30)
        for r in range(self.rounds):
            time.sleep(self.round_s)
            if callback is not None:
                callback({"round": r + 1})
        if self.fail:
            raise RuntimeError("GPU fell off the bus")
        horizon, da = self.spec.horizon, self.spec.action_dim
        pred = torch.arange(horizon, dtype=torch.float32)[None, :, None].repeat(1, 1, da) + 100.0 * self.calls
        stats = {"latency_ms": self.rounds * self.round_s * 1000.0, "rounds": self.rounds,
                 "nfe": self.rounds, "fallback": self.fallback}
        return {"action": pred[:, 1:9], "action_pred": pred, "stats": stats}


@pytest.fixture(scope="module")
def spec(toy_ckpt):  # noqa: F811
    """Loaded once per module: only read (by ``_RoundsPolicy`` and the Controller), never changed."""
    return parapolicy.load_policy(toy_ckpt).spec


@pytest.mark.parametrize("kwargs, message", [
    ({"n_action_steps": 0}, r"n_action_steps must be an integer in \[1, 15\], got 0"),
    ({"n_action_steps": 16}, r"n_action_steps must be an integer in \[1, 15\], got 16"),
    ({"control_hz": float("nan")}, "control_hz must be a finite number > 0, got nan"),
    ({"control_hz": float("inf")}, "control_hz must be a finite number > 0, got inf"),
    ({"control_hz": 0}, "control_hz must be a finite number > 0, got 0"),
    ({"control_hz": -5.0}, "control_hz must be a finite number > 0, got -5.0"),
    ({"mode": "turbo"}, r"mode must be one of \('sync', 'async', 'rtc'\), got 'turbo'"),
    ({"mode": "async", "delay_ticks": 2}, "delay_ticks applies to mode='rtc', got mode='async'"),
    ({"mode": "rtc", "delay_ticks": 8}, r"delay_ticks must be an integer in \[0, 7\] \(n_action_steps=8\), got 8"),
    ({"mode": "rtc", "guidance": "firm"}, r"guidance must be one of \('hard', 'soft'\), got 'firm'"),
    ({"mode": "rtc", "max_guidance_weight": 0.0}, "max_guidance_weight must be a finite number > 0, got 0.0"),
])
def test_constructor_refuses_bad_settings_with_one_clear_error(spec, kwargs, message):
    with pytest.raises(ControllerConfigError, match=message):
        parapolicy.Controller(_RoundsPolicy(spec), **kwargs)


def test_close_cancels_inference_between_rounds_within_the_timeout(spec):
    fake = _RoundsPolicy(spec, rounds=400, round_s=0.05)  # 20 s uncancelled
    c = parapolicy.Controller(fake, mode="async")
    threading.Thread(target=lambda: pytest.raises(ControllerError, c.act, np.zeros(4)), daemon=True).start()
    time.sleep(0.3)  # the first chunk is being computed
    started = time.perf_counter()
    assert c.close(timeout=2.0) is True
    assert time.perf_counter() - started < 1.0


def test_close_returns_within_the_timeout_when_inference_hangs(spec):
    fake = _RoundsPolicy(spec, rounds=1, round_s=0.0, hang=True)
    c = parapolicy.Controller(fake, mode="async")
    threading.Thread(target=lambda: pytest.raises(ControllerError, c.act, np.zeros(4)), daemon=True).start()
    time.sleep(0.2)
    started = time.perf_counter()
    assert c.close(timeout=0.3) is False
    assert time.perf_counter() - started < 1.0
    fake.release.set()


def test_failure_just_before_close_is_reported_by_close(spec):
    c = parapolicy.Controller(_RoundsPolicy(spec, rounds=1, round_s=0.0), mode="async", control_hz=10)
    for _ in range(5):
        c.act(np.zeros(4))
    c.policy.fail = True
    for _ in range(3):  # the refill starts in the background and fails there
        c.act(np.zeros(4))
    c._inflight.done.wait(5)
    with pytest.raises(ControllerError, match="inference failed before close: RuntimeError: GPU fell off the bus"):
        c.close()
    assert c.close() is True  # reported once


def test_act_from_two_threads_is_one_clear_error_and_no_doubled_inference(spec):
    fake = _RoundsPolicy(spec, rounds=10, round_s=0.05)
    c = parapolicy.Controller(fake, mode="sync")
    first = threading.Thread(target=c.act, args=(np.zeros(4),))
    first.start()
    time.sleep(0.1)
    with pytest.raises(ControllerError, match="act\\(\\) called from two threads at once"):
        c.act(np.zeros(4))
    first.join(5)
    assert fake.calls == 1
    c.close()


def test_fallbacks_are_counted_in_stats(spec):
    fake = _RoundsPolicy(spec, rounds=1, round_s=0.0, fallback="sequential: non-finite values in Picard round 3")
    with parapolicy.Controller(fake, mode="sync") as c:
        for _ in range(17):
            c.act(np.zeros(4))
        assert c.stats["fallbacks"] == 3 and c.stats["rounds_per_chunk"] == 1.0
    fake.fallback = None
    with parapolicy.Controller(fake, mode="sync") as c:
        c.act(np.zeros(4))
        assert c.stats["fallbacks"] == 0


def test_rtc_controller_freezes_what_executes_during_inference(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    seen = []

    class Recording:
        spec = policy.spec

        def predict_action(self, obs, **kwargs):
            seen.append(kwargs.get("prefix"))
            return policy.predict_action(obs, **kwargs)

    c = parapolicy.Controller(Recording(), mode="rtc", delay_ticks=2, max_guidance_weight=3.0,
                              generator=torch.Generator().manual_seed(0))
    executed = [c.act(np.array([0.1, -0.5, 0.2, 0.3], dtype=np.float32)) for _ in range(30)]
    c.close()
    prefixed = [p for p in seen if p is not None]
    assert len(prefixed) >= 3 and all(p.frozen == 2 and p.max_guidance_weight == 3.0 for p in prefixed)
    for p in prefixed:  # the frozen actions are the next two the robot executed
        assert any(np.array_equal(np.stack(executed[k : k + 2]), p.actions[0, :2].numpy()) for k in range(29))
    stats = c.stats
    assert stats["mode"] == "rtc" and stats["jump_at_switch"]["count"] >= 3


@pytest.fixture(scope="module")
def toy_policy(toy_ckpt):  # noqa: F811
    return parapolicy.load_policy(toy_ckpt)


@pytest.mark.parametrize("bad, message", [
    (np.zeros(5), r"obs\['obs'\] must be a numeric array of shape \(4,\), got float64 of shape \(5,\)"),
    (np.array([0.0, np.nan, 0.0, 0.0]), r"obs\['obs'\] contains NaN or inf"),
    ("abcd", r"obs\['obs'\] must be a numeric array of shape \(4,\), got <U4"),
    ([[1.0, 2.0], [3.0]], r"obs\['obs'\] must be a numeric array of shape \(4,\), got list"),
    ({"state": np.zeros(4)}, r"obs lacks 'obs'; expected keys \['obs'\], got \['state'\]"),
    (None, r"obs\['obs'\] must be a numeric array"),
])
def test_a_bad_observation_is_one_error_and_the_next_good_one_works(toy_policy, bad, message):
    """A bad observation used to enter the history, so every later inference failed with a raw error."""
    policy = toy_policy
    good = np.linspace(-0.5, 0.5, 4)
    with parapolicy.Controller(policy, mode="sync", generator=torch.Generator().manual_seed(0)) as c:
        c.act(good)
        with pytest.raises(ControllerError, match=message):
            c.act(bad)
        actions = [c.act(good) for _ in range(2 * c.n_action_steps)]  # two more chunks, from good history only
    assert all(a.shape == (policy.spec.action_dim,) and np.isfinite(a).all() for a in actions)
