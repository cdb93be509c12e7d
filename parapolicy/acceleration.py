"""Executors and faster network calls on a GPU: CUDA-graph replay or torch.compile.

On a GPU a DiffusionPolicy UNet call is launch-bound: eager PyTorch spends a few ms
queueing hundreds of small kernels whether the batch holds 1 row or 100. Replaying a
captured CUDA graph removes that cost, which is what makes a Picard round over a whole
window cost about one sequential step. Graphs need fixed shapes, so the row count of every
call is padded up to a power of two (a Picard window that shrinks at the end reuses the
graph of a bigger one) and one graph is kept per padded shape. Padded rows hold stale but
finite inputs and are dropped from the output: every row of the network is independent.

``GraphExecutor`` runs the samplers' round kernels (``parapolicy.samplers.kernels``) as
graph replays: one capture per kernel, step-rule content and shape (the samplers' key), the
network and its conditioning given to it explicitly, so samplers never know whether they
run eagerly or replayed.
"""

from __future__ import annotations

import torch
from torch import nn

from parapolicy.errors import AccelerationError

MODES = ("eager", "cuda_graph", "compile")


def padded_rows(rows: int) -> int:
    """The graph size a call of ``rows`` rows runs in: the next power of two."""
    return 1 << max(0, int(rows) - 1).bit_length()


class _PaddedCall:
    """``model(x, t, **cond)`` run at a padded row count through fixed input buffers.

    Subclasses say how a padded shape is prepared (``_build``) and run (``_run``). The
    returned tensor is a fresh copy: the buffers are overwritten by the next call.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._entries = {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        rows = x.shape[0]
        size = padded_rows(rows)
        key = (size, x.device, x.dtype, tuple(x.shape[1:]), t.dtype,
               tuple((k, v.dtype, tuple(v.shape[1:])) for k, v in sorted(cond.items())))
        entry = self._entries.get(key)
        if entry is None:
            buffers = {"x": x.new_zeros((size, *x.shape[1:])), "t": t.new_zeros((size,))}
            buffers.update({k: v.new_zeros((size, *v.shape[1:])) for k, v in cond.items()})
            entry = self._entries[key] = self._build(buffers)
        buffers = entry["buffers"]
        buffers["x"][:rows].copy_(x)
        buffers["t"][:rows].copy_(t)
        for k, v in cond.items():
            buffers[k][:rows].copy_(v)
        return self._run(entry)[:rows].clone()

    @property
    def shapes_built(self) -> int:
        """How many padded shapes have a graph (or compiled specialisation) so far."""
        return len(self._entries)

    def _forward(self, buffers, net=None):
        cond = {k: v for k, v in buffers.items() if k not in ("x", "t")}
        return (self.model if net is None else net)(buffers["x"], buffers["t"], **cond)

    def _build(self, buffers):
        raise NotImplementedError

    def _run(self, entry):
        raise NotImplementedError


class GraphedDenoiser(_PaddedCall):
    """One CUDA graph per padded shape, captured on first use, all in one memory pool.

    ``captured`` also holds graphs of whole round kernels (a Picard round, a sequential
    chain), for ``GraphExecutor``.
    """

    warmup_calls = 3

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self._pool = None
        self._whole = {}

    def _capture(self, fn, device):
        """Warm ``fn`` up on a side stream (kernel choice, allocator), then capture it."""
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(self.warmup_calls):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self._pool):
            output = fn()
        return graph, output

    def _build(self, buffers):
        graph, output = self._capture(lambda: self._forward(buffers), buffers["x"].device)
        return {"buffers": buffers, "graph": graph, "output": output}

    def _run(self, entry):
        entry["graph"].replay()
        return entry["output"]

    def captured(self, key, build, device):
        """``(buffers, replay)`` for ``key``; on first use ``build()`` gives (buffers, fn) and fn is captured.

        ``fn`` must read and write only ``buffers`` (the warm-up runs it too), so callers
        fill the inputs before each ``replay()`` and read the outputs after.
        """
        if key not in self._whole:
            buffers, fn = build()
            graph, _ = self._capture(fn, device)
            # fn is kept: the tensors its closure made (index vectors, padded coefficients) are
            # read by every replay, and freeing them would hand their memory to other tensors
            self._whole[key] = (buffers, graph.replay, fn)
        buffers, replay, _ = self._whole[key]
        return buffers, replay


class GraphExecutor:
    """Runs a round kernel as a CUDA-graph replay, captured once per kernel key and shapes.

    The kernel calls ``denoise(x, t)``; here that is the raw ``network`` with conditioning
    read from static buffers this executor owns (tiled to the kernel's row count at
    capture), refreshed from ``conditions`` before every call's replays.
    """

    captures = True

    def __init__(self, graphs: GraphedDenoiser, network, conditions: dict, device):
        self.graphs, self.network, self.device = graphs, network, torch.device(device)
        self.conditions = {k: v for k, v in conditions.items() if v is not None}

    def prepare(self, key, build, denoise):
        batch = next(iter(self.conditions.values())).shape[0] if self.conditions else 1
        shapes = tuple((k, v.dtype, tuple(v.shape)) for k, v in sorted(self.conditions.items()))
        static = {}  # rows per condition row -> {name: buffer}, made while warming up (before capture)

        def graph_denoise(x, t):
            reps = x.shape[0] // batch
            if reps not in static:
                static[reps] = {k: v.repeat(reps, *([1] * (v.dim() - 1))) for k, v in self.conditions.items()}
            return self.network(x, t, **static[reps])

        def build_captured():
            buffers, fn = build(graph_denoise)
            return (buffers, static), fn

        (buffers, owned), replay = self.graphs.captured(key + shapes, build_captured, self.device)
        for reps, cond in owned.items():
            for k, v in self.conditions.items():
                cond[k].copy_(v.repeat(reps, *([1] * (v.dim() - 1))))
        return buffers, replay


class CompiledDenoiser(_PaddedCall):
    """``torch.compile`` (mode ``reduce-overhead``: its own CUDA graphs), one shape per padded size."""

    def __init__(self, model: nn.Module, mode: str = "reduce-overhead"):
        super().__init__(model)
        self._compiled = torch.compile(model, mode=mode, dynamic=False)

    def _build(self, buffers):
        return {"buffers": buffers}

    def _run(self, entry):
        with torch.no_grad():
            return self._forward(entry["buffers"], self._compiled)


def make_denoiser(model: nn.Module, mode: str, device: torch.device):
    """The callable a policy runs its network through for ``mode`` (see ``MODES``)."""
    if mode not in MODES:
        raise AccelerationError(f"unknown acceleration {mode!r}; choose one of {', '.join(MODES)}")
    if mode == "eager":
        return model
    if torch.device(device).type != "cuda":
        raise AccelerationError(
            f"acceleration {mode!r} needs the policy on a CUDA device, but it is on {device}; "
            "load it with device='cuda' or use acceleration='eager'"
        )
    return GraphedDenoiser(model) if mode == "cuda_graph" else CompiledDenoiser(model)
