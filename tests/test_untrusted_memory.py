"""Memory and time a hostile checkpoint or setting can ask for are bounded by what the file stores.

Each payload is refused with one ParapolicyError within the ``capped`` fixture's memory cap
and time budget: parameters that carry their own ``stride``/``element_size``, weights that
all share one stored tensor, schedules with too many steps, nested ``${eval:...}`` lists,
and sampler settings whose grid or round budget is out of bounds.
"""

import dill
import pytest
import torch
from tests.support.dp_fixtures import POLICY_CFGS, random_weights, write_checkpoint

import parapolicy
from parapolicy.checkpoints.dp_workspace import save_dp_workspace
from parapolicy.checkpoints.limits import MAX_BYTES_PER_STORED_BYTE
from parapolicy.tensor_safety import check_tensor_safe
from parapolicy.errors import CheckpointError, SamplerConfigError, UntrustedCheckpointError
from parapolicy.samplers import PIADM, JacobianNewton, Picard, RandomizedMidpoint


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("mem") / "lowdim.ckpt"
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    return path, cfg, write_checkpoint(path, cfg)


def _save(tmp_path, cfg, ema, name="m.ckpt"):
    save_dp_workspace(str(tmp_path / name), {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
    return tmp_path / name


def test_a_parameter_with_attributes_of_its_own_is_refused(good, tmp_path, capped):
    """torch restores any attribute of a pickled Parameter; a fake stride/element_size hid an expanded view."""
    _, cfg, state = good
    key = "model.final_conv.1.weight"
    weight = state["ema_model"][key]
    disguised = torch.nn.Parameter(weight.flatten()[:1].expand(weight.shape), requires_grad=False)
    disguised.element_size, disguised.stride = int, tuple  # int() == 0 bytes, tuple() == no strides
    path = tmp_path / "param.ckpt"
    ema = dict(state["ema_model"], **{key: disguised})
    torch.save({"cfg": {"policy": cfg, "training": {"use_ema": True}}, "state_dicts": {"ema_model": ema}}, path,
               pickle_module=dill)
    with capped(), pytest.raises(UntrustedCheckpointError, match="a parameter with attributes of its own"):
        parapolicy.load_policy(path)


def test_a_plain_parameter_still_loads(good, tmp_path):
    _, cfg, state = good
    key = "model.final_conv.1.weight"
    param = torch.nn.Parameter(state["ema_model"][key].clone(), requires_grad=False)
    ema = dict(state["ema_model"], **{key: param})
    torch.save({"cfg": {"policy": cfg, "training": {"use_ema": True}}, "state_dicts": {"ema_model": ema}},
               tmp_path / "p.ckpt", pickle_module=dill)
    policy = parapolicy.load_policy(tmp_path / "p.ckpt")
    assert torch.equal(policy.model.state_dict()["final_conv.1.weight"], state["ema_model"][key])


def test_tensor_safety_reads_torch_not_instance_attributes():
    view = torch.ones(1).expand(1000)
    view.stride, view.element_size = tuple, int  # what a pickle could attach to the instance
    with pytest.raises(CheckpointError, match=r"w is an expanded/overlapping view \(shape \(1000,\), stride \(0,\)\)"):
        check_tensor_safe("w", view)
    overlapping = torch.arange(12.0).as_strided((3, 4), (1, 1))  # rows overlap; fits in the storage
    with pytest.raises(CheckpointError, match="expanded/overlapping view"):
        check_tensor_safe("w", overlapping)

    class Sub(torch.Tensor):
        pass

    with pytest.raises(CheckpointError, match=r"w must be a tensor, found .*\(Sub\)"):
        check_tensor_safe("w", torch.zeros(2).as_subclass(Sub))
    transposed = torch.arange(12.0).reshape(3, 4).t()  # a permuted view of a real tensor is fine
    assert check_tensor_safe("w", transposed) is transposed


def test_weights_sharing_one_stored_tensor_are_refused(good, tmp_path, capped):
    """Every weight a view of one stored tensor: the file holds one, the network would need them all."""
    _, cfg, state = good
    weights = state["ema_model"]
    shared = torch.randn(max(v.numel() for v in weights.values()))
    ema = {k: shared[: v.numel()].view(v.shape) if k.startswith("model.") else v for k, v in weights.items()}
    path = _save(tmp_path, cfg, ema)
    with capped(), pytest.raises(CheckpointError, match=r"needs \d+ bytes of weights but the file stores \d+ tensor "
                                                         rf"bytes; expected at most {MAX_BYTES_PER_STORED_BYTE}x"):
        parapolicy.load_policy(path)


def test_float16_weights_widen_within_the_stated_multiple(tmp_path):
    cfg = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    half = {k: v.half() if k.startswith("model.") else v for k, v in random_weights(cfg, seed=3).items()}
    policy = parapolicy.load_policy(_save(tmp_path, cfg, half))
    assert policy.model.state_dict()["final_conv.1.weight"].dtype == torch.float32


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_inference_steps": None, "noise_scheduler": {"num_train_timesteps": 100_000}},
         r"num_train_timesteps must be an integer in \[1, 10000\], found 100000"),
        ({"num_inference_steps": None, "noise_scheduler": {"num_train_timesteps": 10_000}},
         r"num_inference_steps must be in \[1, 1000\] \(num_train_timesteps=10000, at most 1000\), found 10000"),
        ({"num_inference_steps": 5000, "noise_scheduler": {"num_train_timesteps": 10_000}},
         r"num_inference_steps must be an integer in \[1, 1000\], found 5000"),
    ],
)
def test_schedules_with_too_many_steps_are_refused_quickly(good, tmp_path, capped, changes, message):
    _, cfg, state = good
    scheduler = dict(cfg["noise_scheduler"], **changes.pop("noise_scheduler"))
    path = _save(tmp_path, dict(cfg, noise_scheduler=scheduler, **changes), state["ema_model"])
    with capped(), pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(path)


@pytest.mark.parametrize(
    "expression, message",
    [
        ("[[1] * 10000] * 10000", r"builds a list of 10001 items, nested lists' items included; at most 10000"),
        ("[[[0] * 22] * 22] * 22", r"sequence of 507 items \* 22"),
        ("[[0] * 5000] + [[0] * 5000]", "builds a list of 5001 items|concatenation"),
        ("[[0] * 9999] * 2 == [[0] * 9999] * 2", r"sequence of 10000 items \* 2"),
    ],
)
def test_nested_eval_lists_are_bounded_at_every_level(good, tmp_path, capped, expression, message):
    _, cfg, state = good
    path = _save(tmp_path, dict(cfg, label="${eval:'" + expression + "'}"), state["ema_model"])
    with capped(), pytest.raises(CheckpointError, match=message):
        parapolicy.load_policy(path)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PIADM(blocks=10**7), r"piadm blocks must be at most 1000, got 10000000"),
        (lambda: RandomizedMidpoint(blocks=10**7), r"randomized_midpoint blocks must be at most 1000"),
        (lambda: PIADM(blocks=100, points=100), r"piadm blocks x points must be at most 1000 grid steps, got 100 x 100"),
        (lambda: RandomizedMidpoint(blocks=1, points=999, iterations=999),
         r"randomized_midpoint blocks=1, points=999 with these iterations run 999000 network rows per sample; "
         r"at most 10000"),
        (lambda: PIADM(iterations=10**9), r"piadm iterations must be at most 1000"),
        (lambda: Picard(window=10**9), r"picard window must be at most 1000"),
        (lambda: Picard(rounds_per_sync=10**6), r"picard rounds_per_sync must be at most 1000"),
        (lambda: JacobianNewton(refresh=10**6), r"jacobian_newton refresh must be at most 1000"),
    ],
)
def test_sampler_budgets_are_bounded(make, message):
    with pytest.raises(SamplerConfigError, match=message):
        make()


def test_sampler_budgets_within_bounds_are_accepted():
    assert PIADM(blocks=10, points=100, iterations=10).steps == 1000
    assert RandomizedMidpoint(blocks=1, points=99, iterations=100).steps == 99
