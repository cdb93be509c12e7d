"""Who runs a round kernel: the executor protocol and the eager executor.

A round kernel reads and writes only the tensors in its buffer dict and never syncs with
the host, so the same kernel can be called directly (eager) or captured once and replayed
(``parapolicy.acceleration.GraphExecutor``). Samplers ask the problem's executor to run
their kernels and never know which one it is.
"""

from __future__ import annotations

from typing import Callable, Protocol


class Executor(Protocol):
    captures: bool  # True: kernels are captured/replayed, so they must keep fixed shapes

    def prepare(self, key, build: Callable, denoise: Callable):
        """``(buffers, run)``: ``build(denoise) -> (buffers, fn)``; ``run()`` executes ``fn``.

        ``key`` names the kernel and every shape it depends on: a capturing executor builds
        once per key, and its ``denoise`` reads conditioning it owns (the caller's is ignored).
        """


class EagerExecutor:
    """Call the kernel directly, with the problem's own denoiser."""

    captures = False

    def prepare(self, key, build, denoise):
        return build(denoise)


EAGER = EagerExecutor()
