"""One denoising transition x_i -> x_{i+1}, evaluated for many steps at once.

Samplers never hard-code schedule math: a ``StepRule`` asks the diffusers scheduler the
user configured. DDPM and DDIM go through diffusers' own ``batch_step_no_noise`` (the
parallel schedulers' vectorised step), which is bit-identical to ``Scheduler.step`` for
the same inputs, so a sequential loop over the rule reproduces upstream exactly and a
parallel sampler's fixed point is that same trajectory. DPM-Solver is multistep; it is
driven through diffusers' own ``step`` with its internal history set explicitly.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch

from parapolicy.errors import UnsupportedSchedulerError

SUPPORTED_SCHEDULERS = ("DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler")


def _posterior_variances(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, final_alpha: float) -> torch.Tensor:
    """DDPM posterior variance of every step of the schedule.

    ParaDiGMS measures a step's change against the noise variance at that step, so the
    tolerance means the same thing at every noise level and for every scheduler.
    """
    ac = alphas_cumprod.to(torch.float64)
    t = timesteps.long()
    a_t = ac[t]
    a_prev = torch.cat([ac[t[1:]], torch.tensor([final_alpha], dtype=torch.float64)])
    var = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    return var.clamp(min=1e-20).to(torch.float32)


@dataclass
class StepRule:
    """A scheduler frozen at its current timesteps, as a stateless transition function.

    ``transition(start, x, eps, noise, past)`` maps states ``x[k]`` at steps
    ``start + k`` to the states after those steps. ``past`` carries the converted model
    outputs of the steps just before ``start`` (multistep solvers only).
    """

    timesteps: torch.Tensor  # (N,) int64, descending
    draws_noise: tuple[bool, ...]  # which steps consume one randn(shape) from the generator
    noise_dtype: torch.dtype | None  # dtype of the per-step draws (None: same as the sample)
    error_variance: torch.Tensor  # (N,) noise variance of each step: scales Picard's convergence test
    alphas_cumprod: torch.Tensor | None = None  # (num_train_timesteps,) of the scheduler
    history_length: int = 0  # how many previous converted outputs a step needs
    _scheduler: object = field(default=None, repr=False)

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def transition(self, start: int, x, eps, noise, past: Sequence[torch.Tensor] = ()):
        raise NotImplementedError

    def step_coefficients(self, device):
        """Per-step coefficients for graph capture, or None when the rule has no such form."""
        return None


@dataclass
class _ParallelOneStepRule(StepRule):
    """DDPM / DDIM: the next state depends on (x_i, eps_i) and the step's own noise only."""

    noise_std: torch.Tensor | None = None  # (N,) std multiplying the pre-drawn noise of each step
    step_kwargs: dict = field(default_factory=dict)

    def transition(self, start, x, eps, noise, past=()):
        k, b = x.shape[0], x.shape[1]
        rows = k * b
        # timesteps stay on the CPU: diffusers then gathers its alphas with host-side indices
        # (same values), where device indices would make its boolean-mask write wait for the GPU
        t_rows = self.timesteps[start : start + k].repeat_interleave(b)
        mean = self._scheduler.batch_step_no_noise(
            eps.reshape(rows, *x.shape[2:]), t_rows, x.reshape(rows, *x.shape[2:]), **self.step_kwargs
        ).reshape(x.shape)
        if noise is None:
            return mean, None
        std = self.noise_std[start : start + k].to(device=x.device, dtype=mean.dtype)
        std = std.view(k, *([1] * (x.dim() - 1)))
        drawn = torch.tensor(self.draws_noise[start : start + k], device=x.device).view_as(std)
        return torch.where(drawn, mean + std * noise, mean), None

    def step_coefficients(self, device) -> "StepCoefficients | None":
        """Per-step coefficients of this rule's transition, on ``device`` (None if not expressible).

        A CUDA graph cannot contain diffusers' step (it writes through a boolean mask, which
        reads the GPU), so a graphed Picard round applies these instead. They are computed
        with the same float32 operations, in the same order, as ``batch_step_no_noise``, so
        ``StepCoefficients.transition`` gives the same bits (tested).
        """
        sched = self._scheduler
        cfg = sched.config
        if cfg.prediction_type != "epsilon" or getattr(cfg, "thresholding", False):
            return None
        if self.step_kwargs.get("use_clipped_model_output", False):
            return None
        cache = self.__dict__.setdefault("_coefficients", {})
        key = str(device)
        if key not in cache:
            cache[key] = _one_step_coefficients(self, device)
        return cache[key]


@dataclass
class StepCoefficients:
    """x_{i+1} = B_i * clip((x - C_i eps) / D_i) + (A_i * x  or  E_i * eps) [+ std_i * noise_i]."""

    ddim: bool  # DDIM adds E*eps (direction to x_t); DDPM adds A*x (posterior mean)
    first: torch.Tensor  # (N,) A (DDPM) or E (DDIM)
    x0_scale: torch.Tensor  # (N,) B
    eps_scale: torch.Tensor  # (N,) C = sqrt(1 - alpha_bar_t)
    x_scale: torch.Tensor  # (N,) D = sqrt(alpha_bar_t)
    noise_std: torch.Tensor  # (N,)
    drawn: torch.Tensor  # (N,) bool
    clip: float | None

    def transition(self, index: torch.Tensor, x, eps, noise):
        """The states after steps ``index`` (K,) from states ``x`` and outputs ``eps`` (K, B, ...)."""
        view = (index.shape[0],) + (1,) * (x.dim() - 1)
        pick = lambda v: v.index_select(0, index).view(view)  # noqa: E731
        x0 = (x - pick(self.eps_scale) * eps) / pick(self.x_scale)
        if self.clip is not None:
            x0 = x0.clamp(-self.clip, self.clip)
        mean = pick(self.x0_scale) * x0 + (pick(self.first) * eps if self.ddim else pick(self.first) * x)
        if noise is None:
            return mean
        return torch.where(pick(self.drawn), mean + pick(self.noise_std) * noise, mean)


def _one_step_coefficients(rule: "_ParallelOneStepRule", device) -> StepCoefficients:
    sched = rule._scheduler
    cfg = sched.config
    ddim = "DDIM" in type(sched).__name__
    t = rule.timesteps.to(device)
    prev_t = t - cfg.num_train_timesteps // sched.num_inference_steps
    ac = sched.alphas_cumprod.to(device)
    alpha_t = ac[t]
    alpha_prev = torch.where(prev_t >= 0, ac[prev_t.clamp(min=0)], torch.ones_like(alpha_t))
    beta_t = 1 - alpha_t
    if ddim:
        variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev)
        std_dev = rule.step_kwargs.get("eta", 0.0) * variance ** (0.5)
        first, x0_scale = (1 - alpha_prev - std_dev**2) ** (0.5), alpha_prev ** (0.5)
    else:
        current_alpha = alpha_t / alpha_prev
        first = current_alpha ** (0.5) * (1 - alpha_prev) / beta_t
        x0_scale = (alpha_prev ** (0.5) * (1 - current_alpha)) / beta_t
    clip = float(cfg.clip_sample_range) if cfg.clip_sample else None
    return StepCoefficients(
        ddim=ddim, first=first, x0_scale=x0_scale, eps_scale=beta_t ** (0.5), x_scale=alpha_t ** (0.5),
        noise_std=rule.noise_std.to(device), drawn=torch.tensor(rule.draws_noise, device=device), clip=clip,
    )


class _DPMSolverRule(StepRule):
    """DPM-Solver(++) multistep: diffusers' own ``step`` with its history set per step."""

    def step_coefficients(self, device):
        return None  # multistep: a step needs earlier outputs, not one coefficient set

    def transition(self, start, x, eps, noise, past=()):
        order = self._scheduler.config.solver_order
        history = list(past)[-(order - 1) :] if order > 1 else []
        outs, converted = [], []
        for k in range(x.shape[0]):
            i = start + k
            sched = copy.copy(self._scheduler)
            sched.model_outputs = [None] * (order - len(history)) + history
            sched.lower_order_nums = min(i, order)
            sched._step_index = i
            kwargs = {"variance_noise": noise[k]} if self.draws_noise[i] else {}
            outs.append(sched.step(eps[k], self.timesteps[i], x[k], **kwargs).prev_sample)
            converted.append(sched.model_outputs[-1])
            if order > 1:
                history = (history + [converted[-1]])[-(order - 1) :]
        return torch.stack(outs), torch.stack(converted)


def make_step_rule(scheduler, eta: float = 0.0) -> StepRule:
    """Freeze ``scheduler`` (with ``set_timesteps`` already called) into a ``StepRule``.

    The scheduler is copied, so later ``set_timesteps`` calls by the caller do not change
    a rule a sampler is using. ``eta`` is DDIM's stochasticity (upstream passes none).
    """
    if isinstance(scheduler, StepRule):
        return scheduler
    name = type(scheduler).__name__
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None or getattr(scheduler, "config", None) is None:
        raise UnsupportedSchedulerError(
            f"{name} is not a configured diffusers scheduler; supported: {', '.join(SUPPORTED_SCHEDULERS)}"
        )
    timesteps = torch.as_tensor(timesteps).long().cpu()
    if name in ("DDPMScheduler", "DDPMParallelScheduler"):
        return _ddpm_rule(scheduler, timesteps)
    if name in ("DDIMScheduler", "DDIMParallelScheduler"):
        return _ddim_rule(scheduler, timesteps, eta)
    if name == "DPMSolverMultistepScheduler":
        return _dpm_rule(scheduler, timesteps)
    raise UnsupportedSchedulerError(
        f"scheduler {name} has no step rule parapolicy can run; supported: {', '.join(SUPPORTED_SCHEDULERS)}"
    )


def _parallel_copy(scheduler, parallel_cls):
    par = parallel_cls.from_config(scheduler.config)
    par.set_timesteps(scheduler.num_inference_steps)
    if not torch.equal(torch.as_tensor(par.timesteps).long().cpu(), torch.as_tensor(scheduler.timesteps).long().cpu()):
        raise UnsupportedSchedulerError(
            f"{type(scheduler).__name__} has custom timesteps that {parallel_cls.__name__} cannot reproduce"
        )
    return par


def _ddpm_rule(scheduler, timesteps) -> StepRule:
    from diffusers import DDPMParallelScheduler

    vtype = scheduler.config.variance_type
    if vtype not in ("fixed_small", "fixed_large"):
        raise UnsupportedSchedulerError(
            f"DDPMScheduler variance_type={vtype!r} is not supported (use fixed_small or fixed_large)"
        )
    par = _parallel_copy(scheduler, DDPMParallelScheduler)
    std = torch.stack([par._get_variance(int(t)) ** 0.5 for t in timesteps]).float()
    return _ParallelOneStepRule(
        timesteps=timesteps,
        draws_noise=tuple(bool(t > 0) for t in timesteps),
        noise_dtype=None,
        error_variance=_posterior_variances(par.alphas_cumprod, timesteps, 1.0),
        alphas_cumprod=par.alphas_cumprod.float(),
        _scheduler=par,
        noise_std=std,
    )


def _ddim_rule(scheduler, timesteps, eta) -> StepRule:
    from diffusers import DDIMParallelScheduler

    par = _parallel_copy(scheduler, DDIMParallelScheduler)
    prev = [int(t) - par.config.num_train_timesteps // par.num_inference_steps for t in timesteps]
    std = torch.stack([eta * par._get_variance(int(t), p) ** 0.5 for t, p in zip(timesteps, prev)]).float()
    final_alpha = float(par.final_alpha_cumprod)
    return _ParallelOneStepRule(
        timesteps=timesteps,
        draws_noise=tuple(eta > 0 for _ in timesteps),
        noise_dtype=None,
        error_variance=_posterior_variances(par.alphas_cumprod, timesteps, final_alpha),
        alphas_cumprod=par.alphas_cumprod.float(),
        _scheduler=par,
        noise_std=std,
        step_kwargs={"eta": eta},
    )


def _dpm_rule(scheduler, timesteps) -> StepRule:
    algo = scheduler.config.algorithm_type
    if algo not in ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"):
        raise UnsupportedSchedulerError(f"DPMSolverMultistepScheduler algorithm_type={algo!r} is not supported")
    sched = copy.deepcopy(scheduler)
    stochastic = algo.startswith("sde-")
    return _DPMSolverRule(
        timesteps=timesteps,
        draws_noise=tuple(stochastic for _ in timesteps),
        noise_dtype=torch.float32 if stochastic else None,
        error_variance=_posterior_variances(sched.alphas_cumprod, timesteps, 1.0),
        alphas_cumprod=sched.alphas_cumprod.float(),
        history_length=max(sched.config.solver_order - 1, 0),
        _scheduler=sched,
    )
