"""DiffusionPolicy's discrete noise schedule read as the continuous VP process it discretises.

The network was trained at integer timesteps t with noise level alpha_bar[t]. Solvers
that need noise levels between the grid points (randomized midpoints) use the log-SNR
lambda(t) = log(alpha_bar / (1 - alpha_bar)), linearly interpolated in t; at integer t
this is the trained schedule exactly. The probability-flow ODE is simplest in the DDIM
variables y = x / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar):

    dy / dsigma = eps(x, t(sigma)),

so an Euler step in sigma is exactly a DDIM step, and the ODE ends at sigma = 0 (x = y).
"""

from __future__ import annotations

import torch


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ac = alphas_cumprod.double()
    return torch.log(ac) - torch.log1p(-ac)


def alpha_bar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """alpha_bar at continuous t in [0, T-1] (log-SNR interpolation), float64."""
    lam = log_snr(alphas_cumprod).to(t.device)
    t = t.double().clamp(0, lam.shape[0] - 1)
    low = t.floor().long().clamp(max=lam.shape[0] - 2)
    frac = t - low
    return torch.sigmoid(lam[low] * (1 - frac) + lam[low + 1] * frac)


def sigma_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    ac = alpha_bar_at(alphas_cumprod, t)
    return ((1 - ac) / ac).sqrt()


def timestep_at_sigma(alphas_cumprod: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sigma_at``: the continuous t with that noise level, clamped to [0, T-1]."""
    lam = log_snr(alphas_cumprod).to(sigma.device)  # decreasing in t
    target = -2.0 * torch.log(sigma.double().clamp_min(1e-30))
    rising = -lam  # increasing in t, so searchsorted applies
    idx = torch.searchsorted(rising, -target).clamp(1, lam.shape[0] - 1)
    lo, hi = lam[idx - 1], lam[idx]
    frac = ((target - lo) / (hi - lo)).clamp(0, 1)
    return ((idx - 1).double() + frac).clamp(0, lam.shape[0] - 1)


def epsilon_from_output(output, x, alpha_bar, prediction_type: str):
    """The network's output as an epsilon prediction, whatever it was trained to predict."""
    if prediction_type == "epsilon":
        return output
    a = alpha_bar.to(x.dtype)
    if prediction_type == "sample":
        return (x - a.sqrt() * output) / (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * output + (1 - a).sqrt() * x
    raise ValueError(f"unknown prediction_type {prediction_type!r}")

