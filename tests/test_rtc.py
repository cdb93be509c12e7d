"""Real-time chunking: sampling with a known action prefix, and the simulated-clock episodes."""

import math

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

import parapolicy
from parapolicy.errors import ControllerConfigError, PrefixError
from parapolicy.eval.realtime import RealtimeSettings, run_realtime
from parapolicy.eval.episodes import run_batch
from parapolicy.samplers import DenoisingProblem, Sequential, draw_noises, make_step_rule
from parapolicy.samplers.prefix import ActionPrefix, HardPrefixDenoiser, soft_weights
from parapolicy_envs import MultiStepWrapper
from parapolicy_envs.toy import ToyReachEnv

OBS = {"obs": torch.tensor([[[0.1, -0.5, 0.2, 0.3], [0.12, -0.48, 0.2, 0.3]],
                            [[-0.3, 0.4, -0.1, 0.0], [-0.28, 0.41, -0.1, 0.0]]])}


def _predict(policy, **kw):
    return policy.predict_action(OBS, generator=torch.Generator().manual_seed(7), **kw)["action_pred"]


def test_soft_weights_are_rtc_exponential_mask():
    c = torch.tensor([4 / 5, 3 / 5, 2 / 5, 1 / 5], dtype=torch.float64)
    decay = (c * torch.expm1(c) / (math.e - 1)).float()
    expected = torch.cat([torch.ones(2), decay, torch.zeros(4)])
    assert torch.allclose(soft_weights(2, 6, 10), expected, atol=1e-7)


@pytest.mark.parametrize("guidance", ["hard", "soft"])
def test_prefix_is_kept_bit_for_bit_and_exact_parallel_samplers_agree(toy_ckpt, guidance):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    free = _predict(policy)
    known = free[:, 1:9] + 0.25  # not what the policy would do unconstrained
    prefix = ActionPrefix(known, frozen=3, guidance=guidance)
    answers = {}
    for name, settings in (("sequential", {}), ("picard", {"window": 4, "tolerance": 1e-3}),
                           ("newton_picard", {"window": 10, "tolerance": 1e-3}), ("quasi_newton", {"tolerance": 1e-3})):
        answers[name] = _predict(policy.set_sampler(name, **settings), prefix=prefix)
        assert torch.equal(answers[name][:, 1:4], known[:, :3])
    assert not torch.allclose(answers["sequential"][:, 4:], free[:, 4:], atol=1e-3)  # the constraint acts
    for name in ("picard", "newton_picard", "quasi_newton"):
        assert (answers[name] - answers["sequential"]).abs().max() < 1e-2


def test_soft_guidance_weight_cap_pulls_the_rest_of_the_overlap_harder(toy_ckpt):  # noqa: F811
    """RTC's beta caps the guidance gain: a higher cap brings the unfrozen part of the overlap
    closer to the old plan; the frozen actions come back unchanged whatever it is."""
    policy = parapolicy.load_policy(toy_ckpt)
    known = _predict(policy)[:, 1:9] + 0.25
    gaps = []
    for beta in (1.0, 10.0):
        got = _predict(policy, prefix=ActionPrefix(known, frozen=3, max_guidance_weight=beta))
        assert torch.equal(got[:, 1:4], known[:, :3])
        gaps.append(float((got[:, 4:6] - known[:, 3:5]).abs().mean()))
    assert gaps[1] < gaps[0]


def test_zero_delay_prefix_is_the_plain_sampler_and_draws_nothing_extra(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    g_plain, g_prefix = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    plain = policy.predict_action(OBS, generator=g_plain)["action_pred"]
    known = torch.zeros(2, 8, 2)
    same = policy.predict_action(OBS, generator=g_prefix, prefix=ActionPrefix(known, frozen=0))["action_pred"]
    assert torch.equal(plain, same)
    policy.predict_action(OBS, generator=g_prefix, prefix=ActionPrefix(known, frozen=2))
    policy.predict_action(OBS, generator=g_plain)
    assert torch.equal(torch.randn(3, generator=g_plain), torch.randn(3, generator=g_prefix))


def test_prefix_errors_name_expected_and_found(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    with pytest.raises(PrefixError, match=r"shape \(B, L >= frozen=3, action_dim\), got \(2, 2\)"):
        ActionPrefix(torch.zeros(2, 2), frozen=3)
    with pytest.raises(PrefixError, match="finite"):
        ActionPrefix(torch.full((2, 4, 2), float("nan")), frozen=1)
    with pytest.raises(PrefixError, match="guidance must be one of"):
        ActionPrefix(torch.zeros(2, 4, 2), frozen=1, guidance="medium")
    with pytest.raises(PrefixError, match=r"expected \(2, L, 2\)"):
        policy.predict_action(OBS, prefix=ActionPrefix(torch.zeros(2, 4, 3), frozen=1))
    with pytest.raises(PrefixError, match="has 20 actions but the chunk has only 15"):
        policy.predict_action(OBS, prefix=ActionPrefix(torch.zeros(2, 20, 2), frozen=1))
    policy.set_sampler("piadm")
    with pytest.raises(PrefixError, match="exact discrete-time sampler.*got 'piadm'"):
        policy.predict_action(OBS, prefix=ActionPrefix(torch.zeros(2, 4, 2), frozen=1))


# ---------------------------------------------------------------- closed-form Gaussian check
H = 4
SIGMA = 0.8 ** (torch.arange(H)[:, None] - torch.arange(H)[None, :]).abs().double()  # AR(1) data covariance
MU = torch.tensor([0.5, -0.3, 0.2, 0.1], dtype=torch.float64)
Y = torch.tensor([1.0, 0.8], dtype=torch.float64)  # the known first two entries


def _gaussian_denoiser(alphas):
    """The exact eps-prediction for data N(MU, SIGMA): sqrt(1-abar) Sigma_t^-1 (x - sqrt(abar) mu)."""
    def denoise(x, t):
        flat, out = x.double().reshape(x.shape[0], H), torch.empty(x.shape[0], H, dtype=torch.float64)
        for value in t.unique():
            rows, a = t == value, alphas[value]
            sigma_t = a * SIGMA + (1 - a) * torch.eye(H, dtype=torch.float64)
            out[rows] = (1 - a).sqrt() * torch.linalg.solve(sigma_t, (flat[rows] - a.sqrt() * MU).T).T
        return out.float().reshape(x.shape)
    return denoise


def _replacement_moments(rule, alphas):
    """Mean and covariance of the unknown entries after the hard form, by propagating Gaussians.

    State v = (x_b, z): the unknowns and the noise z behind the known part's forward-noised
    value x_a = sqrt(abar) y + sqrt(1 - abar) z. Each step maps v linearly,
    x_b' = M x_b + K x_a + c + std * n, and z' is the step's fresh draw (DDPM) or stays (DDIM).
    """
    coef, eye = rule.coefficients, torch.eye(H, dtype=torch.float64)
    mean, cov = torch.zeros(H, dtype=torch.float64), eye.clone()  # x_T: unknowns and z = x_T's known entries
    for i, t in enumerate(rule.timesteps.tolist()):
        a = alphas[t]
        precision = torch.linalg.inv(a * SIGMA + (1 - a) * eye)
        p_ba, p_bb = precision[2:, :2], precision[2:, 2:]
        first, x0s, es, xs = (float(v[i]) for v in (coef.first, coef.x0_scale, coef.eps_scale, coef.x_scale))
        # x' = x0s * (x - es * eps) / xs + (first * eps if ddim else first * x); eps_b = sqrt(1-a) (P_ba xa + P_bb xb)
        on_x, on_eps = x0s / xs + (0.0 if coef.ddim else first), -x0s * es / xs + (first if coef.ddim else 0.0)
        scale = (1 - a).sqrt()
        k = on_eps * scale * p_ba
        step = torch.zeros(H, H, dtype=torch.float64)
        step[:2, :2] = on_x * eye[:2, :2] + on_eps * scale * p_bb
        step[:2, 2:] = k * (1 - a).sqrt()
        step[2:, 2:] = eye[:2, :2]
        shift = torch.zeros(H, dtype=torch.float64)
        shift[:2] = k @ (a.sqrt() * Y) - on_eps * scale * a.sqrt() * (p_ba @ MU[:2] + p_bb @ MU[2:])
        mean, cov = step @ mean + shift, step @ cov @ step.T
        std = float(coef.noise_std[i]) if bool(coef.drawn[i]) else 0.0
        cov[:2, :2] += std**2 * eye[:2, :2]
        if rule.draws_noise[i]:  # the next state's known part is noised with this step's fresh draw
            mean[2:], cov[2:, :], cov[:, 2:] = 0.0, 0.0, 0.0
            cov[2:, 2:] = eye[:2, :2]
    return mean[:2], cov[:2, :2]


@pytest.mark.parametrize("scheduler", [DDPMScheduler, DDIMScheduler])
def test_hard_prefix_samples_the_closed_form_gaussian_answer(scheduler):
    """For a linear-Gaussian denoiser every quantity is Gaussian, so the hard form's answer has
    closed-form moments. They are NOT those of the true conditional p(b | a): replacing the
    known entries conditions each step on the noisy known values, not on the clean ones, and
    lands between the marginal and the conditional (asserted, so the gap stays visible)."""
    sched = scheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2", clip_sample=False)
    sched.set_timesteps(20)
    rule = make_step_rule(sched)
    alphas = rule.alphas_cumprod.double()
    batch = 40000
    draws = draw_noises(rule, (batch, H, 1), torch.Generator().manual_seed(1))
    known = torch.zeros(batch, H, 1)
    known[:, :2, 0] = Y.float()
    mask = torch.zeros(batch, H, 1, dtype=torch.bool)
    mask[:, :2] = True
    denoise = HardPrefixDenoiser(_gaussian_denoiser(alphas), rule, draws.x_T, draws.noises, known, mask)
    sample = Sequential().sample(DenoisingProblem(denoise, rule, draws.x_T, draws.noises)).sample[:, 2:, 0].double()
    mean, cov = _replacement_moments(rule, alphas)
    assert torch.allclose(sample.mean(0), mean, atol=0.02)
    assert torch.allclose(torch.cov(sample.T), cov, atol=0.03)
    cond_mean = MU[2:] + SIGMA[2:, :2] @ torch.linalg.solve(SIGMA[:2, :2], Y - MU[:2])
    assert bool(((mean > MU[2:] + 0.1) & (mean < cond_mean - 0.1)).all())


# ---------------------------------------------------------------- simulated clock
def _toy_run(policy, settings, seeds=(100000, 100001)):
    return run_realtime(policy, ToyReachEnv, list(seeds), settings, generator=torch.Generator().manual_seed(0),
                        max_steps=40)


@pytest.fixture(scope="module")
def toy_run_once(toy_ckpt):  # noqa: F811
    """``toy_run_once(*settings)``: ``_toy_run`` of a freshly loaded policy (its default sequential
    sampler, as in the tests) with ``RealtimeSettings(*settings)``, made once per module. Several
    tests ran the same deterministic run; they only read it."""
    made = {}

    def get(*settings):
        if settings not in made:
            made[settings] = _toy_run(parapolicy.load_policy(toy_ckpt), RealtimeSettings(*settings))
        return made[settings]

    return get


def test_simulated_sync_reproduces_the_rollout_runner(toy_ckpt, toy_run_once):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    run = run_batch(policy, lambda: MultiStepWrapper(ToyReachEnv(), 2, 8, 40), [100000, 100001],
                    generator=torch.Generator().manual_seed(0), record_actions=True)
    sim = toy_run_once("sync")
    assert sim.scores == [e.max_reward for e in run.episodes]
    for recorded, (_, planned) in zip(run.actions, sim.plans):
        assert np.array_equal(recorded, planned[:, :8].astype(recorded.dtype))


def test_zero_delay_rtc_and_async_equal_sync(toy_ckpt, toy_run_once):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    sync = toy_run_once("sync")
    for settings in (RealtimeSettings("async", 0), RealtimeSettings("rtc", 0, "hard"),
                     RealtimeSettings("rtc", 0, "soft")):
        other = _toy_run(policy, settings)
        assert other.scores == sync.scores and other.jumps == sync.jumps
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(other.plans, sync.plans))


@pytest.mark.parametrize("guidance", ["hard", "soft"])
def test_rtc_chunks_start_with_the_frozen_actions_bit_for_bit(toy_ckpt, toy_run_once, guidance):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    d = 3
    res = _toy_run(policy, RealtimeSettings("rtc", d, guidance))
    naive = toy_run_once("async", d)  # the same for both guidances: async has none
    s = res.execution_horizon
    assert (d, s) == (3, 5) and len(res.plans) >= 4
    for (t0, old), (t1, new) in zip(res.plans, res.plans[1:]):
        assert t1 - t0 == s
        live = ~np.isnan(new[:, 0, 0])
        assert np.array_equal(new[live, :d], old[live, s : s + d])
    assert not np.array_equal(res.plans[1][1][:, :d], naive.plans[1][1][:, :d])


def test_simulated_clock_hands_its_guidance_settings_to_every_prefix(toy_ckpt):  # noqa: F811
    policy = parapolicy.load_policy(toy_ckpt)
    seen = []

    class Recording:
        def __getattr__(self, name):
            return getattr(policy, name)

        def predict_action(self, obs, **kwargs):
            seen.append(kwargs.get("prefix"))
            return policy.predict_action(obs, **kwargs)

    _toy_run(Recording(), RealtimeSettings("rtc", 2, "soft", 2.5), seeds=(100000,))
    prefixed = [p for p in seen if p is not None]
    assert len(prefixed) >= 2
    assert all((p.frozen, p.guidance, p.max_guidance_weight) == (2, "soft", 2.5) for p in prefixed)


def test_realtime_settings_errors():
    with pytest.raises(ControllerConfigError, match=r"mode must be one of .*got 'naive'"):
        RealtimeSettings("naive")
    with pytest.raises(ControllerConfigError, match="delay_ticks must be an integer >= 0, got -1"):
        RealtimeSettings("rtc", -1)
    with pytest.raises(ControllerConfigError, match="delay_ticks=9 needs chunks of >= 18 actions, the policy plans 15"):
        RealtimeSettings("rtc", 9).horizon(8, 15)
    with pytest.raises(ControllerConfigError, match="max_guidance_weight must be a finite number > 0, got nan"):
        RealtimeSettings("rtc", 2, "soft", float("nan"))


def test_rollout_cli_runs_rtc_on_the_simulated_clock(toy_ckpt, tmp_path):  # noqa: F811
    import json

    from hydra import compose, initialize_config_dir

    from parapolicy.eval.build import CONFIG_DIR
    from parapolicy.eval.run import run_rollout

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=disabled",
                                            "progress=false", "controller.mode=rtc", "controller.delay_ticks=2",
                                            "controller.max_guidance_weight=2.5"])
    run_rollout(cfg, str(tmp_path))
    results = json.load(open(tmp_path / "results.json"))
    realtime = results["realtime"]
    assert (realtime["mode"], realtime["delay_ticks"], realtime["guidance"]) == ("rtc", 2, "soft")
    assert realtime["max_guidance_weight"] == 2.5
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=2", "logger=disabled",
                                            "progress=false", "controller.mode=rtc", "controller.max_guidance_weight=0"])
    with pytest.raises(ControllerConfigError, match="max_guidance_weight must be a finite number > 0, got 0"):
        run_rollout(cfg, str(tmp_path / "zero"))  # 0 is refused, not read as "use the default"
    assert results["n_episodes"] == 2 and realtime["mean_jump"] > 0 and realtime["execution_horizon"] == 6
