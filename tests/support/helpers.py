"""Shared test fixtures: schedulers as upstream configures them, and known denoisers."""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from parapolicy.samplers.continuous_time import alpha_bar_at

DP_SCHEDULE = dict(
    num_train_timesteps=100,
    beta_start=1e-4,
    beta_end=0.02,
    beta_schedule="squaredcos_cap_v2",
    clip_sample=True,
    prediction_type="epsilon",
)


def make_scheduler(kind: str, steps: int | None = None):
    """The schedulers upstream DiffusionPolicy configs use (DDPM-100, DDIM), plus DPM-Solver."""
    if kind == "ddpm":
        sched = DDPMScheduler(**DP_SCHEDULE, variance_type="fixed_small")
        sched.set_timesteps(steps or 100)
    elif kind == "ddim":
        sched = DDIMScheduler(**DP_SCHEDULE, set_alpha_to_one=True, steps_offset=0)
        sched.set_timesteps(steps or 8)
    elif kind == "dpm":
        sched = DPMSolverMultistepScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
        sched.set_timesteps(steps or 16)
    else:
        raise ValueError(kind)
    return sched


class GaussianDenoiser:
    """Exact epsilon-prediction for data ~ N(mu, s^2 I): the score is closed-form."""

    def __init__(self, scheduler, mu=0.2, s=0.15):
        self.ac = scheduler.alphas_cumprod.float()
        self.mu, self.s = mu, s

    def __call__(self, x, t):
        t = t.cpu()
        # fractional t (randomized midpoints): the continuous schedule those samplers assume
        a = self.ac[t] if not t.is_floating_point() else alpha_bar_at(self.ac, t).float()
        a = a.to(x.device).view(-1, *([1] * (x.dim() - 1)))
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)


class SmoothNetDenoiser(torch.nn.Module):
    """The exact Gaussian denoiser plus a random tanh-MLP term: nonlinear and smooth,
    with outputs in the range a trained epsilon-network produces."""

    def __init__(self, dim, seed=0, scheduler=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.randn(dim + 8, 64, generator=g) / (dim + 8) ** 0.5
        self.w2 = torch.randn(64, dim, generator=g) / 8.0
        self.freq = torch.randn(4, generator=g)
        self.gaussian = GaussianDenoiser(scheduler or make_scheduler("ddpm"))

    def __call__(self, x, t):
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        tt = t.float()[:, None] / 100.0 * self.freq[None]
        emb = torch.cat([torch.sin(tt), torch.cos(tt)], dim=-1)
        h = torch.tanh(torch.cat([flat, emb], dim=-1) @ self.w1)
        return self.gaussian(x, t) + 0.3 * (h @ self.w2).reshape(shape)


class SamplePredictionDenoiser:
    """The clean-sample prediction of an epsilon denoiser (continuous t: log-SNR levels)."""

    def __init__(self, eps_denoiser, scheduler):
        self.eps_denoiser, self.ac = eps_denoiser, scheduler.alphas_cumprod

    def __call__(self, x, t):
        a = alpha_bar_at(self.ac, t.cpu()).float().to(x.device).view(-1, *([1] * (x.dim() - 1)))
        return (x - (1 - a).sqrt() * self.eps_denoiser(x, t)) / a.sqrt()


class CountingDenoiser:
    """Wraps a denoiser and records the batch size of every network call."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, x, t):
        self.calls.append(int(x.shape[0]))
        return self.fn(x, t)


def upstream_conditional_sample(model, scheduler, shape, generator, cond_data=None, cond_mask=None, **step_kwargs):
    """Upstream DiffusionPolicy's conditional_sample loop, written as a reference.

    x_T from randn(generator), then ``scheduler.step(..., generator=generator, **kwargs)`` per
    step (upstream passes the policy's kwargs, e.g. DDIM's eta), with the inpainting
    condition imposed before every call and once after.
    """
    trajectory = torch.randn(shape, generator=generator)
    for t in scheduler.timesteps:
        if cond_mask is not None:
            trajectory[cond_mask] = cond_data[cond_mask]
        eps = model(trajectory, t.expand(shape[0]))
        trajectory = scheduler.step(eps, t, trajectory, generator=generator, **step_kwargs).prev_sample
    if cond_mask is not None:
        trajectory[cond_mask] = cond_data[cond_mask]
    return trajectory


def solve(sampler, denoise, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, **extra):
    """``sampler.sample`` on the problem these arguments define (extra: the sampler's own draws)."""
    from parapolicy.samplers import DenoisingProblem

    return sampler.sample(DenoisingProblem(denoise, scheduler, x_T, noises, cond_data, cond_mask, extra=extra))


def nan_on_batches_above(net, rows: int):
    """``net``, returning NaN on every call with more than ``rows`` rows (a parallel round, not the chain)."""

    def denoise(x, t):
        eps = net(x, t)
        return eps * float("nan") if x.shape[0] > rows else eps

    return denoise


def inpainting_condition(shape, seed: int = 0):
    """(cond_data, cond_mask): random data held on the first two rows of the last action dim."""
    cond_data = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    cond_mask = torch.zeros(*shape, dtype=torch.bool)
    cond_mask[:, :2, -1] = True
    return cond_data, cond_mask


class ProgressRecorder:
    """Stands in for ``parapolicy.eval.progress.Progress``: records every pass and how far it got."""

    def __init__(self):
        self.passes = []

    def episodes(self, desc, n_episodes):
        entry = {"desc": desc, "kind": "steps", "total": n_episodes, "calls": 0, "finished": 0}
        self.passes.append(entry)

        def on_chunk(steps, finished):
            entry["calls"] += 1
            entry["finished"] += len(finished)

        return on_chunk

    def chunks(self, desc, total):
        entry = {"desc": desc, "kind": "chunks", "total": total, "calls": 0}
        self.passes.append(entry)

        def on_check(*_):
            entry["calls"] += 1

        return on_check

    def close(self):
        pass
