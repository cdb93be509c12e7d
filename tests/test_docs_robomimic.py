"""docs/robomimic.md stays true: its rollout commands compose, its scripts and configs exist."""

import os
import re
import shlex

import pytest
from hydra import compose, initialize_config_dir

from parapolicy.eval.build import CONFIG_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = open(os.path.join(ROOT, "docs", "robomimic.md")).read()
LINES = [shlex.split(line, comments=True) for block in re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
         for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("args", [c[1:] for c in LINES if c[0] == "parapolicy-rollout"], ids=" ".join)
def test_every_rollout_command_composes(args):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=args)
    checkpoint = [a.split("=", 1)[1] for a in args if a.startswith("checkpoint=")]
    if checkpoint and checkpoint[0].startswith("parapolicy/"):
        assert os.path.isfile(os.path.join(ROOT, checkpoint[0]))
    assert cfg.env.id == "auto" or "robomimic" in str(cfg.env.id) or cfg.env.id.startswith("parapolicy/")


def test_every_script_command_names_an_existing_script_and_config():
    scripts = [c for c in LINES if c[0] == "python"]
    assert len(scripts) >= 3
    for command in scripts:
        assert os.path.isfile(os.path.join(ROOT, command[1]))
        if "--config-name" in command:
            name = command[command.index("--config-name") + 1]
            assert os.path.isfile(os.path.join(ROOT, "configs", "train", f"{name}.yaml"))
