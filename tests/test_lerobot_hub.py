"""Hub ids resolve through huggingface_hub's cache; offline, an uncached id is one clear error.

The cache is built by hand in the layout huggingface_hub reads (``models--owner--name/refs``
and ``snapshots/<commit>``), so nothing is downloaded.
"""

import os
import shutil

import huggingface_hub.constants  # noqa: F401 - read its environment now, before the fixtures change it
import pytest
from tests.support.lerobot_eras import HUB_2024_KEYPOINTS, small, write_dir

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


def test_a_relative_path_whose_first_folder_exists_is_never_a_hub_id(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    with pytest.raises(CheckpointError, match=r"no checkpoint file at 'outputs/pretrained_model' \(read as a local path: "
                                              r"its first part 'outputs' is a local directory; a hub id is "
                                              r"owner/name\[@revision\]"):
        parapolicy.load_policy("outputs/pretrained_model")
    for path, reason in [("./lerobot/diffusion_pusht", "it starts with '.'"), ("~/x/y", "it starts with '~'"),
                         ("a/b/c", "it has more than one '/'"), ("lerobot/diffusion_pusht@x/../../../etc", "a hub id has no '..'")]:
        with pytest.raises(CheckpointError, match=rf"read as a local path: {reason}"):
            parapolicy.load_policy(path)


def test_a_revision_cannot_leave_the_cache(offline_cache, tmp_path, monkeypatch):
    """huggingface_hub reads refs/<revision>: '../' in a revision read a file outside the cache,
    and loaded whatever folder that file named."""
    monkeypatch.chdir(tmp_path)
    elsewhere = shutil.copytree(offline_cache, tmp_path / "elsewhere")
    (tmp_path / "ref").write_text(os.path.relpath(elsewhere, offline_cache.parent))
    escape = os.path.relpath(tmp_path / "ref", offline_cache.parent.parent / "refs")  # ../../../ref
    assert not looks_like_hub_id(f"lerobot/diffusion_pusht@{escape}")
    with pytest.raises(CheckpointError, match="read as a local path: a hub id has no '..'"):
        parapolicy.load_policy(f"lerobot/diffusion_pusht@{escape}")


def test_a_ref_naming_a_folder_outside_the_snapshots_is_refused(offline_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    elsewhere = shutil.copytree(offline_cache, tmp_path / "elsewhere")
    refs = offline_cache.parent.parent / "refs"
    (refs / "main").write_text(os.path.relpath(elsewhere, offline_cache.parent))
    with pytest.raises(CheckpointError, match=r"hub id 'lerobot/diffusion_pusht': its cached snapshot resolves to "
                                              r".*elsewhere', expected a folder in .*snapshots'"):
        parapolicy.load_policy("lerobot/diffusion_pusht")


@pytest.fixture
def blob_cache(offline_cache):
    """The snapshot as huggingface_hub lays it out: symlinks into blobs/, big files named by their sha256."""
    import hashlib

    blobs = offline_cache.parent.parent / "blobs"
    blobs.mkdir()
    for name in os.listdir(offline_cache):
        data = (offline_cache / name).read_bytes()
        blob = blobs / (hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else
                        hashlib.sha1(data).hexdigest())  # git blobs: another hash, not checked
        blob.write_bytes(data)
        os.unlink(offline_cache / name)
        os.symlink(os.path.relpath(blob, offline_cache), offline_cache / name)
    return offline_cache


def test_a_cached_blob_must_hash_to_its_name(blob_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parapolicy.load_policy("lerobot/diffusion_pusht").spec.source["era"] == "hub-2024"
    blob = os.path.realpath(blob_cache / "model.safetensors")
    data = bytearray(open(blob, "rb").read())
    data[-1] ^= 1  # one bit of one weight
    with open(blob, "wb") as f:
        f.write(data)
    with pytest.raises(CheckpointError, match=r"'model.safetensors': the Hub cache names its blob by sha256 "
                                              r"[0-9a-f]{12}\.\.\., but its contents hash to"):
        parapolicy.load_policy("lerobot/diffusion_pusht")


def test_a_snapshot_link_may_lead_into_blobs_but_nowhere_else(blob_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "config.json"
    outside.write_bytes((blob_cache / "config.json").read_bytes())
    os.unlink(blob_cache / "config.json")
    os.symlink(outside, blob_cache / "config.json")
    with pytest.raises(CheckpointError, match=r"is a symlink to .*config.json', outside the checkpoint directory or "
                                              r"the Hub cache's blobs"):
        parapolicy.load_policy("lerobot/diffusion_pusht")
