"""Only regular files inside a checkpoint are opened: special files and escaping symlinks are refused first.

A FIFO named like a statistics file used to block ``load_policy`` forever; symlinks in a
LeRobot directory that led outside it were followed (an outside config's text appeared in
the error, an outside model loaded silently). Every case here is one ``CheckpointError``
naming the file, raised before the file is opened.
"""

import os
import shutil

import pytest
import torch
from tests.support.lerobot_eras import STATE_ONLY_0_5, write_dir

import parapolicy
from parapolicy.checkpoints.lerobot import PRE_STATS
from parapolicy.errors import CheckpointError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs and symlinks")


@pytest.fixture(scope="module")
def lerobot_dir(tmp_path_factory):
    return write_dir(tmp_path_factory.mktemp("files") / "pretrained_model", STATE_ONLY_0_5, "processor")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", [PRE_STATS, "config.json", "model.safetensors"])
def test_a_fifo_in_a_lerobot_dir_is_refused_unopened(lerobot_dir, tmp_path, name):
    folder = _copy(lerobot_dir, tmp_path / "fifo")
    os.unlink(folder / name)
    os.mkfifo(folder / name)  # opening it for reading would wait for a writer forever
    with pytest.raises(CheckpointError, match=rf"'{name}' is a FIFO \(named pipe\); expected a regular file"):
        parapolicy.load_policy(folder)


@pytest.mark.timeout(60)
def test_a_fifo_named_like_any_stats_file_is_refused(lerobot_dir, tmp_path):
    folder = _copy(lerobot_dir, tmp_path / "glob")
    for name in os.listdir(folder):
        if name.endswith("processor.safetensors"):
            os.unlink(folder / name)
    os.mkfifo(folder / "extra_normalizer_processor.safetensors")
    with pytest.raises(CheckpointError, match=r"'extra_normalizer_processor.safetensors' is a FIFO"):
        parapolicy.load_policy(folder)


@pytest.mark.timeout(60)
def test_a_fifo_given_as_a_checkpoint_file_is_refused(tmp_path):
    os.mkfifo(tmp_path / "policy.ckpt")
    with pytest.raises(CheckpointError, match=r"policy.ckpt' is a FIFO \(named pipe\); expected a regular file"):
        parapolicy.load_policy(tmp_path / "policy.ckpt")


def test_a_symlink_to_an_outside_config_is_refused_without_reading_it(lerobot_dir, tmp_path):
    outside = tmp_path / "secret.json"
    outside.write_text('{"type": "OUTSIDE-SECRET-TEXT"}')
    folder = _copy(lerobot_dir, tmp_path / "cfg_link")
    os.unlink(folder / "config.json")
    os.symlink(outside, folder / "config.json")
    with pytest.raises(CheckpointError, match=r"'config.json' in .* is a symlink to .*secret.json', outside the "
                                              r"checkpoint directory") as info:
        parapolicy.load_policy(folder)
    assert "OUTSIDE-SECRET-TEXT" not in str(info.value)


def test_a_symlink_to_an_outside_model_is_refused(lerobot_dir, tmp_path):
    other = _copy(lerobot_dir, tmp_path / "other")
    folder = _copy(lerobot_dir, tmp_path / "model_link")
    os.unlink(folder / "model.safetensors")
    os.symlink(other / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"'model.safetensors' in .* is a symlink to .*other/model.safetensors', "
                                              r"outside the checkpoint directory"):
        parapolicy.load_policy(folder)
    os.unlink(folder / "model.safetensors")
    shutil.copy(other / "model.safetensors", folder / "model.safetensors")
    os.unlink(folder / PRE_STATS)
    os.symlink("/dev/zero", folder / PRE_STATS)
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        parapolicy.load_policy(folder)


def test_symlinks_that_stay_inside_the_directory_still_load(lerobot_dir, tmp_path):
    folder = _copy(lerobot_dir, tmp_path / "inner")
    os.makedirs(folder / "weights")
    os.replace(folder / "model.safetensors", folder / "weights" / "model.safetensors")
    os.symlink(os.path.join("weights", "model.safetensors"), folder / "model.safetensors")
    loaded = parapolicy.load_policy(folder)
    reference = parapolicy.load_policy(lerobot_dir)
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), reference.model.state_dict().items()):
        assert torch.equal(a, b), name
