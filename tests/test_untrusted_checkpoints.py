"""Hostile DiffusionPolicy .ckpt files: no code runs, no environment is read, no DoS.

Each test rebuilds its payload (issue 13) and asserts one clear ``CheckpointError`` (or
``UntrustedCheckpointError``) and the absence of the payload's side effect.
"""

import io
import os
import zipfile

import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, write_checkpoint

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
    with pytest.raises(UntrustedCheckpointError, match=r"is a TorchScript archive: .*found 'code/.*'constants\.pkl'"):
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
    with pytest.raises(UntrustedCheckpointError, match=r"not a plain torch.save archive: .*found 'notes\.txt'"):
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


def _with_policy(good, tmp_path, name="c.ckpt", root=None, **changes):
    """Re-save the good checkpoint with ``changes`` to cfg.policy and extra top-level cfg keys."""
    path, cfg, state = good
    stored = {"training": {"use_ema": True}, **(root or {}), "policy": dict(cfg, **changes)}
    save_dp_workspace(str(tmp_path / name), stored, state)
    return tmp_path / name


def test_a_registered_python_eval_resolver_is_never_used(good, tmp_path):
    from omegaconf import OmegaConf

    marker = tmp_path / "marker"
    payload = f"${{eval:'open(\"{marker}\", \"w\").close()'}}"
    path = _with_policy(good, tmp_path, n_action_steps=payload)
    had = OmegaConf.has_resolver("eval")
    OmegaConf.register_new_resolver("eval", eval, replace=True)  # as upstream's workspaces do on import
    try:
        with pytest.raises(CheckpointError, match=r"\$\{eval:.*is not plain arithmetic"):
            parapolicy.load_policy(path)
    finally:
        if not had:
            OmegaConf.clear_resolver("eval")
    assert not marker.exists()


SECRET = "s3cr3t-Value-4242"


@pytest.mark.parametrize(
    "value, resolver",
    [
        ("${oc.env:PARAPOLICY_TEST_SECRET}", "oc.env"),
        ("${oc.decode:${oc.env:PARAPOLICY_TEST_SECRET}}", "oc.env"),
        ("${oc.decode:'16'}", "oc.decode"),
        ("${hydra:runtime.cwd}", "hydra"),
        ("${my_lab_resolver:PARAPOLICY_TEST_SECRET}", "my_lab_resolver"),
        ("${eval:'${oc.env:PARAPOLICY_TEST_SECRET}'}", "oc.env"),
    ],
)
def test_resolvers_other_than_eval_are_refused_and_no_secret_leaks(good, tmp_path, monkeypatch, capfd, value, resolver):
    from omegaconf import OmegaConf

    monkeypatch.setenv("PARAPOLICY_TEST_SECRET", SECRET)
    called = []
    OmegaConf.register_new_resolver("my_lab_resolver", lambda name: called.append(name) or os.environ[name], replace=True)
    try:
        path = _with_policy(good, tmp_path, noise_scheduler=dict(good[1]["noise_scheduler"], prediction_type=value))
        with pytest.raises(CheckpointError, match=rf"uses the resolver '{resolver}'; an untrusted checkpoint may only") as info:
            parapolicy.load_policy(path)
    finally:
        OmegaConf.clear_resolver("my_lab_resolver")
    out, err = capfd.readouterr()
    assert not called and SECRET not in str(info.value) + out + err


def test_plain_references_relative_and_nested_still_resolve(good, tmp_path):
    path = _with_policy(good, tmp_path, root={"horizon": 16, "steps": {"n": 4}}, horizon="${horizon}",
                        n_action_steps="${eval:'${.n_obs_steps} * ${steps.n}'}")
    policy = parapolicy.load_policy(path)
    assert (policy.spec.horizon, policy.spec.n_action_steps) == (16, 8)


def _chain(prefix, first, fanout=10, levels=8):
    """cfg keys prefix0..prefixN, each level referring to the previous one ``fanout`` times."""
    keys = {f"{prefix}0": first}
    for i in range(1, levels + 1):
        ref = "${" + f"{prefix}{i - 1}" + "}"
        keys[f"{prefix}{i}"] = ref * fanout if isinstance(first, str) else [ref] * fanout
    return keys


@pytest.mark.parametrize(
    "root, changes, message",
    [
        ({}, {"n_action_steps": "${eval:'9**9**9**9'}"}, r"beyond the bounds \(9 \*\* 387420489"),
        ({}, {"n_action_steps": "${eval:'\"ab\" * 10**10'}"}, r"beyond the bounds \(sequence of 2 items"),
        ({}, {"n_action_steps": "${eval:'[0] * 10**9'}"}, r"beyond the bounds \(sequence of 1 items"),
        ({}, {"n_action_steps": "${eval:'\"%0999999999d\" % 1'}"}, "string formatting"),
        ({}, {"n_action_steps": "${eval:'" + "(" * 300 + "1" + ")" * 300 + "'}"}, r"eval:.*(nests|cannot be parsed|not valid)"),
        (_chain("s", "x" * 10), {"label": "${s8}"}, "builds more than 100000 characters"),
        (_chain("l", [0] * 10), {"extra": "${l8}"}, "(expands past|builds more than)"),
        (_chain("d", [0] * 10, fanout=2, levels=20), {"extra": "${d20}"}, "(expands past|builds more than)"),
        ({"a": "${b}", "b": "${a}"}, {"horizon": "${a}"}, "interpolation cycle"),
        ({}, {"extra": ["${eval:'1+1'}"] * 5000}, r"at most 1000 each and 20000 in all"),
        ({}, {"n_action_steps": "${eval:'" + "1+" * 2000 + "1'}"}, r"interpolation of 4011 characters"),
        ({}, {"horizon": 10**6}, r"horizon must be an integer in \[1, 4096\], found 1000000"),
        ({}, {"obs_dim": 10**8}, r"obs_dim must be an integer in \[1, 65536\]"),
        ({}, {"noise_scheduler": {"_target_": "diffusers.DDPMScheduler", "num_train_timesteps": 10**9}},
         r"num_train_timesteps must be an integer in \[1, 10000\]"),
        ({}, {"noise_scheduler": {"_target_": "diffusers.DPMSolverMultistepScheduler", "solver_order": 10**9}},
         r"solver_order must be an integer in \[1, 3\]"),
    ],
)
def test_denial_of_service_cfgs_fail_fast_within_a_memory_cap(good, tmp_path, capped, root, changes, message):
    path = _with_policy(good, tmp_path, root=root, **changes)
    with capped(), pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(path)


def test_network_sizes_are_bounded_before_anything_is_built(good, tmp_path, capped):
    big = dict(good[1]["model"], down_dims=[8192, 16384], global_cond_dim=12)
    path = _with_policy(good, tmp_path, model=big)
    with capped(), pytest.raises(CheckpointError, match=r"weight shapes do not match the cfg"):
        parapolicy.load_policy(path)
    too_big = dict(good[1]["model"], down_dims=[10**6, 10**6])
    path = _with_policy(good, tmp_path, name="d.ckpt", model=too_big)
    with capped(), pytest.raises(CheckpointError, match=r"down_dims\[0\] must be an integer in \[1, 16384\], found 1000000"):
        parapolicy.load_policy(path)


def test_image_shapes_are_bounded(tmp_path, capped):
    cfg = POLICY_CFGS["unet_hybrid_image"]()
    state = write_checkpoint(tmp_path / "img.ckpt", cfg)
    meta = {"obs": {"image": {"shape": [3, 10**5, 10**5], "type": "rgb"}, "agent_pos": {"shape": [2]}},
            "action": {"shape": [2]}}
    save_dp_workspace(str(tmp_path / "big.ckpt"), {"policy": dict(cfg, shape_meta=meta), "training": {"use_ema": True}},
                      state)
    with capped(), pytest.raises(CheckpointError, match=r"shape_meta\.obs\.image\.shape\[1\] must be an integer in \[1, 4096\]"):
        parapolicy.load_policy(tmp_path / "big.ckpt")


def test_shared_node_graph_in_the_pickle_is_bounded(good, tmp_path, capped):
    import pickle

    shared = [0]
    for _ in range(60):  # 2**60 leaves once expanded; a few hundred bytes as pickle memo references
        shared = [shared, shared]
    path, cfg, state = good
    torch.save({"cfg": {"policy": cfg, "training": {"use_ema": True}, "junk": shared}, "state_dicts": state},
               tmp_path / "dag.ckpt", pickle_module=pickle)
    with capped(), pytest.raises(CheckpointError, match="(more than 200000 values|nests deeper than 32)"):
        parapolicy.load_policy(tmp_path / "dag.ckpt")


def _with_weights(good, tmp_path, name="w.ckpt", **replace):
    path, cfg, state = good
    ema = dict(state["ema_model"], **{k.replace("__", "."): v for k, v in replace.items()})
    save_dp_workspace(str(tmp_path / name), {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
    return tmp_path / name


@pytest.mark.parametrize(
    "entry, value, message",
    [
        ("action.scale", torch.tensor([1.0, 0.0]), r"action scale must be non-zero .*found \[1\.0, 0\.0\]"),
        ("action.offset", torch.tensor([0.0, float("inf")]), r"action\.offset must be finite, found \[inf\]"),
        ("obs.input_stats.max", torch.full((6,), float("nan")), r"obs\.input_stats\.max must be finite"),
        ("action.scale", torch.ones(2, 1), r"action\.scale must be 1-D"),
        ("obs.offset", torch.ones(5), r"obs\.offset must have shape \(6,\) like its scale, found \(5,\)"),
        ("action.scale", torch.ones(2, dtype=torch.int64), "action.scale must be a float tensor, found dtype int64"),
        ("action.scale", "1.0", r"action\.scale' must be a tensor, found '1\.0' \(str\)"),
    ],
)
def test_unsafe_normalizers_are_refused_at_load(good, tmp_path, entry, value, message):
    path = _with_weights(good, tmp_path, **{f"normalizer__params_dict__{entry}": value})
    with pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(path)


def test_expanded_tensors_are_refused_without_being_copied(good, tmp_path, capped):
    huge = torch.ones(1).expand(2_000_000_000)  # 8 GB if anything cloned it
    path = _with_weights(good, tmp_path, normalizer__params_dict__obs__input_stats__mean=huge)
    with capped(), pytest.raises(CheckpointError, match=r"input_stats\.mean' is an expanded/overlapping view .*stride \(0,\)"):
        parapolicy.load_policy(path)
    weight = good[2]["ema_model"]["model.final_conv.1.weight"]
    path = _with_weights(good, tmp_path, name="v.ckpt", model__final_conv__1__weight=weight[:1].expand(weight.shape))
    with pytest.raises(CheckpointError, match=r"weight 'model\.final_conv\.1\.weight' is an expanded/overlapping view"):
        parapolicy.load_policy(path)


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8])
def test_non_float_weights_are_refused_not_cast(good, tmp_path, dtype):
    weight = good[2]["ema_model"]["model.final_conv.1.weight"]
    path = _with_weights(good, tmp_path, model__final_conv__1__weight=weight.to(dtype))
    name = str(dtype).replace("torch.", "")
    with pytest.raises(CheckpointError, match=rf"'model\.final_conv\.1\.weight': {name} where the policy has float32"):
        parapolicy.load_policy(path)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"horizon": -16}, r"horizon must be an integer in \[1, 4096\], found -16"),
        ({"n_obs_steps": 0}, r"n_obs_steps must be an integer in \[1, 1024\], found 0"),
        ({"n_action_steps": 1000}, r"n_action_steps must be an integer in \[1, 4096\]|n_action_steps must be in \[1, 15\]"),
        ({"n_action_steps": 16}, r"n_action_steps must be in \[1, 15\] \(horizon 16 minus the slice start 1\), found 16"),
        ({"horizon": "16"}, r"horizon must be an integer in \[1, 4096\], found '16' \(str\)"),
        ({"horizon": 15.5}, r"horizon must be an integer .*found 15\.5 \(float\)"),
        ({"obs_as_global_cond": "yes"}, r"obs_as_global_cond must be true or false, found 'yes' \(str\)"),
        ({"model": [1, 2]}, r"cfg\.policy\.model must be a mapping, found \[1, 2\] \(list\)"),
        ({"horizon": None}, r"horizon must be an integer .*found None"),
        ({"num_inference_steps": 101}, r"num_inference_steps must be in \[1, 100\] \(num_train_timesteps=100, at most 1000\), found 101"),
        ({"horizon": 15}, r"samples 15 steps, which must be a multiple of 2"),
        ({"noise_scheduler": {"_target_": "diffusers.DDPMScheduler", "beta_schedule": "cosine"}},
         r"beta_schedule must be one of \['linear', 'scaled_linear', 'squaredcos_cap_v2'\], found 'cosine'"),
        ({"noise_scheduler": {"_target_": "diffusers.DDPMScheduler", "no_such_setting": 1}},
         "cannot build DDPMScheduler from the checkpoint's settings"),
    ],
)
def test_nonsense_cfg_values_are_one_clear_error(good, tmp_path, changes, message):
    path = _with_policy(good, tmp_path, **changes)
    with pytest.raises(CheckpointError, match=message) as info:
        parapolicy.load_policy(path)
    assert "\n" not in str(info.value)


def _zip_with_pickle(tmp_path, data_pkl: bytes):
    """A torch.save zip whose data.pkl is replaced by hand-written pickle opcodes."""
    torch.save({"cfg": {}, "state_dicts": {}}, tmp_path / "base.ckpt")
    with zipfile.ZipFile(tmp_path / "base.ckpt") as zin, zipfile.ZipFile(tmp_path / "p.ckpt", "w") as zout:
        for info in zin.infolist():
            data = data_pkl if info.filename.endswith("/data.pkl") else zin.read(info.filename)
            zout.writestr(info.filename, data)
    return tmp_path / "p.ckpt"


_TEN_GB = b"\x8a\x05" + (10**10).to_bytes(5, "little")  # LONG1 10**10


@pytest.mark.parametrize(
    "data_pkl, message",
    [
        (b"\x80\x02cdill._dill\n_load_type\nX\x09\x00\x00\x00bytearray\x85R" + _TEN_GB + b"\x85R.",
         "asks dill for type 'bytearray', which is not a plain data type"),
        (b"\x80\x02cbuiltins\nbytearray\n" + _TEN_GB + b"\x85R.", r"asks for bytearray\(int\)"),
        (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x40\x42\x0f\x00J\x40\x42\x0f\x00\x86C\x01b\x87R.",
         r"numpy array built as object of shape \(1000000, 1000000\)"),
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.", r"_codecs\.encode with str and codec 'zlib'"),
    ],
)
def test_allowed_pickle_callables_cannot_allocate_from_a_size(tmp_path, capped, data_pkl, message):
    path = _zip_with_pickle(tmp_path, data_pkl)
    with capped(), pytest.raises(UntrustedCheckpointError, match=message):
        parapolicy.load_policy(path)
