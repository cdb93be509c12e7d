"""parapolicy.bench.kernels: the op count behind benchmarks/kernels.md's modelled GPU chunk."""

import json
import os
import subprocess
import sys

import pytest
import torch

from parapolicy.bench.kernels import OpCounter, count_chunk, transfers_counted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_counter_counts_the_devices_ops_not_views_or_index_bookkeeping():
    counter = OpCounter()
    x, index = torch.ones(4), torch.arange(3)
    with counter:
        x + 1  # not counting yet
        counter.counting = True
        y = x.view(2, 2).transpose(0, 1)  # views: no kernel
        z = y * 2 + x.view(2, 2)  # two kernels
        index + 1  # host index bookkeeping: integers
        float(z[0, 0])  # a read, not a launch
        inside = (z > 0).unsqueeze(0)  # a mask computed from the states: a kernel, and a view of it
        inside.all()  # a kernel on the mask
        torch.where(inside, z, 0.0)  # the wrapped 0.0 is a host number
        ~(index > 1)  # a mask of the host's own: not counted
        z[index[:2]]  # a gather, and on a GPU the host index sent there first
        counter.counting = False
        z - 1
    assert dict(counter.kernels) == {"mul": 1, "add": 1, "gt": 1, "all": 1, "where": 1, "index": 1, "to_device": 1}


def test_the_counter_counts_the_host_syncs_a_gpu_would_make():
    """Reads of device values and blocking sends of host data make the host wait for the device; a
    non-blocking send and the host's own numbers do not."""
    counter = OpCounter()
    x, index = torch.ones(4), torch.arange(3)
    with transfers_counted(counter), counter:
        counter.counting = True
        y = x * 2
        float(y.sum())  # a read
        y.tolist()  # a read
        (y > 1).cpu()  # a transfer back
        index.to("cpu")  # a blocking send of a host index
        index.to("cpu", non_blocking=True)  # staged, no wait
        index.tolist(), int(index[0]), bool(index.sum() > 0)  # the host's own numbers
        torch.linalg.solve(torch.eye(2) + y[:2].diag(), y[:2])  # checks its result on the host
        torch.linalg.solve_ex(torch.eye(2) + y[:2].diag(), y[:2])
        y[y > 1]  # a gather through a mask: its size is read first
        y[index[:2]]  # through indices: no wait
        counter.counting = False
        y.tolist()
    assert dict(counter.syncs) == {"read": 2, "to_host": 1, "blocking send": 1, "error check": 1, "mask index": 1}
    assert counter.kernels["to_device"] == 3 and counter.kernels["to_host"] == 1


def test_a_chunk_counts_the_samplers_work_and_not_the_networks(toy_ckpt):
    """The same chunk with a network that does a hundred more float ops per call counts the same."""
    import parapolicy

    policy = parapolicy.load_policy(toy_ckpt).set_sampler("quasi_newton", scan=True, probes=True, thin_start=False)
    obs = {"obs": torch.zeros(1, policy.spec.n_obs_steps, 4)}
    count_chunk(policy, obs, 0, OpCounter())  # first-call work (the coefficients on this device) aside
    plain = OpCounter()
    stats = count_chunk(policy, obs, 0, plain)
    network = policy.model.forward

    def busy(*args, **kwargs):
        out = network(*args, **kwargs)
        for _ in range(100):
            out = out + 0.0
        return out

    policy.model.forward = busy
    loud = OpCounter()
    count_chunk(policy, obs, 0, loud)
    assert stats.settings["scan"] is True and stats.rounds >= 2
    assert sum(plain.kernels.values()) > 10 * stats.rounds  # the rounds' propagation, fits and checks
    assert loud.kernels == plain.kernels


@pytest.mark.slow
def test_the_script_models_the_chunk_as_calls_plus_launches(tmp_path):
    out = str(tmp_path / "kernels")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "bench_kernels.py"), "--quick",
                           "--schedules", "DDIM-16", "--out", out], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.load(open(out + ".json"))["rows"][0]
    assert row["config"]["scan"] is True and row["kernels_per_chunk"] > 0
    for us, ms in row["modelled_chunk_ms"].items():
        assert ms == pytest.approx(row["modelled_network_ms"] + row["kernels_per_chunk"] * float(us) / 1000)
    assert "python scripts/bench_kernels.py --quick" in open(out + ".md").read()
