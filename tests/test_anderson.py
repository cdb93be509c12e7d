"""Anderson-accelerated Picard keeps the fixed point and needs fewer rounds."""

import pytest
import torch
from helpers import SmoothNetDenoiser, make_scheduler

from parapolicy.errors import SamplerConfigError
from parapolicy.samplers import AcceleratedPicard, Picard, Sequential, draw_noises, make_sampler


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "dpm"])
def test_same_answer_as_sequential_as_tolerance_shrinks(kind):
    sched = make_scheduler(kind)
    net = SmoothNetDenoiser(32, seed=7, scheduler=sched)
    draws = draw_noises(sched, (4, 16, 2), torch.Generator().manual_seed(5))
    ref = Sequential().sample(net, sched, draws.x_T, draws.noises).sample
    out = AcceleratedPicard(window=len(sched.timesteps), tolerance=1e-5).sample(net, sched, draws.x_T, draws.noises)
    assert (out.sample - ref).abs().max() / ref.abs().max() < 5e-6
    assert out.stats["sampler"] == "accelerated_picard"


def test_fewer_rounds_than_plain_picard_on_average():
    plain, accel = [], []
    for seed in range(6):
        for kind in ("ddpm", "ddim"):
            sched = make_scheduler(kind)
            net = SmoothNetDenoiser(32, seed=seed, scheduler=sched)
            draws = draw_noises(sched, (2, 16, 2), torch.Generator().manual_seed(seed))
            width = len(sched.timesteps)
            plain.append(Picard(window=width, tolerance=0.1).sample(net, sched, draws.x_T, draws.noises)
                         .stats["parallel_iters"])
            accel.append(AcceleratedPicard(window=width, tolerance=0.1).sample(net, sched, draws.x_T, draws.noises)
                         .stats["parallel_iters"])
    assert sum(accel) < sum(plain), (plain, accel)


def test_bad_memory_is_rejected():
    with pytest.raises(SamplerConfigError, match="memory must be an integer >= 1"):
        make_sampler("accelerated_picard", memory=0)
