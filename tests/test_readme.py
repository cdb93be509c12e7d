"""README's Set-up and Rollouts commands stay true: every command there is composed or run here."""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from parapolicy.eval.build import CONFIG_DIR, resolve_checkpoint
from parapolicy.eval.run import run_rollout
from parapolicy.eval.sweep import load_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()


def section(title):
    start = README.index(f"\n## {title}")
    return README[start: README.index("\n## ", start + 1)]


def blocks(text, lang):
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(title):
    return [shlex.split(line, comments=True) for block in blocks(section(title), "bash")
            for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


CLI_LINES = [c[1:] for c in commands("Rollouts") if c[0] == "parapolicy-rollout"]


def jobs(args):
    """The override lists Hydra runs for one command line (one per multirun combination)."""
    if "-m" not in args:
        return [args]
    overrides = OverridesParser.create().parse_overrides([a for a in args if a != "-m"])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


@pytest.mark.parametrize("args", CLI_LINES, ids=" ".join)
def test_every_rollout_command_composes(args):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        for job in jobs(args):
            cfg = compose("rollout", overrides=job, return_hydra_config=True)
            if not any(a.startswith("checkpoint=") for a in job):
                assert os.path.exists(resolve_checkpoint(cfg))


def test_the_multirun_example_expands_to_every_sampler_window_pair():
    (line,) = [a for a in CLI_LINES if "sampler.window=4,16,100" in a]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        got = {(c.sampler.name, c.sampler.window) for c in (compose("rollout", overrides=j) for j in jobs(line))}
    assert got == {(s, w) for s in ("picard", "newton_picard") for w in (4, 16, 100)}


def test_set_up_commands_name_what_pyproject_and_ci_install():
    lines = [c for c in commands("Set-up on a fresh machine")]
    pyproject, ci = open(os.path.join(ROOT, "pyproject.toml")).read(), open(os.path.join(ROOT, ".ci", "run")).read()
    torch_pins = {a for c in lines for a in c if a.startswith(("torch==", "torchvision=="))}
    assert torch_pins == {"torch==2.14.1", "torchvision==0.29.1"} and all(p in ci for p in torch_pins)
    assert 'pip install -q -e ".[dev]"' in ci and "\ndev = [" in pyproject
    assert ["parapolicy-rollout"] in [c[-1:] for c in lines]  # the main job: the CLI with its defaults
    assert 'parapolicy-rollout = "parapolicy.cli.rollout:main"' in pyproject


def test_sweep_commands_name_valid_sweep_files():
    files = [a for c in commands("Rollouts") for a in c if a.startswith("configs/sweeps/")]
    assert len(files) >= 2
    for path in files:
        load_sweep(os.path.join(ROOT, path))


def test_the_local_sweep_command_runs(toy_ckpt, tmp_path):
    (line,) = [c for c in commands("Rollouts") if c[:2] == ["python", "scripts/sweep_local.py"]]
    env = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "envs")]))
    proc = subprocess.run([sys.executable, *line[1:], "--max-runs", "1", "--dir", str(tmp_path), f"checkpoint={toy_ckpt}",
                           "env=toy", "n_episodes=1", "logger=disabled", "progress=false"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run-0: sampler=picard sampler.tolerance=0.05 sampler.window=4  rollout/latency_at_equal_score_ms=" in \
        proc.stdout
    assert json.load(open(tmp_path / "0" / "results.json"))["paired"]["sampler_b"] == {"name": "sequential"}


def test_the_results_json_example_has_exactly_the_written_keys(toy_ckpt, tmp_path):
    (example,) = blocks(section("Rollouts"), "json")
    shown = json.loads(example)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose("rollout", overrides=[f"checkpoint={toy_ckpt}", "env=toy", "n_episodes=1", "logger=disabled"])
    written = run_rollout(cfg, str(tmp_path))
    assert list(shown) == list(json.load(open(tmp_path / "results.json")))
    for key in ("policy", "latency_chunk_ms", "metrics"):
        assert set(shown[key]) == set(written[key]), key
