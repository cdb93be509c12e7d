"""Hub ids resolve through huggingface_hub's cache; offline, an uncached id is one clear error.

The cache is built by hand in the layout huggingface_hub reads (``models--owner--name/refs``
and ``snapshots/<commit>``), so nothing is downloaded.
"""

import os
import shutil

import huggingface_hub.constants  # noqa: F401 - read its environment now, before the fixtures change it
import pytest
from lerobot_eras import HUB_2024_KEYPOINTS, small, write_dir

import parapolicy
from parapolicy.checkpoints.hub import looks_like_hub_id
from parapolicy.errors import CheckpointError

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    snapshot = cache / "models--lerobot--diffusion_pusht" / "snapshots" / COMMIT
    write_dir(snapshot, small(HUB_2024_KEYPOINTS), "buffers")
    (cache / "models--lerobot--diffusion_pusht" / "refs").mkdir()
    (cache / "models--lerobot--diffusion_pusht" / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return snapshot


def test_cached_hub_id_loads_offline(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    policy = parapolicy.load_policy("lerobot/diffusion_pusht")
    assert policy.spec.source["path"] == str(offline_cache)
    assert policy.spec.source["era"] == "hub-2024"


def test_uncached_hub_id_offline_is_one_clear_error(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"hub id 'lerobot/diffusion_other': expected a cached snapshot in "
                                              r".*hf_cache \(HF_HUB_OFFLINE is set\), found none"):
        parapolicy.load_policy("lerobot/diffusion_other")


def test_local_paths_are_never_taken_for_hub_ids(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_hub_id("lerobot/diffusion_pusht") and looks_like_hub_id("lerobot/diffusion_pusht@v1.0")
    for path in ("./lerobot/diffusion_pusht", "/abs/dir", "outputs/epoch=10.ckpt", "a/b/c", "~/x"):
        assert not looks_like_hub_id(path), path
    shutil.copytree(offline_cache, tmp_path / "lerobot" / "diffusion_pusht")
    assert not looks_like_hub_id("lerobot/diffusion_pusht")  # an existing folder wins
    assert parapolicy.load_policy("lerobot/diffusion_pusht").spec.source["path"] == os.path.abspath(
        "lerobot/diffusion_pusht")
