"""A damaged checkpoint never loads as silently different weights.

torch's zip reader checks no CRC-32, so a flipped byte in a tensor record (or in the zip
directory's attributes) used to load as other weights. Now every record is checked first,
and a seeded fuzz of the shipped toy checkpoint asserts each mutation either loads
bit-identical weights or raises one ParapolicyError: no silent change, no other exception.
"""

import io
import random
import struct
import zipfile

import pytest
import torch

import parapolicy
from parapolicy.errors import CheckpointError, ParapolicyError
from parapolicy.eval.build import ASSETS_DIR

SHIPPED = f"{ASSETS_DIR}/toy_reach_unet.ckpt"


def _weights(policy) -> dict:
    out = {}
    for prefix, module in (("model.", policy.model), ("encoder.", policy.obs_encoder), ("normalizer.", policy.normalizer)):
        if module is not None:
            out.update({prefix + k: v for k, v in module.state_dict().items()})
    return out


@pytest.fixture(scope="module")
def shipped():
    data = open(SHIPPED, "rb").read()
    return data, _weights(parapolicy.load_policy(SHIPPED))


def _record(data: bytes, suffix: str) -> zipfile.ZipInfo:
    return next(i for i in zipfile.ZipFile(io.BytesIO(data)).infolist() if i.filename.endswith(suffix))


def test_a_flipped_byte_in_a_tensor_record_is_refused(shipped, tmp_path):
    data, _ = shipped
    info = max(zipfile.ZipFile(io.BytesIO(data)).infolist(), key=lambda i: i.file_size if "/data/" in i.filename else 0)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    damaged = bytearray(data)
    damaged[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0x40
    (tmp_path / "d.ckpt").write_bytes(damaged)
    with pytest.raises(CheckpointError, match=rf"is damaged: zip record '{info.filename}' does not match what the "
                                              r"archive records \(Bad CRC-32"):
        parapolicy.load_policy(tmp_path / "d.ckpt")
    with pytest.raises(CheckpointError, match="Bad CRC-32"):  # trusting a file is no reason to read damage
        parapolicy.load_policy(tmp_path / "d.ckpt", trust_checkpoint=True)


def test_a_record_marked_as_a_directory_is_refused(shipped, tmp_path):
    """torch reads a record whose DOS attributes say 'directory' as uninitialised memory."""
    data, _ = shipped
    damaged = bytearray(data)
    damaged[zipfile.ZipFile(io.BytesIO(data)).start_dir + 38] |= 0x10  # data.pkl's external attributes
    (tmp_path / "d.ckpt").write_bytes(damaged)
    with pytest.raises(CheckpointError, match="a directory or encrypted entry"):
        parapolicy.load_policy(tmp_path / "d.ckpt")


def _mutate(data: bytes, rng: random.Random) -> bytes:
    """One random change, aimed as often at the zip's structure as at its contents."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    out = bytearray(data)
    kind = rng.choice(["anywhere", "directory", "local header", "pickle", "truncate"])
    if kind == "truncate":
        return bytes(out[: rng.randrange(len(out))])
    if kind == "anywhere":
        pos = rng.randrange(len(out))
    elif kind == "directory":
        pos = rng.randrange(archive.start_dir, len(out))
    elif kind == "local header":
        info = rng.choice(archive.infolist())
        pos = info.header_offset + rng.randrange(30 + len(info.filename) + len(info.extra))
    else:
        pos = rng.randrange(_record(data, "data.pkl").file_size)
    out[pos] = (out[pos] + rng.randrange(1, 256)) % 256
    return bytes(out)


@pytest.mark.timeout(180)
def test_mutated_checkpoints_load_identically_or_raise_one_error(shipped, tmp_path):
    data, reference = shipped
    rng = random.Random(25)
    outcomes = {"identical": 0, "refused": 0}
    for case in range(300):
        path = tmp_path / "m.ckpt"
        path.write_bytes(_mutate(data, rng))
        try:
            policy = parapolicy.load_policy(path)
        except ParapolicyError as exc:
            assert "\n" not in str(exc), case
            outcomes["refused"] += 1
            continue
        weights = _weights(policy)
        assert weights.keys() == reference.keys(), case
        changed = [k for k in weights if not torch.equal(weights[k], reference[k])]
        assert not changed, f"mutation {case} loaded silently different weights: {changed[:3]}"
        outcomes["identical"] += 1
    assert outcomes["refused"] > 200 and outcomes["identical"] > 0, outcomes  # the fuzz reaches both outcomes
