"""Hostile DiffusionPolicy .ckpt files: no code runs, no environment is read, no DoS.

Each test rebuilds its payload (issue 13) and asserts one clear ``CheckpointError`` (or
``UntrustedCheckpointError``) and the absence of the payload's side effect.
"""

import io
import os
import zipfile

import pytest
import torch
from dp_fixtures import POLICY_CFGS, write_checkpoint

import parapolicy
from parapolicy.checkpoints.dp_workspace import save_dp_workspace
from parapolicy.errors import CheckpointError, UntrustedCheckpointError


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "lowdim.ckpt"
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    return path, cfg, write_checkpoint(path, cfg)


def _torchscript_archive(path, marker):
    """A scripted module whose TorchScript __setstate__ creates ``marker`` when loaded."""
    source = f"""
import torch
class Payload(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.x = torch.zeros(1)
    @torch.jit.export
    def __getstate__(self):
        return (self.x, self.training)
    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]):
        touched = torch.from_file({str(marker)!r}, shared=True, size=4)
        self.x = state[0] + touched[:1] * 0
        self.training = state[1]
    def forward(self, x):
        return x + self.x
"""
    namespace = {}
    module_path = path.with_suffix(".py")  # TorchScript needs the class's source on disk
    module_path.write_text(source)
    exec(compile(source, str(module_path), "exec"), namespace)
    with pytest.warns(FutureWarning):
        scripted = torch.jit.script(namespace["Payload"]())
        torch.jit.save(scripted, str(path))


def test_torchscript_archive_is_refused_before_it_runs(tmp_path):
    archive, marker = tmp_path / "ts.ckpt", tmp_path / "marker"
    _torchscript_archive(archive, marker)
    with pytest.raises(UntrustedCheckpointError, match=r"is a TorchScript archive: .*found code/.*constants\.pkl"):
        parapolicy.load_policy(archive)
    assert not marker.exists()


def _rewrite_zip(src, dst, extra=None, compress=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename), compress_type=compress or zipfile.ZIP_STORED)
        prefix = zin.infolist()[0].filename.split("/")[0]
        for name, data in (extra or {}).items():
            zout.writestr(f"{prefix}/{name}", data)


def test_extra_zip_members_are_refused(good, tmp_path):
    _rewrite_zip(good[0], tmp_path / "x.ckpt", extra={"notes.txt": "hi"})
    with pytest.raises(UntrustedCheckpointError, match=r"not a plain torch.save archive: .*found notes\.txt"):
        parapolicy.load_policy(tmp_path / "x.ckpt")


def test_compressed_zip_members_are_refused(good, tmp_path):
    _rewrite_zip(good[0], tmp_path / "z.ckpt", compress=zipfile.ZIP_DEFLATED)
    with pytest.raises(UntrustedCheckpointError, match=r"compressed zip entries .*data\.pkl"):
        parapolicy.load_policy(tmp_path / "z.ckpt")


def test_rewritten_plain_zip_still_loads(good, tmp_path):
    _rewrite_zip(good[0], tmp_path / "ok.ckpt")
    assert parapolicy.load_policy(tmp_path / "ok.ckpt").spec.horizon == 16


def test_file_with_a_zip_appended_to_another_format_is_refused(good, tmp_path):
    legacy = io.BytesIO()
    torch.save({"cfg": {}, "state_dicts": {}}, legacy, _use_new_zipfile_serialization=False)
    (tmp_path / "l.ckpt").write_bytes(legacy.getvalue() + good[0].read_bytes())
    with pytest.raises(UntrustedCheckpointError, match="does not start with a zip header"):
        parapolicy.load_policy(tmp_path / "l.ckpt")
