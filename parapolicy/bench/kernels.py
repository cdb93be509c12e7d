"""Counting the torch ops a sampler launches between its network calls: on a GPU each op on the
states' tensors (views aside) is one kernel launch, whatever its size, so a chunk's own work costs
about its op count x a launch. And counting its host syncs, where the host waits for every queued
kernel before it launches the next: reads of device values, and host data sent by a blocking copy.
Counted through torch's dispatcher on any device (used by ``scripts/bench_kernels.py``, where the
GPU path runs on the CPU)."""

from __future__ import annotations

import collections
import contextlib
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from parapolicy.samplers import quasi_newton

VIEWS = {"view", "_unsafe_view", "_reshape_alias", "reshape", "as_strided", "alias", "detach", "expand", "squeeze",
         "unsqueeze", "select", "slice", "t", "transpose", "permute", "unbind", "split", "split_with_sizes",
         "diagonal", "unflatten", "is_same_size"}
# host work, no kernel on a GPU: reads (.item(), float(), bool(), a sync each there but on the host's own
# tensors here too) and Python numbers wrapped as tensors (torch.where(m, x, 0.0), t[i] = 1.0)
HOST_OPS = {"_local_scalar_dense", "scalar_tensor", "lift_fresh", "lift_fresh_copy"}
INDEXING = {"index", "index_put_", "index_put", "_index_put_impl_"}  # take their indices as a list
SYNCING_OPS = {"_local_scalar_dense": "read", "_linalg_check_errors": "error check"}  # on device values


class OpCounter(TorchDispatchMode):
    """Counts, while ``counting`` is set, the dispatched ops (views and HOST_OPS aside) that read or
    write a floating-point tensor, or read a mask computed from one (a clipping mask's ``&``, a
    finiteness check's ``all``): the device's work. Integer and boolean ops on the host's own index
    tensors (plans, counts, which steps were evaluated) are not kernels on a GPU and are not counted,
    but such a tensor indexing a device tensor is sent there first: a copy, counted (``to_device``);
    nor is what a ``.cpu()`` copy brought to the host (``count_chunk`` makes the copy real on the CPU,
    where ``.cpu()`` would return the tensor itself, and counts the transfer), and likewise a host
    index sent by ``.to(device)`` (``to_device``). ``mark`` declares integer tensors that live on the
    device (a schedule's timesteps). Not seen on the CPU: tensors a factory makes on the device
    (``torch.arange(n, device=...)``); the sampler makes its indices on the host and sends them.

    ``syncs`` counts the host syncs by kind: ``read`` (a device value read on the host: ``float()``,
    ``bool()``, ``.item()``, ``.tolist()``), ``to_host`` (a ``.cpu()`` copy), ``blocking send`` (host
    data sent without ``non_blocking``: CUDA waits for the stream first), ``error check`` (a linalg
    function's check of its result, as ``torch.linalg.solve`` makes) and ``mask index`` (a gather or
    scatter through a boolean mask, whose size the host needs first). Not seen: a float tensor's
    blocking send (the counter cannot tell host floats from device ones)."""

    def __init__(self):
        super().__init__()
        self.counting = False
        self.kernels = collections.Counter()
        self.syncs = collections.Counter()
        self._masks = {}  # id -> weakref of the device's non-float tensors (counted ops made them, or marked)
        self.to_host = False  # inside a .cpu() copy: its result is the host's
        self.to_device = False  # inside a host index's .to(device): its result is the device's

    def mark(self, *tensors) -> None:
        """Declare non-float ``tensors`` as the device's."""
        for t in tensors:
            self._masks[id(t)] = weakref.ref(t)

    def is_device(self, tensor) -> bool:
        ref = self._masks.get(id(tensor))
        return ref is not None and ref() is tensor

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.counting:
            return out
        name = func.__name__.split(".")[0]
        if name in SYNCING_OPS:
            if any(t.is_floating_point() or self.is_device(t) for t in _tensors(args, kwargs, None)):
                self.syncs[SYNCING_OPS[name]] += 1
            return out
        if self.to_device:  # the copy that sends a host index to the device
            self.kernels["to_device"] += 1
            self.mark(*_tensors((), None, out))
            return out
        inputs = list(_tensors(args, kwargs, None))
        device = any(t.is_floating_point() or self.is_device(t) for t in inputs)
        if not (device or any(t.is_floating_point() for t in _tensors((), None, out))) or name in HOST_OPS:
            return out
        if name not in VIEWS:
            self.kernels["to_host" if self.to_host else name] += 1
        if name in INDEXING:  # host index tensors go to the device first, a copy each
            sent = [t for t in _indices(args) if not t.is_floating_point() and not self.is_device(t)]
            self.kernels["to_device"] += len(sent)
            # a boolean mask's entries are counted (nonzero) before the gather is launched: a sync
            if any(t.dtype == torch.bool for t in _indices(args)):
                self.syncs["mask index"] += 1
        if not self.to_host:
            self.mark(*(t for t in _tensors((), None, out) if not t.is_floating_point()))
        return out


def _indices(args):
    """The index tensors of an advanced-indexing op: ``(self, indices, ...)``."""
    return [t for t in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ())
            if isinstance(t, torch.Tensor)]


def _tensors(args, kwargs, out):
    for value in (*args, *(kwargs or {}).values(), *(() if out is None else (out,))):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, torch.Tensor):
                yield item


@contextlib.contextmanager
def transfers_counted(counter: OpCounter):
    """``Tensor.cpu``, ``.to`` and ``.tolist`` patched (process-wide, restored on exit) so that, while
    ``counter`` counts, they count as on a GPU: ``.cpu()`` a transfer and a sync (made a real copy
    here, where it would return the tensor itself), ``.to(device)`` of a host index a transfer (a
    sync too unless ``non_blocking``), ``.tolist()`` of a device value a sync."""

    def transfer(direction: str, tensor):  # a real copy on the CPU, counted as the transfer it is on a GPU
        setattr(counter, direction, True)
        try:
            return tensor.clone()
        finally:
            setattr(counter, direction, False)

    def host_index_to_device(tensor, *args, **kwargs):  # on a GPU .to(device) sends a host index there
        target = kwargs.get("device", args[0] if args else None)
        sending = (counter.counting and isinstance(target, (torch.device, str)) and not tensor.is_floating_point()
                   and not counter.is_device(tensor))
        if sending and not kwargs.get("non_blocking", False):
            counter.syncs["blocking send"] += 1
        return transfer("to_device", tensor) if sending else originals["to"](tensor, *args, **kwargs)

    def host_copy(tensor, *args, **kwargs):  # on a GPU .cpu() is a transfer to a new host tensor
        if not counter.counting or tensor.device.type != "cpu":
            return originals["cpu"](tensor, *args, **kwargs)
        counter.syncs["to_host"] += 1
        return transfer("to_host", tensor)

    def host_list(tensor):  # on a GPU .tolist() of a device tensor waits for it
        if counter.counting and (tensor.is_floating_point() or counter.is_device(tensor)):
            counter.syncs["read"] += 1
        return originals["tolist"](tensor)

    wrappers = {"cpu": host_copy, "to": host_index_to_device, "tolist": host_list}
    originals = {name: getattr(torch.Tensor, name) for name in wrappers}
    for name, method in wrappers.items():
        setattr(torch.Tensor, name, method)
    try:
        yield counter
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


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

        rule = problem.rule
        rule.coefficients_on(problem.x_T.device)  # made and cached before counting: setup, not the chunk's work
        counter.mark(rule.timesteps)  # on the device there
        counter.counting = True
        try:
            return solve(problem.replace(denoise=quiet), *args, **kwargs)
        finally:
            counter.counting = False

    quasi_newton.solve_quasi_newton = counted_solve
    try:
        with transfers_counted(counter), counter:
            out = policy.predict_action(obs, generator=torch.Generator().manual_seed(seed))
    finally:
        quasi_newton.solve_quasi_newton = solve
    return out.stats.sampling
