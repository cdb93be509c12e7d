"""A built wheel, installed into a bare folder, gives a working parapolicy-rollout from anywhere."""

import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_wheel_install_runs_the_cli_from_an_empty_folder(tmp_path):
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ and *.egg-info into the source
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src / name)
    for name in ("parapolicy", "envs"):
        shutil.copytree(os.path.join(ROOT, name), src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = glob.glob(str(tmp_path / "dist" / "parapolicy-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"parapolicy/configs/rollout.yaml", "parapolicy/configs/env/toy.yaml",
            "parapolicy/configs/logger/offline.yaml", "parapolicy/assets/checkpoints/toy_reach_unet.ckpt"} <= set(names)
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), wheel], check=True, capture_output=True,
                   timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), WANDB_MODE="disabled")
    proc = subprocess.run([str(site / "bin" / "parapolicy-rollout"), "env=toy", "n_episodes=2", "logger=disabled"],
                          cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = glob.glob(str(empty / "outputs" / "rollout" / "*" / "results.json"))
    results = json.load(open(results))
    assert results["n_completed"] == 2 and results["env"] == "parapolicy/ToyReach-v0"
    assert results["checkpoint"] == str(site / "parapolicy" / "assets" / "checkpoints" / "toy_reach_unet.ckpt")
    assert "2 of 2 episodes completed" in proc.stdout
