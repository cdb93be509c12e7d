"""The plain denoising loop: one network call per step, as upstream's ``conditional_sample``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from parapolicy.errors import NonFiniteSampleError
from parapolicy.samplers.common import SampleResult, check_inputs, impose, timestep_rows
from parapolicy.samplers.step_rules import make_step_rule


def sample_sequential(denoise_fn, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, callback=None):
    """Run every step in order; reproduces upstream bit for bit given upstream's draws.

    ``denoise_fn(x, t)`` takes ``x`` of shape (B, *S) and int64 timesteps ``t`` of shape (B,)
    and returns the network's prediction with the shape of ``x``. The inpainting
    condition is re-imposed before every call and once after the loop, as upstream does.
    """
    from parapolicy.samplers.graphed import graph_plan, sample_sequential_graphed  # it falls back on this module

    rule = make_step_rule(scheduler)
    check_inputs(rule, x_T, noises)
    coefficients = graph_plan(denoise_fn, rule, x_T, callback)
    if coefficients is not None:  # CUDA graphs on: the whole chain is one replay
        return sample_sequential_graphed(denoise_fn, rule, coefficients, x_T, noises, cond_data, cond_mask)
    batch = x_T.shape[0]
    x, past = x_T, []
    for i in range(rule.num_steps):
        x = impose(x, cond_data, cond_mask)
        eps = denoise_fn(x, timestep_rows(rule, i, 1, batch, x.device))
        step_noise = noises[i : i + 1] if noises is not None else None
        nxt, converted = rule.transition(i, x[None], eps[None], step_noise, past)
        x = nxt[0]
        if converted is not None and rule.history_length:
            past = (past + [converted[0]])[-rule.history_length :]
        if callback is not None:
            callback({"step": i, "x": x})
    x = impose(x, cond_data, cond_mask)
    check_finite(x)
    n = rule.num_steps
    return SampleResult(x, {"sampler": "sequential", "nfe": n, "parallel_iters": n, "network_calls": n})


def check_finite(sample: torch.Tensor) -> None:
    """Sequential sampling is the last resort: NaN/inf here is one clear error, never an answer."""
    if not bool(torch.isfinite(sample).all()):
        raise NonFiniteSampleError(
            "sequential sampling produced NaN/inf: check the network weights and the observation values"
        )


def sequential_fallback(denoise_fn, rule, x_T, noises, cond_data, cond_mask, *, name, rounds, nfe):
    """What a parallel sampler returns after NaN/inf in round ``rounds``: the sequential answer, saying so."""
    result = sample_sequential(denoise_fn, rule, x_T, noises, cond_data, cond_mask)
    n_steps = rule.num_steps
    result.stats.update(sampler=name, fallback=f"sequential: non-finite values in Picard round {rounds}",
                        parallel_iters=rounds + n_steps, network_calls=rounds + n_steps, nfe=nfe + n_steps)
    return result


@dataclass(frozen=True)
class Sequential:
    """Settings holder for the sequential sampler (it has none)."""

    name = "sequential"

    def sample(self, denoise_fn, scheduler, x_T, noises=None, cond_data=None, cond_mask=None, callback=None):
        return sample_sequential(denoise_fn, scheduler, x_T, noises, cond_data, cond_mask, callback)

    def config(self) -> dict:
        return {"name": self.name}
