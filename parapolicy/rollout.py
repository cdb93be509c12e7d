"""Moved: the library is :mod:`parapolicy.eval`, the CLI entry point :mod:`parapolicy.cli.rollout`.

Kept so existing imports (``ASSETS_DIR``, ``make_env_factory``) and ``python -m parapolicy.rollout``
keep working.
"""

from parapolicy.eval.build import ASSETS_DIR, CONFIG_DIR, device_name, ensure_envs_importable, make_env_factory  # noqa: F401
from parapolicy.eval.run import run_rollout  # noqa: F401

_ensure_envs_importable = ensure_envs_importable



def main() -> None:
    """The old console-script target; the entry point is ``parapolicy.cli.rollout:main``."""
    from parapolicy.cli.rollout import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
