"""Acceleration modes: the padding that lets one CUDA graph serve many row counts, and clear errors."""

import pytest
import torch

import parapolicy
from parapolicy.acceleration import _PaddedCall, make_denoiser, padded_rows
from parapolicy.errors import AccelerationError
from parapolicy.eval.build import ASSETS_DIR


class EagerPadded(_PaddedCall):
    """The padding and buffer reuse of GraphedDenoiser, run eagerly so the CPU can check it."""

    def _build(self, buffers):
        return {"buffers": buffers}

    def _run(self, entry):
        return self._forward(entry["buffers"])


def test_rows_pad_to_the_next_power_of_two():
    assert [padded_rows(r) for r in (1, 2, 3, 4, 5, 100, 128, 129)] == [1, 2, 4, 4, 8, 128, 128, 256]


def test_padded_calls_with_stale_rows_give_the_unpadded_answer():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    padded = EagerPadded(policy.model)
    g = torch.Generator().manual_seed(0)
    for rows in (7, 3, 8, 1, 5):  # shrinking after growing leaves stale rows in the buffers
        x = torch.randn(rows, 16, 2, generator=g)
        t = torch.randint(0, 100, (rows,), generator=g)
        cond = torch.randn(rows, 8, generator=g)  # toy policy: 2 obs steps x 4 dims
        want = policy.model(x, t, global_cond=cond)
        got = padded(x, t, global_cond=cond)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert got.data_ptr() != padded._entries[next(iter(padded._entries))]["buffers"]["x"].data_ptr()
    assert padded.shapes_built == 3  # sizes 8, 4, 1 (rows 7/8/5 -> 8, 3 -> 4, 1 -> 1)


def test_graph_modes_need_cuda_and_unknown_modes_name_the_choices():
    policy = parapolicy.load_policy(f"{ASSETS_DIR}/toy_reach_unet.ckpt")
    with pytest.raises(AccelerationError, match="needs the policy on a CUDA device.*device='cuda'"):
        policy.accelerate("cuda_graph")
    with pytest.raises(AccelerationError, match="unknown acceleration 'tensorrt'; choose one of eager, cuda_graph, compile"):
        make_denoiser(policy.model, "tensorrt", "cpu")
    assert policy.acceleration == "eager"
    keys = set(policy.state_dict())
    policy.accelerate("eager")
    assert set(policy.state_dict()) == keys  # an accelerated network is not a second submodule
