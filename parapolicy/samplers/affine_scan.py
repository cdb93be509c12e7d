"""The chain of corrections d_k = r_k + J_k d_{k-1} (d_{-1} = 0) of a Newton step, as a doubling scan.

Step k is the affine map d -> J_k d + r_k, kept as one (D+1) x (D+1) matrix [[J_k, r_k], [0, 1]]
(products of such matrices keep that form). After the pass with offset s entry k is the
composition of steps k-2s+1..k, and its last column is d_k: log2 K batched matrix products
instead of K dependent steps. On a GPU each op is a kernel launch whatever its size, so the scan
runs in a workspace made once per chunk: two buffers whose leading entries are identity
matrices, so that a pass is ONE product written into the other buffer (entries with fewer than
s predecessors compose with an identity, exactly), and whose step slots the caller fills in
place (``slots``), where a fresh scan would gather, pad and concatenate. A caller whose gradient
runs through the scan composes it in new tensors instead (``carry_out_of_place``): autograd does
not record writes into a buffer.
"""

from __future__ import annotations

import torch


class AffineScan:
    """A workspace for scans of up to ``capacity`` steps of ``batch`` states of ``size`` numbers."""

    def __init__(self, capacity: int, batch: int, size: int, like: torch.Tensor):
        self.capacity, self.size = capacity, size
        self.lead = 1 << max(capacity - 1, 1).bit_length() - 1  # the largest offset a pass uses
        work = like.new_zeros((2, self.lead + capacity, batch, size + 1, size + 1))
        work[..., size, size] = 1.0  # every entry's bottom row is (0 ... 0, 1)
        work[:, : self.lead, :, :size, :size].diagonal(dim1=-2, dim2=-1).fill_(1.0)  # the identities
        self.work, self.bottom = work, work[0, 0, 0, size].clone()  # (0 ... 0, 1)

    def slots(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views to write steps 0..count-1 into: their Jacobians (count, B, D, D) and residuals
        (count, B, D). Their bottom rows are set again: a scan of non-finite steps leaves NaN there
        (0 x inf), which would reach every later scan in the workspace."""
        if not 0 < count <= self.capacity:
            raise ValueError(f"a scan of {count} steps in a workspace for 1..{self.capacity}")
        steps = self.work[0, self.lead : self.lead + count]
        steps[..., self.size, :] = self.bottom
        return steps[..., : self.size, : self.size], steps[..., : self.size, self.size]

    def run(self, count: int) -> torch.Tensor:
        """The corrections d_k (count, B, D) of the steps written into ``slots(count)``: a view
        of the workspace, valid until its next use."""
        lead, source, target = self.lead, self.work[0], self.work[1]
        square = source.shape[-1]
        offset = 1
        while offset < count:
            later = source[lead : lead + count].view(-1, square, square)
            earlier = source[lead - offset : lead - offset + count].view(-1, square, square)
            torch.bmm(later, earlier, out=target[lead : lead + count].view(-1, square, square))
            source, target = target, source
            offset *= 2
        return source[lead : lead + count, :, : self.size, self.size]


def tracked(*tensors: torch.Tensor) -> bool:
    """Whether autograd records through ``tensors``: a workspace written in place (``out=``) cannot
    carry a gradient, so such a scan is composed out of place (``carry_out_of_place``)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def carry_out_of_place(residual: torch.Tensor, jacobians: torch.Tensor) -> torch.Tensor:
    """``carry_corrections`` in new tensors each pass, for a caller that differentiates through it."""
    count, size = residual.shape[0], residual.shape[-1]
    steps = torch.nn.functional.pad(torch.cat([jacobians, residual.unsqueeze(-1)], -1), (0, 0, 0, 1))
    steps = steps + torch.nn.functional.pad(torch.ones_like(steps[..., :1, :1]), (size, 0, size, 0))
    offset = 1
    while offset < count:
        steps = torch.cat([steps[:offset], steps[offset:] @ steps[:-offset]])
        offset *= 2
    return steps[..., :size, size]


def carry_corrections(residual: torch.Tensor, jacobians: torch.Tensor) -> torch.Tensor:
    """d_k = r_k + J_k d_{k-1} for ``residual`` (K, B, D) and ``jacobians`` (K, B, D, D), in a
    workspace of its own (a caller that scans every round keeps one ``AffineScan``)."""
    if tracked(residual, jacobians):
        return carry_out_of_place(residual, jacobians)
    count, batch, size = residual.shape
    scan = AffineScan(count, batch, size, residual)
    into_jacobians, into_residuals = scan.slots(count)
    into_jacobians.copy_(jacobians)
    into_residuals.copy_(residual)
    return scan.run(count).clone()
