"""A stand-in for CUDA graph capture on the CPU: the same build-once-per-key, replay-is-a-call contract."""


class RunWithoutCapture:
    """``GraphedDenoiser.captured`` as on a GPU, minus the graph: build once per key, replay = call."""

    def __init__(self):
        self.built = {}

    def captured(self, key, build, device):
        if key not in self.built:
            self.built[key] = build()
        return self.built[key]
