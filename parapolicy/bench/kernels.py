"""Counting the torch ops a sampler launches between its network calls: on a GPU each op on a
floating-point tensor (views aside) is one kernel launch, whatever its size, so a chunk's own work
costs about its op count x a launch. Counted through torch's dispatcher on any device (used by
``scripts/bench_kernels.py``, where the GPU path runs on the CPU)."""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from parapolicy.samplers import quasi_newton

VIEWS = {"view", "_unsafe_view", "_reshape_alias", "reshape", "as_strided", "alias", "detach", "expand", "squeeze",
         "unsqueeze", "select", "slice", "t", "transpose", "permute", "unbind", "split", "split_with_sizes",
         "diagonal", "unflatten", "is_same_size"}
HOST_READS = {"_local_scalar_dense"}  # .item(), float(), bool(): on the host's own tensors here too, so not counted


class OpCounter(TorchDispatchMode):
    """Counts dispatched ops on floating-point tensors (views aside) while ``counting`` is set."""

    def __init__(self):
        super().__init__()
        self.counting = False
        self.kernels = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.counting:
            name = func.__name__.split(".")[0]
            if name not in VIEWS | HOST_READS and any(t.is_floating_point() for t in _tensors(args, kwargs, out)):
                self.kernels[name] += 1
        return out


def _tensors(args, kwargs, out):
    for value in (*args, *(kwargs or {}).values(), out):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.Tensor):
                yield item


def count_chunk(policy, obs, seed: int, counter: OpCounter):
    """One chunk through the policy with ops counted inside the sampler's solve, the network's calls
    excluded; returns the chunk's ``SampleStats``."""
    solve = quasi_newton.solve_quasi_newton

    def counted_solve(problem, *args, **kwargs):
        network = problem.denoise

        def quiet(x, t):  # the network's own ops are its call's cost, already in the curve
            counter.counting = False
            try:
                return network(x, t)
            finally:
                counter.counting = True

        counter.counting = True
        try:
            return solve(problem.replace(denoise=quiet), *args, **kwargs)
        finally:
            counter.counting = False

    quasi_newton.solve_quasi_newton = counted_solve
    try:
        with counter:
            out = policy.predict_action(obs, generator=torch.Generator().manual_seed(seed))
    finally:
        quasi_newton.solve_quasi_newton = solve
    return out.stats.sampling
