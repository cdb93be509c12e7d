"""The doubling scan of a Newton step's corrections, in a workspace kept across a chunk's rounds."""

import pytest
import torch

from parapolicy.samplers.affine_scan import AffineScan, carry_corrections


def recurrence(residual, jacobians):
    """d_k = r_k + J_k d_{k-1}, one step at a time."""
    d, out = torch.zeros_like(residual[0]), []
    for r, j in zip(residual, jacobians):
        d = r + (j @ d.unsqueeze(-1)).squeeze(-1)
        out.append(d)
    return torch.stack(out)


@pytest.mark.parametrize("capacity", [1, 2, 3, 5, 64, 100])
def test_a_reused_workspace_scans_every_shorter_chain_exactly(capacity):
    """A chunk's rounds scan ever shorter chains in one workspace: each scan is the recurrence, whatever
    the scans before it left in the buffers (the identities in front must survive them)."""
    g = torch.Generator().manual_seed(capacity)
    scan = AffineScan(capacity, 2, 5, torch.zeros(1))
    for count in sorted({capacity, max(capacity // 2, 1), max(capacity - 3, 1), 1}, reverse=True):
        residual, jacobians = torch.randn(count, 2, 5, generator=g), 0.4 * torch.randn(count, 2, 5, 5, generator=g)
        into_jacobians, into_residuals = scan.slots(count)
        into_jacobians.copy_(jacobians)
        into_residuals.copy_(residual)
        assert torch.allclose(scan.run(count), recurrence(residual, jacobians), atol=1e-5), count


def test_the_one_off_scan_keeps_its_inputs_and_returns_its_own_tensor():
    g = torch.Generator().manual_seed(1)
    residual, jacobians = torch.randn(9, 1, 3, generator=g), 0.5 * torch.randn(9, 1, 3, 3, generator=g)
    kept = residual.clone(), jacobians.clone()
    out = carry_corrections(residual, jacobians)
    assert torch.allclose(out, recurrence(residual, jacobians), atol=1e-5)
    assert torch.equal(residual, kept[0]) and torch.equal(jacobians, kept[1]) and out.is_contiguous()


@pytest.mark.parametrize("count", [0, 8])
def test_a_chain_the_workspace_cannot_hold_is_an_error(count):
    with pytest.raises(ValueError, match=f"a scan of {count} steps in a workspace for 1..7"):
        AffineScan(7, 1, 2, torch.zeros(1)).slots(count)


def test_a_non_finite_scan_leaves_nothing_behind_in_the_workspace():
    """An inf step makes NaN of the bottom rows (0 x inf) in the products; the next scan in the same
    workspace (a chunk's next round) is the recurrence of its own steps all the same."""
    g = torch.Generator().manual_seed(2)
    scan = AffineScan(16, 1, 3, torch.zeros(1))
    for count, poisoned in ((16, True), (11, False)):
        residual, jacobians = torch.randn(count, 1, 3, generator=g), 0.4 * torch.randn(count, 1, 3, 3, generator=g)
        if poisoned:
            residual[2, 0, 1] = float("inf")
        into_jacobians, into_residuals = scan.slots(count)
        into_jacobians.copy_(jacobians)
        into_residuals.copy_(residual)
        out = scan.run(count)
        assert bool(torch.isfinite(out).all()) is not poisoned
    assert torch.allclose(out, recurrence(residual, jacobians), atol=1e-5)
