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

from parapolicy.acceleration import GraphedDenoiser, make_denoiser
from parapolicy.errors import AccelerationError, ObservationError, PrefixError
from parapolicy.models.normalizer import LinearNormalizer
from parapolicy.samplers import Picard, Sequential, draw_noises, make_sampler, make_step_rule, warm_start_guess
from parapolicy.samplers.prefix import ActionPrefix, constrained_denoiser

# How observations enter the denoiser.
GLOBAL = "global"  # UNet: flattened obs features appended to the step embedding (FiLM)
LOCAL = "local"  # UNet: per-timestep obs features (lowdim only)
INPAINT = "inpaint"  # obs written into the trajectory and re-imposed every step
TOKENS = "tokens"  # transformer: one condition token per observation step
PREFIX_SAMPLERS = ("sequential", "picard", "newton_picard")  # exact samplers that call denoise(x, int t)


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
        self._rule = make_step_rule(scheduler, eta=float(spec.step_kwargs.get("eta", 0.0)))
        self.sampler = Sequential()
        self.acceleration = "eager"
        self._accelerated = None  # GraphedDenoiser / CompiledDenoiser; not a submodule (no state_dict keys)
        self.eval()

    # ------------------------------------------------------------------ configuration
    def set_sampler(self, name, **settings) -> "Policy":
        """Swap the denoising loop: ``"sequential"``, ``"picard"`` (window, tolerance), ..."""
        self.sampler = name if hasattr(name, "sample") and not settings else make_sampler(name, **settings)
        return self

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
    def predict_action(self, obs_dict: dict, generator: torch.Generator | None = None, warm_start=None,
                       prefix=None, callback=None) -> dict:
        """Sample an action chunk; same outputs and semantics as upstream's predict_action.

        Returns ``action`` (B, n_action_steps, Da), ``action_pred`` (B, horizon, Da) and
        ``stats`` (nfe, parallel_iters, latency_ms, sampler settings); Picard also returns
        ``denoiser_outputs`` (steps, B, horizon, D), each step's latest network output.
        ``warm_start`` is a guess of those outputs (e.g. the previous chunk's, shifted by the
        executed steps): Picard starts its iteration from the trajectory they imply with this
        call's noise, which changes its round count, not its answer; other samplers ignore it.
        ``prefix`` (an ``ActionPrefix``) fixes the chunk's first executed actions (real-time
        chunking, ``parapolicy.samplers.prefix``); ``callback(event)`` is passed to the sampler,
        which calls it between rounds (raising there cancels the call).
        """
        started = time.perf_counter()
        if self.acceleration != "eager" and self.device.type != "cuda":
            raise AccelerationError(f"acceleration {self.acceleration!r} needs CUDA but the policy is now on "
                                    f"{self.device}; call accelerate('eager') after moving it")
        obs = self._checked_obs(obs_dict)
        with torch.no_grad():
            nobs = {k: self.normalizer.normalize(k, v) for k, v in obs.items()}
            shape, cond_data, cond_mask, bind = self._conditioning(nobs)
            draws = draw_noises(
                self._rule, shape, generator, device=self.device, dtype=torch.float32
            )
            extra = {}
            if warm_start is not None and isinstance(self.sampler, Picard):
                guess = torch.as_tensor(warm_start, device=self.device, dtype=torch.float32)
                if guess.shape[0] != self._rule.num_steps or tuple(guess.shape[2:]) != tuple(draws.x_T.shape[1:]):
                    raise ValueError(f"warm_start has shape {tuple(guess.shape)}, expected "
                                     f"({self._rule.num_steps}, B, {', '.join(map(str, draws.x_T.shape[1:]))})")
                extra["init_guess"] = warm_start_guess(self._rule, draws.x_T, draws.noises,
                                                       guess.expand(-1, draws.x_T.shape[0], *guess.shape[2:]),
                                                       cond_data, cond_mask)
            if hasattr(self.sampler, "extra_inputs"):  # e.g. randomized midpoints, drawn after x_T and noises
                extra.update(self.sampler.extra_inputs(draws.x_T, generator))
            if prefix is not None:
                bind = self._prefixed(bind, draws, prefix)
            if callback is not None:
                extra["callback"] = callback
            result = self.sampler.sample(bind, self._rule, draws.x_T, draws.noises, cond_data, cond_mask, **extra)
            naction = result.sample[..., : self.spec.action_dim]
            action_pred = self.normalizer.unnormalize("action", naction)
            if prefix is not None and prefix.constrains:  # the frozen actions, bit for bit
                rows = slice(self._action_rows().start, self._action_rows().start + prefix.frozen)
                action_pred[:, rows] = prefix.actions[:, : prefix.frozen].to(action_pred)
        spec = self.spec
        if spec.pred_action_steps_only:
            action = action_pred
        else:
            action = action_pred[:, spec.action_start : spec.action_start + spec.n_action_steps]
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        stats = dict(result.stats)
        stats["latency_ms"] = (time.perf_counter() - started) * 1000.0
        out = {"action": action, "action_pred": action_pred, "stats": stats}
        if "eps" in result.extras:
            out["denoiser_outputs"] = result.extras["eps"]
        if spec.cond_mode == INPAINT and "obs" in self.normalizer.fields and self.obs_encoder is None:
            with torch.no_grad():
                obs_pred = self.normalizer.unnormalize("obs", result.sample[..., spec.action_dim :])
            out["obs_pred"] = obs_pred
            out["action_obs_pred"] = obs_pred[:, spec.action_start : spec.action_start + spec.n_action_steps]
        return out

    def bound_denoiser(self, obs_dict: dict):
        """``(denoise_fn, x_T shape)`` for these observations: what a sampler calls, for timing it."""
        obs = self._checked_obs(obs_dict)
        with torch.no_grad():
            shape, _, _, bind = self._conditioning({k: self.normalizer.normalize(k, v) for k, v in obs.items()})
        return bind, shape

    # ------------------------------------------------------------------ internals
    def _action_rows(self) -> slice:
        """Where the executed actions sit in ``action_pred``."""
        start = 0 if self.spec.pred_action_steps_only else self.spec.action_start
        return slice(start, start + self.spec.n_action_steps)

    def _prefixed(self, bind, draws, prefix: ActionPrefix):
        if not isinstance(prefix, ActionPrefix):
            raise PrefixError(f"prefix must be a parapolicy.samplers.prefix.ActionPrefix, got {type(prefix).__name__}")
        if prefix.constrains and getattr(self.sampler, "name", None) not in PREFIX_SAMPLERS:
            raise PrefixError(f"prefix sampling needs an exact discrete-time sampler {PREFIX_SAMPLERS}, "
                              f"got {getattr(self.sampler, 'name', type(self.sampler).__name__)!r}")
        known = self.normalizer.normalize("action", prefix.actions.to(self.device, torch.float32))
        return constrained_denoiser(bind, self._rule, draws.x_T, draws.noises, prefix, known, self._action_rows(),
                                    self.spec.action_dim)

    def _checked_obs(self, obs_dict: dict) -> dict:
        """One clear error naming expected vs got for missing keys or wrong shapes."""
        if not isinstance(obs_dict, dict):
            raise ObservationError(f"obs must be a dict with keys {self.obs_keys}, got {type(obs_dict).__name__}")
        missing = [k for k in self.obs_keys if k not in obs_dict]
        if missing:
            raise ObservationError(f"obs is missing keys {missing}: expected {self.obs_keys}, got {sorted(obs_dict)}")
        to = self.spec.n_obs_steps
        out, batch = {}, None
        for key, step_shape in self.spec.obs_shapes.items():
            value = torch.as_tensor(obs_dict[key])
            want = f"(B, >={to}, {', '.join(str(s) for s in step_shape)})"
            if value.dim() != 2 + len(step_shape) or tuple(value.shape[2:]) != tuple(step_shape) or value.shape[1] < to:
                raise ObservationError(f"obs[{key!r}] has shape {tuple(value.shape)}, expected {want}")
            if batch is not None and value.shape[0] != batch:
                raise ObservationError(f"obs[{key!r}] has batch {value.shape[0]}, other keys have {batch}")
            batch = value.shape[0]
            if not torch.isfinite(value.float()).all():
                raise ObservationError(f"obs[{key!r}] contains NaN or inf")
            out[key] = value[:, :to].to(self.device)
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
        """Build (trajectory shape, inpainting data/mask, bound denoiser) for this policy."""
        spec = self.spec
        to, horizon, da = spec.n_obs_steps, spec.horizon, spec.action_dim
        batch = next(iter(nobs.values())).shape[0]
        net = self.model if self._accelerated is None else self._accelerated
        graphs = self._accelerated if isinstance(self._accelerated, GraphedDenoiser) else None
        features = self.encode_observations(nobs)
        steps = spec.n_action_steps if spec.pred_action_steps_only else horizon
        if spec.cond_mode == GLOBAL:
            bound = BoundDenoiser(net, self.model, graphs, global_cond=features.reshape(batch, -1))
            return (batch, steps, da), None, None, bound
        if spec.cond_mode == TOKENS:
            return (batch, steps, da), None, None, BoundDenoiser(net, self.model, graphs, cond=features)
        if spec.cond_mode == LOCAL:
            local = torch.zeros(batch, horizon, features.shape[-1], device=features.device, dtype=features.dtype)
            local[:, :to] = features
            return (batch, horizon, da), None, None, BoundDenoiser(net, self.model, graphs, local_cond=local)
        # INPAINT: observations occupy the last feature columns of the first To steps
        dim = da + features.shape[-1]
        cond_data = torch.zeros(batch, horizon, dim, device=features.device, dtype=features.dtype)
        cond_data[:, :to, da:] = features
        cond_mask = torch.zeros_like(cond_data, dtype=torch.bool)
        cond_mask[:, :to, da:] = True
        return (batch, horizon, dim), cond_data, cond_mask, BoundDenoiser(net, self.model, graphs)


class BoundDenoiser:
    """eps = f(x, t) with the observation conditioning bound and tiled to the window slots.

    ``model`` and ``conditions`` stay visible so an accelerated sampler can capture a whole
    round (network call and update) in one CUDA graph; ``graphs`` is the policy's
    ``GraphedDenoiser`` when CUDA graphs are on, else None.
    """

    def __init__(self, net, model: nn.Module, graphs=None, **conditions):
        self.net, self.model, self.graphs = net, model, graphs
        self.conditions = {k: v for k, v in conditions.items() if v is not None}

    def tiled_conditions(self, reps: int) -> dict:
        return {k: v.repeat(reps, *([1] * (v.dim() - 1))) if reps > 1 else v for k, v in self.conditions.items()}

    def __call__(self, x, t):
        reps = x.shape[0] // next(iter(self.conditions.values())).shape[0] if self.conditions else 1
        return self.net(x, t, **self.tiled_conditions(reps))
