"""The Gaussian target with a closed-form answer: data ~ N(MU, S^2) makes every DDPM/DDIM step affine.

Computed in float64 from the schedule alone (independent of diffusers' step code), so the
samplers' answers are checked against exact numbers, not against each other.
"""

import torch

MU, S = 0.2, 0.15


def affine_steps(sched, stochastic):
    """Per step (a, c, sigma): x_next = a*x + c + sigma*z for the exact Gaussian denoiser."""
    ac = sched.alphas_cumprod.double()
    ts = [int(t) for t in sched.timesteps]
    steps = []
    for i, t in enumerate(ts):
        a_t = ac[t]
        a_p = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0, dtype=torch.float64)
        k = (1 - a_t).sqrt() / (a_t * S**2 + 1 - a_t)  # eps = k * (x - sqrt(a_t) mu)
        # x0_pred = (x - sqrt(1-a_t) eps) / sqrt(a_t) = p*x + q
        p = (1 - (1 - a_t).sqrt() * k) / a_t.sqrt()
        q = (1 - a_t).sqrt() * k * a_t.sqrt() * MU / a_t.sqrt()
        if stochastic:  # DDPM posterior mean and variance
            beta = 1 - a_t / a_p
            c0, ct = a_p.sqrt() * beta / (1 - a_t), (a_t / a_p).sqrt() * (1 - a_p) / (1 - a_t)
            a, c = c0 * p + ct, c0 * q
            sigma = ((1 - a_p) / (1 - a_t) * beta).sqrt() if t > 0 else torch.tensor(0.0, dtype=torch.float64)
        else:  # DDIM, eta = 0: x_prev = sqrt(a_p) x0 + sqrt(1-a_p) eps
            a = a_p.sqrt() * p + (1 - a_p).sqrt() * k
            c = a_p.sqrt() * q - (1 - a_p).sqrt() * k * a_t.sqrt() * MU
            sigma = torch.tensor(0.0, dtype=torch.float64)
        steps.append((a, c, sigma))
    return steps
