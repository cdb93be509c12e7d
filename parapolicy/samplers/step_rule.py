"""One denoising transition x_i -> x_{i+1}, for many steps at once: the only schedule maths.

Samplers never hard-code a schedule: a ``StepRule`` freezes the diffusers scheduler the
user configured (and DDIM's ``eta``) into per-step tensors. DDPM and DDIM with epsilon
prediction become per-step coefficients computed with diffusers' float32 operations in
diffusers' order, so a step gives the same bits as ``Scheduler.step`` (tested), runs on
index tensors without a host sync (a CUDA graph can hold it), and a parallel sampler's
fixed point is exactly the sequential trajectory. Other prediction types and thresholding
go through diffusers' own vectorised step; DPM-Solver is multistep and is driven through
diffusers' ``step`` with its history kept in a per-call memory.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections import namedtuple
from dataclasses import dataclass

import torch

from parapolicy.errors import SamplerConfigError, UnsupportedSchedulerError
from parapolicy.scheduler_kinds import SCHEDULER_KINDS

SUPPORTED_SCHEDULERS = tuple(SCHEDULER_KINDS.values())  # the diffusers classes a step rule is built for


def _posterior_variances(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor, final_alpha: float) -> torch.Tensor:
    """DDPM posterior variance of every step: the scale of the parallel samplers' tolerance.

    Measuring a step's change against the noise variance at that step makes the tolerance
    mean the same thing at every noise level and for every scheduler.
    """
    ac = alphas_cumprod.to(torch.float64)
    t = timesteps.long()
    a_t = ac[t]
    a_prev = torch.cat([ac[t[1:]], torch.tensor([final_alpha], dtype=torch.float64)])
    return posterior_variance(a_t, a_prev).clamp(min=1e-20).to(torch.float32)


def posterior_variance(alpha_from: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """Variance of the DDPM posterior for a step from noise level ``alpha_from`` to ``alpha_to`` (alpha_bar)."""
    return (1 - alpha_to) / (1 - alpha_from) * (1 - alpha_from / alpha_to)


def clip_range(config) -> float | None:
    """The range the scheduler clips its clean-sample prediction to, or None."""
    return float(getattr(config, "clip_sample_range", 1.0)) if getattr(config, "clip_sample", False) else None


StepScalars = namedtuple("StepScalars", "first x0_scale eps_scale x_scale drawn_std through_x0 eps_through_x0 partials")


@dataclass(frozen=True)
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

    def __post_init__(self):
        # the per-step scalars as one (N, 7) table: a round picks its steps' rows in one gather
        # instead of one gather per scalar (each a kernel on a GPU); the same floats, so the same bits.
        # The fifth is the noise's scale where a step draws (zero where it does not: its noise row is
        # zero, so no test is needed); the last two the unclipped partials' scalars, d next / d x0
        # (B / D) and its eps part.
        through_x0 = self.x0_scale / self.x_scale
        object.__setattr__(self, "drawn_std", self.noise_std * self.drawn)
        object.__setattr__(self, "table", torch.stack([self.first, self.x0_scale, self.eps_scale, self.x_scale,
                                                       self.drawn_std, through_x0, -(self.eps_scale * through_x0)], 1))

    def picked(self, index: torch.Tensor, like: torch.Tensor) -> StepScalars:
        """The scalars of steps ``index`` (K,), shaped to broadcast against ``like`` (K, ...)."""
        view = (index.shape[0],) + (1,) * (like.dim() - 1)
        rows = self.table.index_select(0, index)
        partials = rows[:, 5:7].view(view[:1] + (2,) + view[1:])  # both partials' scalars: one where clips them
        return StepScalars(*(column.view(view) for column in rows.unbind(1)), partials)

    @functools.cached_property
    def unclipped(self) -> "StepCoefficients":
        """The same steps without clipping: each is then affine in (x, eps)."""
        return dataclasses.replace(self, clip=None)

    def clean_prediction(self, index: torch.Tensor, x, eps):
        """The clean sample that steps ``index`` predict from ``x`` and ``eps``, before clipping."""
        picked = self.picked(index, x)
        return (x - picked.eps_scale * eps) / picked.x_scale

    def transition(self, index: torch.Tensor, x, eps, noise):
        """The states after steps ``index`` (K,) from states ``x`` and outputs ``eps`` (K, B, ...)."""
        return self._step(self.picked(index, x), x, eps, noise)[0]

    def linearised(self, index: torch.Tensor, x, eps, noise):
        """``transition`` and its partials at once, ``(next, d next / dx, d next / d eps, sides)``,
        the steps' scalars picked once and the clean-sample prediction formed once (kernels a GPU round
        saves); ``sides`` (``clipping_sides``): where each clean-sample prediction stands against the
        clipping range (None where nothing clips): the linearisation holds wherever those do.
        The partials are shaped like x: every step acts entry by entry, so they are its whole
        Jacobian (clipped entries carry no clean-sample term: clamp's derivative, as autograd takes
        it, is zero outside the range and on its edge)."""
        picked = self.picked(index, x)
        nxt, x0 = self._step(picked, x, eps, noise)
        return self._partials(picked, nxt, x, x0)

    def _step(self, picked, x, eps, noise):
        """The next states and the clean-sample prediction before clipping."""
        first, x0_scale, eps_scale, x_scale = picked[:4]
        x0 = (x - eps_scale * eps) / x_scale
        clipped = x0 if self.clip is None else x0.clamp(-self.clip, self.clip)
        mean = x0_scale * clipped + (first * eps if self.ddim else first * x)
        return (mean, x0) if noise is None else (mean + picked.drawn_std * noise, x0)

    def clipping_sides(self, x0: torch.Tensor) -> torch.Tensor:
        """-1 / 0 / +1 where clean-sample predictions ``x0`` are clipped below / kept / clipped above
        (NaN stays NaN): the entries a clipping step treats alike."""
        scaled = x0 if self.clip == 1.0 else x0 / self.clip
        return scaled.clamp(-1.0, 1.0).trunc()

    def _partials(self, picked, nxt, x, x0):
        partials, sides = picked.partials, None
        if self.clip is not None:  # a clipped entry has no clean-sample term
            sides = self.clipping_sides(x0)
            partials = torch.where((sides == 0).unsqueeze(1), partials, 0.0)
        through_x0, eps_through_x0 = partials.unbind(1)
        along_x = through_x0 if self.ddim else through_x0 + picked.first
        along_eps = picked.first + eps_through_x0 if self.ddim else eps_through_x0
        return nxt, torch.broadcast_to(along_x, x.shape), torch.broadcast_to(along_eps, x.shape), sides

    def to(self, device) -> "StepCoefficients":
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})

    def padded(self, extra: int) -> "StepCoefficients":
        """``extra`` copies of the last step appended, so a fixed-width window may read past the end."""
        if not extra:
            return self
        pad = lambda v: torch.cat([v, v[-1:].expand(extra)])
        return dataclasses.replace(self, **{f.name: pad(getattr(self, f.name)) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


@dataclass
class StepRule:
    """A scheduler frozen at its current timesteps, as a stateless transition function.

    ``transition(index, x, eps, noise, memory)`` maps states ``x[k]`` at steps
    ``index[k]`` to the states after those steps. ``memory`` (from ``new_memory``) is
    where a multistep solver keeps the converted outputs of earlier steps; one-step rules
    ignore it. ``coefficients`` is set when the step is pure tensor maths (graph-safe).
    """

    timesteps: torch.Tensor  # (N,) int64, descending
    draws_noise: tuple[bool, ...]  # which steps consume one randn(shape) from the generator
    noise_dtype: torch.dtype | None  # dtype of the per-step draws (None: same as the sample)
    error_variance: torch.Tensor  # (N,) noise variance of each step: scales the convergence test
    alphas_cumprod: torch.Tensor  # (num_train_timesteps,) of the scheduler
    config: object  # the scheduler's (frozen) diffusers config: prediction type, clipping, ...
    scheduler_name: str  # the diffusers class it was made from, for messages
    eta: float = 0.0  # DDIM stochasticity; 0 for every other scheduler
    history_length: int = 0  # how many previous converted outputs a step needs
    coefficients: StepCoefficients | None = None  # set when the step is pure per-step tensor maths

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    @property
    def graphable(self) -> bool:
        """Whether a step runs on device index tensors alone (no host reads): CUDA graphs can hold it."""
        return self.coefficients is not None

    def new_memory(self, x_T: torch.Tensor):
        """Per-call state a multistep rule keeps between steps (None for one-step rules)."""
        return None

    def transition(self, index, x, eps, noise, memory=None):
        index = _as_index(index, x.shape[0], x.device)
        return self.coefficients_on(x.device).transition(index, x, eps, noise)

    def coefficients_on(self, device) -> StepCoefficients:
        """The coefficients on ``device``, moved once and cached."""
        cache = self.__dict__.setdefault("_on_device", {})
        key = str(device)
        if key not in cache:
            cache[key] = self.coefficients.to(device)
        return cache[key]

    def trajectory_from_outputs(self, x_T, noises, eps, cond_data=None, cond_mask=None) -> torch.Tensor:
        """The whole trajectory (N+1, *x_T.shape) these network outputs ``eps`` (N, ...) imply.

        No network call: the outputs stand in for it, pushed through the fresh x_T and
        noises, so the trajectory carries this call's noise realisation. An initial guess
        built this way moves a parallel sampler's start, never its fixed point.
        """
        from parapolicy.samplers.inpainting import impose

        memory = self.new_memory(x_T)
        states, x = [x_T], x_T
        for i in range(self.num_steps):
            x = impose(x, cond_data, cond_mask)
            step_noise = noises[i : i + 1] if noises is not None else None
            x = self.transition(i, x[None], eps[i][None].to(x), step_noise, memory)[0]
            states.append(x)
        return torch.stack(states)


def _as_index(index, count: int, device) -> torch.Tensor:
    if isinstance(index, int):
        return torch.arange(index, index + count, device=device)
    return index.to(device)


class _DiffusersOneStepRule(StepRule):
    """DDPM / DDIM with sample or v prediction, or thresholding: diffusers' vectorised step."""

    def transition(self, index, x, eps, noise, memory=None):
        k, b = x.shape[0], x.shape[1]
        rows = k * b
        steps = _as_index(index, k, "cpu")
        t_rows = self.timesteps.index_select(0, steps).repeat_interleave(b)
        mean = self._parallel.batch_step_no_noise(
            eps.reshape(rows, *x.shape[2:]), t_rows, x.reshape(rows, *x.shape[2:])
        ).reshape(x.shape)
        if noise is None:
            return mean
        view = (k,) + (1,) * (x.dim() - 1)
        std = self._noise_std.index_select(0, steps).to(device=x.device, dtype=mean.dtype).view(view)
        drawn = torch.tensor(self.draws_noise, device=x.device).index_select(0, steps.to(x.device)).view(view)
        return torch.where(drawn, mean + std * noise, mean)


class _DPMSolverRule(StepRule):
    """DPM-Solver(++) multistep: diffusers' own ``step`` with its history set per step."""

    def new_memory(self, x_T):
        return {"converted": torch.zeros((self.num_steps, *x_T.shape), device=x_T.device, dtype=torch.float32),
                "known": [False] * self.num_steps}

    def transition(self, index, x, eps, noise, memory=None):
        if memory is None:
            raise SamplerConfigError("a multistep (DPM-Solver) step needs the memory from rule.new_memory(x_T)")
        first = int(index) if isinstance(index, int) else int(index[0])
        order = self.config.solver_order
        outs = []
        for k in range(x.shape[0]):
            i = first + k
            history = [memory["converted"][j] for j in range(max(0, i - order + 1), i) if memory["known"][j]]
            sched = copy.copy(self._scheduler)
            sched.model_outputs = [None] * (order - len(history)) + history
            sched.lower_order_nums = min(i, order)
            sched._step_index = i
            kwargs = {"variance_noise": noise[k]} if self.draws_noise[i] else {}
            outs.append(sched.step(eps[k], self.timesteps[i], x[k], **kwargs).prev_sample)
            memory["converted"][i] = sched.model_outputs[-1]
            memory["known"][i] = True
        return torch.stack(outs)


def make_step_rule(scheduler, eta: float = 0.0) -> StepRule:
    """Freeze ``scheduler`` (with ``set_timesteps`` already called) into a ``StepRule``.

    The scheduler is copied, so later ``set_timesteps`` calls by the caller do not change
    a rule a sampler is using. ``eta`` is DDIM's stochasticity (upstream's policy kwarg).
    """
    if isinstance(scheduler, StepRule):
        return scheduler
    name = type(scheduler).__name__
    timesteps = getattr(scheduler, "timesteps", None)
    if timesteps is None or getattr(scheduler, "config", None) is None:
        raise UnsupportedSchedulerError(
            f"{name} is not a configured diffusers scheduler; supported: {', '.join(SUPPORTED_SCHEDULERS)}"
        )
    eta = float(eta)
    if not eta >= 0.0 or eta == float("inf"):
        raise SamplerConfigError(f"eta must be a finite number >= 0, got {eta!r}")
    if eta and name not in ("DDIMScheduler", "DDIMParallelScheduler"):
        raise UnsupportedSchedulerError(f"eta={eta} is DDIM's setting; {name} takes none (pass eta=0)")
    timesteps = torch.as_tensor(timesteps).long().cpu()
    if name in ("DDPMScheduler", "DDPMParallelScheduler", "DDIMScheduler", "DDIMParallelScheduler"):
        return _one_step_rule(scheduler, timesteps, eta, ddim=name.startswith("DDIM"))
    if name == "DPMSolverMultistepScheduler":
        return _dpm_rule(scheduler, timesteps)
    raise UnsupportedSchedulerError(
        f"scheduler {name} has no step rule parapolicy can run; supported: {', '.join(SUPPORTED_SCHEDULERS)}"
    )


def _one_step_rule(scheduler, timesteps, eta: float, ddim: bool) -> StepRule:
    cfg = scheduler.config
    if not ddim and cfg.variance_type not in ("fixed_small", "fixed_large"):
        raise UnsupportedSchedulerError(
            f"DDPMScheduler variance_type={cfg.variance_type!r} is not supported (use fixed_small or fixed_large)"
        )
    sched = copy.deepcopy(scheduler)
    if sched.num_inference_steps is None:
        raise UnsupportedSchedulerError(f"{type(scheduler).__name__} has no timesteps set: call set_timesteps first")
    if ddim:  # diffusers' DDIM steps back by a fixed stride, DDPM to the next timestep of the list
        prev = timesteps - cfg.num_train_timesteps // sched.num_inference_steps
    else:
        prev = torch.cat([timesteps[1:], torch.tensor([-1])])
    ac = sched.alphas_cumprod.to(torch.float32)
    final_alpha = float(sched.final_alpha_cumprod) if ddim else 1.0
    if ddim:
        std = torch.stack([eta * sched._get_variance(int(t), int(p)) ** 0.5 for t, p in zip(timesteps, prev)]).float()
        draws = tuple(eta > 0 for _ in timesteps)
    else:
        std = torch.stack([sched._get_variance(int(t)) ** 0.5 for t in timesteps]).float()
        draws = tuple(bool(t > 0) for t in timesteps)
    fields = dict(timesteps=timesteps, draws_noise=draws, noise_dtype=None,
                  error_variance=_posterior_variances(ac, timesteps, final_alpha), alphas_cumprod=ac, config=cfg,
                  scheduler_name=type(scheduler).__name__, eta=eta)
    if cfg.prediction_type == "epsilon" and not getattr(cfg, "thresholding", False):
        return StepRule(**fields, coefficients=_coefficients(sched, timesteps, prev, eta, std, draws, ddim))
    if eta:
        raise UnsupportedSchedulerError(
            f"DDIM eta={eta} is supported for prediction_type='epsilon' without thresholding; this scheduler has "
            f"prediction_type={cfg.prediction_type!r}, thresholding={getattr(cfg, 'thresholding', False)}"
        )
    rule = _DiffusersOneStepRule(**fields)
    rule._parallel = _parallel_copy(sched, ddim)
    rule._noise_std = std
    return rule


def _coefficients(sched, timesteps, prev, eta, std, draws, ddim) -> StepCoefficients:
    """Per-step coefficients with the same float32 operations, in the same order, as diffusers' step."""
    cfg = sched.config
    ac = sched.alphas_cumprod
    alpha_t = ac[timesteps]
    final = sched.final_alpha_cumprod if ddim else sched.one
    alpha_prev = torch.where(prev >= 0, ac[prev.clamp(min=0)], torch.as_tensor(final, dtype=ac.dtype))
    beta_t = 1 - alpha_t
    if ddim:
        variance = ((1 - alpha_prev) / beta_t) * (1 - alpha_t / alpha_prev)
        std_dev = eta * variance ** (0.5)
        first, x0_scale = (1 - alpha_prev - std_dev**2) ** (0.5), alpha_prev ** (0.5)
    else:
        current_alpha = alpha_t / alpha_prev
        first = current_alpha ** (0.5) * (1 - alpha_prev) / beta_t
        x0_scale = (alpha_prev ** (0.5) * (1 - current_alpha)) / beta_t
    clip = clip_range(cfg)
    return StepCoefficients(ddim=ddim, first=first, x0_scale=x0_scale, eps_scale=beta_t ** (0.5),
                            x_scale=alpha_t ** (0.5), noise_std=std, drawn=torch.tensor(draws), clip=clip)


def _parallel_copy(scheduler, ddim: bool):
    from diffusers import DDIMParallelScheduler, DDPMParallelScheduler

    parallel_cls = DDIMParallelScheduler if ddim else DDPMParallelScheduler
    par = parallel_cls.from_config(scheduler.config)
    par.set_timesteps(scheduler.num_inference_steps)
    if not torch.equal(torch.as_tensor(par.timesteps).long().cpu(), torch.as_tensor(scheduler.timesteps).long().cpu()):
        raise UnsupportedSchedulerError(
            f"{type(scheduler).__name__} has custom timesteps that {parallel_cls.__name__} cannot reproduce"
        )
    return par


def _dpm_rule(scheduler, timesteps) -> StepRule:
    algo = scheduler.config.algorithm_type
    if algo not in ("dpmsolver", "dpmsolver++", "sde-dpmsolver", "sde-dpmsolver++"):
        raise UnsupportedSchedulerError(f"DPMSolverMultistepScheduler algorithm_type={algo!r} is not supported")
    sched = copy.deepcopy(scheduler)
    stochastic = algo.startswith("sde-")
    rule = _DPMSolverRule(
        timesteps=timesteps,
        draws_noise=tuple(stochastic for _ in timesteps),
        noise_dtype=torch.float32 if stochastic else None,
        error_variance=_posterior_variances(sched.alphas_cumprod, timesteps, 1.0),
        alphas_cumprod=sched.alphas_cumprod.float(),
        config=sched.config,
        scheduler_name=type(scheduler).__name__,
        history_length=max(sched.config.solver_order - 1, 0),
    )
    rule._scheduler = sched
    return rule
