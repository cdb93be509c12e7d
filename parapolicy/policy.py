"""Policy = normalizer + observation encoder + denoiser + sampler -> predict_action.

One class serves every DiffusionPolicy family; what differs between them is captured in
``PolicySpec`` (how observations become conditioning, where the action slice starts).
The data path runs one way: obs -> normalize -> encode -> condition -> sample ->
unnormalize -> slice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from parapolicy.acceleration import GraphedDenoiser, GraphExecutor, make_denoiser
from parapolicy.action_chunk import ActionChunk, ChunkStats
from parapolicy.chunking import executed_slice
from parapolicy.errors import (AccelerationError, InputError, NonFiniteSampleError, ObservationError, PrefixError,
                               SamplerConfigError)
from parapolicy.models.normalizer import LinearNormalizer
from parapolicy.samplers import (EAGER, SAMPLERS, DenoisingProblem, SampleResult, Sampler, Sequential, draw_noises,
                                 make_sampler, make_step_rule)
from parapolicy.samplers.guesses import guess_trajectory
from parapolicy.samplers.prefix import ActionPrefix, constrained_denoiser
from parapolicy.scheduler_kinds import SCHEDULER_KINDS as INFERENCE_SCHEDULERS

# How observations enter the denoiser.
GLOBAL = "global"  # UNet: flattened obs features appended to the step embedding (FiLM)
LOCAL = "local"  # UNet: per-timestep obs features (lowdim only)
INPAINT = "inpaint"  # obs written into the trajectory and re-imposed every step
TOKENS = "tokens"  # transformer: one condition token per observation step


@dataclass
class PolicySpec:
    """Everything about a policy that is not a weight."""

    family: str  # e.g. "unet_lowdim", "unet_hybrid_image", "transformer_lowdim", ...
    horizon: int
    n_obs_steps: int
    n_action_steps: int
    action_dim: int
    obs_shapes: dict  # obs key -> shape of one step (without batch and time)
    cond_mode: str  # GLOBAL, LOCAL, INPAINT or TOKENS
    action_start: int  # first index of the executed slice in action_pred
    pred_action_steps_only: bool = False
    num_inference_steps: int | None = None
    step_kwargs: dict = field(default_factory=dict)  # extra scheduler.step kwargs (DDIM eta)
    source: dict = field(default_factory=dict)  # where the policy came from (format, path, ...)
    task: dict = field(default_factory=dict)  # how upstream evaluates it (checkpoints.dp_task.read_task)


class Policy(nn.Module):
    """A loaded DiffusionPolicy whose denoising loop is a swappable sampler."""

    def __init__(self, spec: PolicySpec, model: nn.Module, normalizer: LinearNormalizer, scheduler, obs_encoder=None):
        super().__init__()
        self.spec = spec
        self.model = model
        self.normalizer = normalizer
        self.obs_encoder = obs_encoder
        if spec.num_inference_steps is not None:
            scheduler.set_timesteps(spec.num_inference_steps)
        self.scheduler = scheduler
        self.rule = make_step_rule(scheduler, eta=float(spec.step_kwargs.get("eta", 0.0)))
        self.sampler = Sequential()
        self.acceleration = "eager"
        self._accelerated = None  # GraphedDenoiser / CompiledDenoiser; not a submodule (no state_dict keys)
        self.eval()

    # ------------------------------------------------------------------ configuration
    def set_sampler(self, name, **settings) -> "Policy":
        """Swap the denoising loop: ``"sequential"``, ``"picard"`` (window, tolerance), ..., or a ``Sampler``."""
        if isinstance(name, Sampler):
            if settings:
                raise SamplerConfigError("pass settings with a sampler name, not with a sampler object")
            self.sampler = name
        else:
            self.sampler = make_sampler(name, **settings)
        return self

    def with_inference(self, scheduler: str | None = None, num_inference_steps: int | None = None) -> "Policy":
        """The same network and normalizer with another inference schedule: the user's sequential
        alternative (e.g. DDIM with 16 steps) beside this checkpoint's own DDPM-100.

        ``scheduler``: ``"ddpm"``, ``"ddim"`` or ``"dpmsolver"`` (None: keep the checkpoint's kind),
        built from the checkpoint's scheduler config (betas, prediction type, clipping), as
        upstream's ``noise_scheduler`` and LeRobot's ``noise_scheduler_type`` choose it;
        ``num_inference_steps`` as upstream and LeRobot define it (None: keep the current count).
        The sampler is copied over; the network's weights are shared, not copied.
        """
        import dataclasses

        kind = type(self.scheduler).__name__
        if scheduler is not None:
            kind = INFERENCE_SCHEDULERS.get(scheduler) if isinstance(scheduler, str) else None
            if kind is None:
                raise SamplerConfigError(f"scheduler must be one of {', '.join(INFERENCE_SCHEDULERS)}, got {scheduler!r}")
        train_steps = int(self.scheduler.config.num_train_timesteps)
        steps = len(self.scheduler.timesteps) if num_inference_steps is None else num_inference_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= train_steps:
            raise SamplerConfigError(f"num_inference_steps must be an integer in [1, num_train_timesteps={train_steps}], "
                                     f"got {steps!r}")
        import diffusers

        new_scheduler = getattr(diffusers, kind).from_config(self.scheduler.config)
        spec = dataclasses.replace(self.spec, num_inference_steps=steps,
                                   step_kwargs={} if kind != "DDIMScheduler" else dict(self.spec.step_kwargs))
        other = Policy(spec, self.model, self.normalizer, new_scheduler, self.obs_encoder)
        other.sampler, other.acceleration, other._accelerated = self.sampler, self.acceleration, self._accelerated
        return other

    @property
    def inference(self) -> dict:
        """The inference schedule a chunk runs: scheduler kind and number of steps (for results.json)."""
        kind = type(self.scheduler).__name__
        name = next((k for k, v in INFERENCE_SCHEDULERS.items() if v == kind), kind)
        return {"scheduler": name, "num_inference_steps": self.rule.num_steps}

    def accelerate(self, mode: str = "cuda_graph") -> "Policy":
        """How the network runs: ``"eager"`` PyTorch, ``"cuda_graph"`` replays, or ``"compile"``.

        ``"compile"`` is torch.compile (reduce-overhead). Graphs are captured per padded
        batch shape on first use (the first chunk of a new shape is slow), so warm up before
        timing. Values match eager up to the GPU's own rounding; the samplers and their fixed
        points are unchanged.
        """
        denoiser = make_denoiser(self.model, mode, self.device)
        self._accelerated = None if denoiser is self.model else denoiser
        self.acceleration = mode
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self.model.parameters())).device

    @property
    def obs_keys(self) -> list[str]:
        return list(self.spec.obs_shapes)

    # ------------------------------------------------------------------ inference
    def predict_action(self, obs_dict: dict, generator: torch.Generator | None = None, initial_guess=None,
                       callback=None, prefix: ActionPrefix | None = None) -> ActionChunk:
        """Sample an action chunk; same outputs and semantics as upstream's predict_action.

        ``prepare`` -> ``sampler.sample`` -> ``decode``. Returns an ``ActionChunk``
        (``parapolicy.action_chunk``), read as fields or, as upstream's dict, by key: ``action``
        (B, n_action_steps, Da), ``action_pred`` (B, horizon, Da), ``stats`` (``ChunkStats``: the
        sampler's ``SampleStats`` plus ``latency_ms``; ``stats["rounds"]`` reads its flat names),
        ``sample`` (B, horizon, D), the denoised trajectory in normalized units, and
        ``denoiser_outputs`` (steps, B, horizon, D), each step's latest network output.
        ``initial_guess`` is a guess of either: a ``sample`` (e.g. the previous
        chunk's, shifted by the executed steps; the trajectory whose denoiser always predicts
        it, with this call's noises) or per-step outputs (the trajectory they imply with this
        call's noises). A sampler that accepts one starts from that trajectory, which changes
        its rounds, not its answer; other samplers ignore it (``stats["initial_guess"]`` says
        whether it was used).
        ``prefix`` (an ``ActionPrefix``) fixes the chunk's first executed actions (real-time
        chunking, ``parapolicy.samplers.prefix``); ``callback(event)`` is called by the sampler
        between rounds (raising ``SamplingCancelled`` there cancels the call).
        """
        started = time.perf_counter()
        with torch.no_grad():
            problem = self.prepare(obs_dict, generator, initial_guess=initial_guess, callback=callback, prefix=prefix)
            out = self.decode(self.sampler.sample(problem), prefix)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        out.stats = ChunkStats(out.stats.sampling, latency_ms=(time.perf_counter() - started) * 1000.0)
        return out

    def prepare(self, obs_dict: dict, generator: torch.Generator | None = None, initial_guess=None,
                callback=None, prefix: ActionPrefix | None = None) -> DenoisingProblem:
        """Observations -> the ``DenoisingProblem`` the sampler solves: conditioning bound into the
        denoiser, upstream's draws (x_T, then the per-step noises, then the sampler's extra draws)."""
        if self.acceleration != "eager" and self.device.type != "cuda":
            raise AccelerationError(f"acceleration {self.acceleration!r} needs CUDA but the policy is now on "
                                    f"{self.device}; call accelerate('eager') after moving it")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise InputError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        obs = self._checked_obs(obs_dict)
        with torch.no_grad():
            nobs = {k: self.normalizer.normalize(k, v) for k, v in obs.items()}
            shape, cond_data, cond_mask, conditions = self._conditioning(nobs)
            draws = draw_noises(self.rule, shape, generator, device=self.device, dtype=torch.float32)
            extra = self.sampler.extra_draws(draws.x_T, generator)
            guess = None
            if initial_guess is not None and self.sampler.accepts_initial_guess:
                guess = guess_trajectory(self.rule, draws.x_T, draws.noises,
                                         self._checked_guess(initial_guess, draws.x_T), cond_data, cond_mask)
        net = self.model if self._accelerated is None else self._accelerated
        denoise = BoundDenoiser(net, **conditions)
        executor = EAGER
        if prefix is not None and self._checked_prefix(prefix).constrains:
            # the constraint wraps the denoiser, so whole-round graphs (which call the raw network) stay off
            known = self.normalizer.normalize("action", prefix.actions.to(self.device, torch.float32))
            denoise = constrained_denoiser(denoise, self.rule, draws.x_T, draws.noises, prefix, known,
                                           self._action_rows(), self.spec.action_dim)
        elif isinstance(self._accelerated, GraphedDenoiser):
            executor = GraphExecutor(self._accelerated, self.model, conditions, self.device)
        return DenoisingProblem(denoise, self.rule, draws.x_T, draws.noises, cond_data, cond_mask, init_guess=guess,
                                extra=extra, callback=callback, executor=executor)

    def decode(self, result: SampleResult, prefix: ActionPrefix | None = None) -> ActionChunk:
        """The sampler's normalized trajectory -> actions in the env's units, upstream's slice, stats.

        Non-finite actions are an error here, after unnormalising, so that no normalizer
        (a zero scale, an inf offset) can turn a finite sample into an inf action.
        """
        spec = self.spec
        with torch.no_grad():
            action_pred = self.normalizer.unnormalize("action", result.sample[..., : spec.action_dim])
            if prefix is not None and prefix.constrains:  # the frozen actions, bit for bit
                rows = self._action_rows()
                action_pred[:, rows.start : rows.start + prefix.frozen] = prefix.actions[:, : prefix.frozen].to(
                    action_pred)
        if not bool(torch.isfinite(action_pred).all()):
            raise NonFiniteSampleError(
                f"the unnormalised actions are not finite (expected finite values, found "
                f"{int((~torch.isfinite(action_pred)).sum())} NaN/inf): check the checkpoint's action normalizer")
        if spec.pred_action_steps_only:
            action = action_pred
        else:
            action = action_pred[:, spec.action_start : spec.action_start + spec.n_action_steps]
        out = ActionChunk(action, action_pred, result.sample.clone(), ChunkStats(result.stats),
                          denoiser_outputs=result.eps)
        if spec.cond_mode == INPAINT and "obs" in self.normalizer.fields and self.obs_encoder is None:
            with torch.no_grad():
                out.obs_pred = self.normalizer.unnormalize("obs", result.sample[..., spec.action_dim :])
            out.action_obs_pred = out.obs_pred[:, spec.action_start : spec.action_start + spec.n_action_steps]
        return out

    def bound_denoiser(self, obs_dict: dict):
        """``(denoise_fn, x_T shape)`` for these observations: what a sampler calls, for timing it."""
        problem = self.prepare(obs_dict)
        return problem.denoise, tuple(problem.x_T.shape)

    # ------------------------------------------------------------------ internals
    def _action_rows(self) -> slice:
        """Where the executed actions sit in ``action_pred``."""
        start = executed_slice(self.spec).start
        return slice(start, start + self.spec.n_action_steps)

    def _checked_prefix(self, prefix) -> ActionPrefix:
        if not isinstance(prefix, ActionPrefix):
            raise PrefixError(f"prefix must be a parapolicy.samplers.prefix.ActionPrefix, got {type(prefix).__name__}")
        if prefix.constrains and not getattr(self.sampler, "supports_prefix", False):
            able = sorted(name for name, cls in SAMPLERS.items() if cls.supports_prefix)
            raise PrefixError(f"prefix sampling needs an exact discrete-time sampler (supports_prefix: "
                              f"{', '.join(able)}), got {getattr(self.sampler, 'name', type(self.sampler).__name__)!r}")
        return prefix

    def _checked_guess(self, initial_guess, x_T: torch.Tensor) -> torch.Tensor:
        """A sample (B or 1, *S) -> (B, *S), or network outputs (steps, B or 1, *S) -> (steps, B, *S),
        on the policy's device; anything else is one clear error."""
        sample = f"({x_T.shape[0]} or 1, {', '.join(map(str, x_T.shape[1:]))})"
        outputs = f"({self.rule.num_steps}, {sample[1:]}"
        want = f"a sample {sample} or per-step network outputs {outputs}"
        try:
            guess = torch.as_tensor(initial_guess, dtype=torch.float32, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"initial_guess must be a float tensor, {want}; got {type(initial_guess).__name__}: "
                             f"{exc}") from None
        lead = guess.dim() - x_T.dim()  # 0: a sample, 1: per-step outputs
        if (lead not in (0, 1) or (lead and guess.shape[0] != self.rule.num_steps)
                or guess.shape[lead] not in (1, x_T.shape[0]) or tuple(guess.shape[lead + 1 :]) != tuple(x_T.shape[1:])):
            raise InputError(f"initial_guess has shape {tuple(guess.shape)}, expected {want}")
        if not bool(torch.isfinite(guess).all()):
            raise InputError("initial_guess contains NaN or inf")
        return guess.expand(*guess.shape[:lead], x_T.shape[0], *guess.shape[lead + 1 :])

    def _checked_obs(self, obs_dict: dict) -> dict:
        """One clear error naming expected vs got for missing keys, wrong shapes or types, NaN."""
        if not isinstance(obs_dict, dict):
            raise ObservationError(f"obs must be a dict with keys {self.obs_keys}, got {type(obs_dict).__name__}")
        missing = [k for k in self.obs_keys if k not in obs_dict]
        if missing:
            raise ObservationError(f"obs is missing keys {missing}: expected {self.obs_keys}, got "
                                   f"{sorted(map(str, obs_dict))}")
        to = self.spec.n_obs_steps
        out, batch = {}, None
        for key, step_shape in self.spec.obs_shapes.items():
            want = f"(B, >={to}, {', '.join(str(s) for s in step_shape)})"
            value = obs_dict[key]
            try:
                value = torch.as_tensor(value)
                if not (value.dtype.is_floating_point or value.dtype in _INTEGER_DTYPES):
                    raise TypeError(f"dtype {value.dtype}")
                value = value.to(device=self.device, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ObservationError(f"obs[{key!r}] must be a numeric array {want}, got "
                                       f"{type(obs_dict[key]).__name__} ({str(exc).splitlines()[0][:80]})") from None
            if value.dim() != 2 + len(step_shape) or tuple(value.shape[2:]) != tuple(step_shape) or value.shape[1] < to:
                raise ObservationError(f"obs[{key!r}] has shape {tuple(value.shape)}, expected {want}")
            if value.shape[0] == 0:
                raise ObservationError(f"obs[{key!r}] has batch size 0, expected at least 1")
            if batch is not None and value.shape[0] != batch:
                raise ObservationError(f"obs[{key!r}] has batch {value.shape[0]}, other keys have {batch}")
            batch = value.shape[0]
            if not torch.isfinite(value).all():
                raise ObservationError(f"obs[{key!r}] contains NaN or inf")
            out[key] = value[:, :to]
        return out

    def encode_observations(self, nobs: dict) -> torch.Tensor:
        """Normalized obs (B, To, ...) per key -> per-step features (B, To, F), time-major."""
        to = self.spec.n_obs_steps
        batch = next(iter(nobs.values())).shape[0]
        if self.obs_encoder is None:
            return nobs["obs"][:, :to]
        flat = {k: v[:, :to].reshape(batch * to, *v.shape[2:]) for k, v in nobs.items()}
        return self.obs_encoder(flat).reshape(batch, to, -1)

    def _conditioning(self, nobs: dict):
        """(trajectory shape, inpainting data/mask, network conditioning tensors) for this policy."""
        spec = self.spec
        to, horizon, da = spec.n_obs_steps, spec.horizon, spec.action_dim
        batch = next(iter(nobs.values())).shape[0]
        features = self.encode_observations(nobs)
        steps = spec.n_action_steps if spec.pred_action_steps_only else horizon
        if spec.cond_mode == GLOBAL:
            return (batch, steps, da), None, None, {"global_cond": features.reshape(batch, -1)}
        if spec.cond_mode == TOKENS:
            return (batch, steps, da), None, None, {"cond": features}
        if spec.cond_mode == LOCAL:
            local = torch.zeros(batch, horizon, features.shape[-1], device=features.device, dtype=features.dtype)
            local[:, :to] = features
            return (batch, horizon, da), None, None, {"local_cond": local}
        # INPAINT: observations occupy the last feature columns of the first To steps
        dim = da + features.shape[-1]
        cond_data = torch.zeros(batch, horizon, dim, device=features.device, dtype=features.dtype)
        cond_data[:, :to, da:] = features
        cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
        cond_mask[:, :to, da:] = True
        return (batch, horizon, dim), cond_data, cond_mask, {}


_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


class BoundDenoiser:
    """eps = f(x, t) with the observation conditioning bound, tiled to the window's row count."""

    def __init__(self, net, **conditions):
        self.net = net
        self.conditions = {k: v for k, v in conditions.items() if v is not None}
        self._batch = next(iter(self.conditions.values())).shape[0] if self.conditions else None

    def first_samples(self, count: int) -> "BoundDenoiser":
        """The same network bound to the first ``count`` samples' conditioning only."""
        return BoundDenoiser(self.net, **{k: v[:count] for k, v in self.conditions.items()})

    def __call__(self, x, t):
        reps = x.shape[0] // self._batch if self._batch else 1
        tiled = {k: v.repeat(reps, *([1] * (v.dim() - 1))) if reps > 1 else v for k, v in self.conditions.items()}
        return self.net(x, t, **tiled)
