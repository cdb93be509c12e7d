"""Names that come from a file reach messages escaped: a terminal escape is shown, never sent.

Weight names, safetensors tensor names, zip record names and cfg keys are quoted with
``repr`` where a message lists them; and every ParapolicyError escapes the control and
format characters left in its message (e.g. a library's own error quoting a key).
"""

import os
import zipfile

import pytest
from tests.support.dp_fixtures import POLICY_CFGS, write_checkpoint
from tests.support.lerobot_eras import STATE_ONLY_0_5, write_dir
from safetensors.torch import load_file, save_file

import parapolicy
from parapolicy.checkpoints.dp_workspace import save_dp_workspace
from parapolicy.errors import CheckpointError, ParapolicyError, UntrustedCheckpointError

ESCAPE = "\x1b]0;pwned\x07\x1b[2J"  # set the terminal title, clear the screen
SHOWN = r"\x1b]0;pwned\x07\x1b[2J"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("names") / "lowdim.ckpt"
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    return path, cfg, write_checkpoint(path, cfg)


def _no_controls(message: str) -> bool:
    return message.isprintable()


def test_a_weight_name_with_escapes_is_quoted(good, tmp_path):
    _, cfg, state = good
    ema = dict(state["ema_model"], **{"model." + ESCAPE: state["ema_model"]["model.final_conv.1.bias"]})
    save_dp_workspace(str(tmp_path / "w.ckpt"), {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
    with pytest.raises(CheckpointError) as info:
        parapolicy.load_policy(tmp_path / "w.ckpt")
    assert f"unexpected weights 'model.{SHOWN}'" in str(info.value) and _no_controls(str(info.value))


def test_a_safetensors_tensor_name_with_escapes_is_quoted(tmp_path):
    folder = write_dir(tmp_path / "d", STATE_ONLY_0_5, "processor")
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    tensors["diffusion." + ESCAPE] = tensors["diffusion.unet.final_conv.1.bias"].clone()
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        parapolicy.load_policy(folder)
    assert f"unexpected weights 'diffusion.{SHOWN}'" in str(info.value) and _no_controls(str(info.value))


def test_a_zip_record_name_with_escapes_is_quoted(good, tmp_path):
    with zipfile.ZipFile(good[0]) as zin, zipfile.ZipFile(tmp_path / "z.ckpt", "w") as zout:
        for item in zin.infolist():
            zout.writestr(item.filename, zin.read(item.filename))
        zout.writestr(zin.infolist()[0].filename.split("/")[0] + "/notes" + ESCAPE, "hi")
    with pytest.raises(UntrustedCheckpointError) as info:
        parapolicy.load_policy(tmp_path / "z.ckpt")
    assert f"found 'notes{SHOWN}'" in str(info.value) and _no_controls(str(info.value))


def test_a_cfg_key_with_escapes_is_escaped_even_inside_a_library_message(good, tmp_path):
    _, cfg, state = good
    scheduler = dict(cfg["noise_scheduler"], **{ESCAPE: 1})  # diffusers' own TypeError quotes the key
    save_dp_workspace(str(tmp_path / "k.ckpt"), {"policy": dict(cfg, noise_scheduler=scheduler),
                                                 "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError, match="cannot build DDPMScheduler") as info:
        parapolicy.load_policy(tmp_path / "k.ckpt")
    assert SHOWN in str(info.value) and _no_controls(str(info.value))


def test_a_cfg_path_names_odd_keys_by_their_repr(good, tmp_path):
    _, cfg, state = good
    scheduler = dict(cfg["noise_scheduler"], **{ESCAPE: float("nan")})
    save_dp_workspace(str(tmp_path / "n.ckpt"), {"policy": dict(cfg, noise_scheduler=scheduler),
                                                 "training": {"use_ema": True}}, state)
    with pytest.raises(CheckpointError) as info:
        parapolicy.load_policy(tmp_path / "n.ckpt")
    assert f"cfg.policy.noise_scheduler['{SHOWN}'] must be finite" in str(info.value)


@pytest.mark.parametrize("text", ["\x1b[31m", "a\rb", "bidi \u202e override", "line\nbreak", "\x9b2J"])
def test_every_parapolicy_error_escapes_control_characters(text):
    message = str(ParapolicyError(f"found {text}"))
    assert _no_controls(message) and message == f"found {repr(text)[1:-1]}"
    assert str(ParapolicyError("plain text, é and 中 stay as they are")) == "plain text, é and 中 stay as they are"
