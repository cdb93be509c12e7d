"""scripts/gpu_check.sh: the one GPU script, exercised on the CPU with --dry-run (same steps, tiny)."""

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_dry_run_writes_the_cost_curve_and_the_latency_table():
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = re.search(r"dry run on the CPU into (\S+)", proc.stdout).group(1)
    curve = json.load(open(os.path.join(out, "network_call_cpu.json")))
    assert [(r["network"], r["rows"]) for r in curve["rows"]] == [("shipped_pusht", 1), ("shipped_pusht", 2)]
    table = json.load(open(os.path.join(out, "latency_cpu.json")))
    labels = {(r["schedule"], r["label"]) for r in table["rows"]}
    assert {("DDPM-100", "sequential"), ("DDPM-100", "quasi_newton"), ("DDIM-16", "sequential"),
            ("DDIM-10", "sequential"), ("DDPM-100", "auto")} <= labels
    for row in table["rows"]:
        assert row["rounds"] >= 1 and row["max_rows_per_round"] >= 1 and row["modelled_ms"] > 0
    assert "modelled ms" in open(os.path.join(out, "latency_cpu.md")).read()


def test_a_stored_curve_that_falls_never_models_a_negative_time(tmp_path):
    """The dry run's two-point curve can time 2 rows below 1 (noise on a busy CPU); extended along
    that falling segment to 64 rows it modelled -2519 ms once. It is held non-decreasing instead."""
    from parapolicy.bench.stored_curve import modelled_cost

    stored = {"device": "cpu", "rows": [{"network": "shipped_pusht", "mode": "eager", "rows": 1, "median_ms": 12.0},
                                        {"network": "shipped_pusht", "mode": "eager", "rows": 2, "median_ms": 11.5}]}
    path = tmp_path / "curve.json"
    path.write_text(json.dumps(stored))
    cost, device, rows = modelled_cost(str(path), mode="eager", network="shipped_pusht")
    assert device == "cpu" and rows == [1, 2]
    assert cost(1) == 12.0 and cost(64) == 12.0  # flat beyond the last point, never below a smaller row count
