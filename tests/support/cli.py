"""Running ``parapolicy-rollout`` as a user does (a subprocess) and composing its config in-process."""

import os
import signal
import subprocess
import sys

from hydra import compose, initialize_config_dir

from parapolicy.eval.build import CONFIG_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ctrl_c_as_in_a_terminal():
    """A test run started in the background (``cmd &`` in a script) ignores SIGINT, and children
    inherit that; the CLI under test gets Ctrl-C the way a user's terminal delivers it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(args, cwd, timeout=600, extra_env=None, pythonpath=()):
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_DIR=str(cwd), WANDB_SILENT="true")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), ROOT, os.path.join(ROOT, "envs"),
                                         env.get("PYTHONPATH", "")])
    env.pop("HYDRA_FULL_ERROR", None)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "parapolicy.cli.rollout", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env, preexec_fn=_ctrl_c_as_in_a_terminal)


def compose_rollout(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose("rollout", overrides=overrides)
