"""Sampling an action chunk whose first actions are already known (real-time chunking).

While a chunk is being computed the robot keeps executing the previous one, so the new
chunk's first ``frozen`` actions are fixed in advance. Real-Time Chunking (Black, Galliker
and Levine, 2025) inpaints the rest of the chunk to agree with them, at sampling time.
Both forms here are *denoisers*: a wrapped ``denoise(x, t)`` that is a fixed function of its
input, so the sequential loop and every exact parallel sampler reach the same constrained
answer, and a sampler needs no change.

* hard: before every network call the known entries of x_t are replaced by the known
  actions forward-noised to t, ``sqrt(abar_t) * y + sqrt(1 - abar_t) * z_i``. The noise z_i
  of the state fed to step i is the noise that produced that state -- x_T for i = 0, else
  the pre-drawn noise of step i - 1 (a step that draws none reuses the previous z: DDIM
  with eta = 0 forward-noises along one fixed direction). Nothing extra is drawn, so the
  generator stream, and every unknown entry's noise, is the unconstrained call's.
* soft: RTC's guidance. The predicted clean sample x0_hat = (x_t - sqrt(1 - abar) eps) /
  sqrt(abar) is pulled towards the known actions with per-step weights W (1 on the frozen
  actions, decaying to 0 across the rest of the overlap with the previous chunk):
  ``eps' = eps - sqrt(abar) * min(beta, 1 / sqrt(abar (1 - abar))) * J^T (W * (y - x0_hat))``,
  J = d x0_hat / d x_t (one vector-Jacobian product). This is RTC's flow-matching update,
  ``v' = v + min(beta, (1 - tau) / (tau r^2)) J^T (W * (y - x1_hat))``, rewritten for an
  epsilon network through the map between the two processes, tau / (1 - tau) =
  sqrt(abar / (1 - abar)); unclipped it is the pseudo-inverse guidance (PiGDM) posterior.

In both forms the frozen actions of the returned chunk are the given ones, bit for bit
(the policy writes them back after unnormalising).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parapolicy.errors import PrefixError

GUIDANCE_FORMS = ("hard", "soft")
DEFAULT_MAX_GUIDANCE_WEIGHT = 10.0  # RTC's beta; chosen on PushT, see benchmarks/realtime_pusht.md


@dataclass(frozen=True)
class ActionPrefix:
    """Known actions for the first steps of the next chunk, in the env's action units.

    ``actions`` (B, L, Da): what the robot will do at the chunk's first L executed steps
    (the previous chunk's plan for them). The first ``frozen`` are certain (the delay d);
    the soft form also guides towards the other L - frozen, with decaying weight.
    """

    actions: torch.Tensor
    frozen: int
    guidance: str = "soft"
    max_guidance_weight: float = DEFAULT_MAX_GUIDANCE_WEIGHT

    def __post_init__(self):
        try:
            actions = torch.as_tensor(self.actions)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise PrefixError(f"prefix actions must be a float tensor (B, L, action_dim), got "
                              f"{type(self.actions).__name__}: {str(exc)[:80]}") from None
        object.__setattr__(self, "actions", actions)
        if not isinstance(self.guidance, str) or self.guidance not in GUIDANCE_FORMS:
            raise PrefixError(f"prefix guidance must be one of {GUIDANCE_FORMS}, got {self.guidance!r}")
        if isinstance(self.frozen, bool) or not isinstance(self.frozen, int) or self.frozen < 0:
            raise PrefixError(f"prefix frozen must be an integer >= 0, got {self.frozen!r}")
        if actions.dim() != 3 or actions.shape[1] < self.frozen:
            raise PrefixError(f"prefix actions must have shape (B, L >= frozen={self.frozen}, action_dim), "
                              f"got {tuple(actions.shape)}")
        if not actions.is_floating_point() or not bool(torch.isfinite(actions).all()):
            raise PrefixError(f"prefix actions must be finite floats, got dtype {actions.dtype} with NaN/inf or not")
        beta = self.max_guidance_weight
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
            raise PrefixError(f"prefix max_guidance_weight must be a finite number > 0, got {beta!r}")

    @property
    def constrains(self) -> bool:
        """Nothing frozen (no delay): the plain sampler, so d = 0 reproduces synchronous control."""
        return self.frozen > 0


def soft_weights(frozen: int, known: int, total: int) -> torch.Tensor:
    """RTC's exponential soft mask over ``total`` steps (the paper's Eq. 5).

    1 on the first ``frozen`` steps, 0 from ``known`` on (nothing to agree with), and in
    between c * (e^c - 1) / (e - 1) with c = (known - i) / (known - frozen + 1).
    """
    i = torch.arange(total, dtype=torch.float64)
    c = ((known - i) / (known - frozen + 1)).clamp(0.0, 1.0)
    w = c * torch.expm1(c) / (math.e - 1)
    w = torch.where(i < frozen, torch.ones_like(w), w)
    return torch.where(i >= known, torch.zeros_like(w), w).float()


def forward_noise(rule, x_T: torch.Tensor, noises: torch.Tensor | None) -> torch.Tensor:
    """z_i (N, B, *S): the noise behind the state fed to step i (see the module docstring)."""
    rows, z = [], x_T
    for i in range(rule.num_steps):
        if i > 0 and noises is not None and rule.draws_noise[i - 1]:
            z = noises[i - 1].to(x_T)
        rows.append(z)
    return torch.stack(rows)


class _StepLookup:
    """Row-wise step index and abar from the int64 timesteps a sampler passes to ``denoise``."""

    def __init__(self, rule, device):
        if rule.alphas_cumprod is None:
            raise PrefixError("prefix sampling needs a scheduler with alphas_cumprod (DDPM, DDIM or DPM-Solver)")
        timesteps = rule.timesteps.long()
        table = torch.full((int(timesteps.max()) + 1,), -1, dtype=torch.long)
        table[timesteps] = torch.arange(timesteps.shape[0])
        self.table = table.to(device)
        self.alphas = rule.alphas_cumprod.to(device=device, dtype=torch.float32)

    def __call__(self, t: torch.Tensor):
        if t.is_floating_point():
            raise PrefixError("prefix sampling needs a discrete-time sampler (one that declares supports_prefix); this one "
                             "passed continuous timesteps")
        return self.table[t], self.alphas[t]


class HardPrefixDenoiser:
    """``denoise`` with the known entries of its input replaced by the forward-noised known values."""

    def __init__(self, denoise, rule, x_T, noises, known: torch.Tensor, mask: torch.Tensor):
        self.denoise, self.mask, self.batch = denoise, mask, x_T.shape[0]
        self.lookup = _StepLookup(rule, x_T.device)
        abar = self.lookup.alphas[rule.timesteps.to(x_T.device)].view(-1, *([1] * x_T.dim()))
        self.noisy = abar.sqrt() * known + (1 - abar).sqrt() * forward_noise(rule, x_T, noises)  # (N, B, *S)

    def __call__(self, x, t):
        step, _ = self.lookup(t)
        sample = torch.arange(x.shape[0], device=x.device) % self.batch
        return self.denoise(torch.where(self.mask[sample], self.noisy[step, sample], x), t)


class SoftPrefixDenoiser:
    """``denoise`` whose output is steered by RTC's guidance towards the known values."""

    def __init__(self, denoise, rule, x_T, known: torch.Tensor, weights: torch.Tensor, beta: float):
        self.denoise, self.known, self.weights, self.beta = denoise, known, weights, float(beta)
        self.batch = x_T.shape[0]
        self.lookup = _StepLookup(rule, x_T.device)

    def __call__(self, x, t):
        _, abar = self.lookup(t)
        abar = abar.view(-1, *([1] * (x.dim() - 1)))
        sample = torch.arange(x.shape[0], device=x.device) % self.batch
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            eps = self.denoise(x_in, t)
            x0_hat = (x_in - (1 - abar).sqrt() * eps) / abar.sqrt()
            error = (self.known[sample] - x0_hat.detach()) * self.weights[sample]
            (correction,) = torch.autograd.grad(x0_hat, x_in, error)
        gain = torch.clamp(1.0 / (abar * (1 - abar)).sqrt(), max=self.beta)
        return (eps - abar.sqrt() * gain * correction).detach()


def constrained_denoiser(denoise, rule, x_T, noises, prefix: ActionPrefix, known: torch.Tensor,
                         action_rows: slice, action_dim: int):
    """Wrap ``denoise`` for ``prefix``; ``known`` (B, L, Da) is the prefix in normalised units.

    ``action_rows`` is where the chunk's executed steps sit along the trajectory's time axis
    (DiffusionPolicy plans from the last observation step on); the prefix fills its first L
    rows and the first ``action_dim`` feature columns.
    """
    if not prefix.constrains:
        return denoise
    batch, length = x_T.shape[0], known.shape[1]
    if known.shape[0] != batch or known.shape[2] != action_dim:
        raise PrefixError(f"prefix actions have shape {tuple(known.shape)}, expected ({batch}, L, {action_dim})")
    start = action_rows.start
    if start + length > x_T.shape[1]:
        raise PrefixError(f"prefix has {length} actions but the chunk has only {x_T.shape[1] - start} steps")
    target = torch.zeros_like(x_T)
    target[:, start : start + length, :action_dim] = known.to(x_T)
    if prefix.guidance == "hard":
        mask = torch.zeros_like(x_T, dtype=torch.bool)
        mask[:, start : start + prefix.frozen, :action_dim] = True
        return HardPrefixDenoiser(denoise, rule, x_T, noises, target, mask)
    weights = torch.zeros_like(x_T)
    weights[:, start : start + length, :action_dim] = soft_weights(prefix.frozen, length, length).to(x_T).view(
        1, length, 1)
    return SoftPrefixDenoiser(denoise, rule, x_T, target, weights, prefix.max_guidance_weight)
