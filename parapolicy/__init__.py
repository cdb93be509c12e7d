"""parapolicy: run trained DiffusionPolicy checkpoints with parallel-in-time samplers."""

__version__ = "0.1.0"

from parapolicy import samplers  # noqa: E402
from parapolicy.checkpoints import load_policy  # noqa: E402
from parapolicy.controller import Controller  # noqa: E402
from parapolicy.errors import ParapolicyError  # noqa: E402
from parapolicy.policy import Policy  # noqa: E402
from parapolicy.shipped import shipped_checkpoint  # noqa: E402

__all__ = ["Controller", "ParapolicyError", "Policy", "load_policy", "samplers", "shipped_checkpoint", "__version__"]
