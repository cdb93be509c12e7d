"""Entry point of ``parapolicy-rollout``: policy + environments + metrics + logging."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """Not built yet: fail loudly rather than pretend a rollout happened."""
    print(
        "parapolicy-rollout: environment rollouts are not implemented in this version yet "
        "(they need the checkpoint loader and the environments); use parapolicy.samplers directly.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
