"""The benchmark harness: how a script echoes its command, times chunks and writes its report.

Each benchmark report starts with the exact command that produced it and the device it ran on,
so a number in ``benchmarks/`` can be reproduced; the files are written the same way everywhere
(``<prefix>.json`` numbers, ``<prefix>.md`` table). Confidence intervals come from
``parapolicy.metrics`` and are re-exported here so a script needs one import.
"""

from __future__ import annotations

import os
import shlex
import sys
import time

import torch

from parapolicy.eval.build import device_name
from parapolicy.metrics import paired_difference, score_ci, success_ci, write_json_atomic

__all__ = ["command_line", "device_label", "time_chunks", "paired_difference", "score_ci",
           "success_ci", "write_json_atomic", "write_report"]


def command_line(script: str, argv=None) -> str:
    """``python scripts/<script> <args>`` as it was run (``argv`` None: this process's arguments)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", f"scripts/{os.path.basename(script)}", *(shlex.quote(a) for a in args)])


def device_label(device: str = "cpu") -> str:
    """The device a report's numbers come from, with the torch version."""
    return f"{device_name(device)}, torch {torch.__version__}"


def write_report(prefix: str, result: dict, markdown: str) -> None:
    """A benchmark's two files: ``<prefix>.json`` (the numbers) and ``<prefix>.md`` (the table).

    The table always names the command that produced it (prepended when the script's own
    markdown does not quote it), and the paths written are echoed on the console.
    """
    command = result.get("command")
    if command and command not in markdown:
        markdown = f"Command: `{command}`\n\n{markdown}"
    write_json_atomic(prefix + ".json", result)
    with open(prefix + ".md", "w") as f:
        f.write(markdown)
    print(f"wrote {prefix}.md and {prefix}.json" + (f" ({command})" if command else ""))


def time_chunks(policy, obs, repeats: int, warmup: int = 2):
    """Wall time (ms) of whole ``predict_action`` calls and their outputs.

    Seeds 0..repeats-1 are timed, the same seeds for every mode, so outputs pair up; the
    warm-up chunks use other seeds and capture the graphs those shapes need. The policy
    synchronises the device before returning, so wall time is the chunk's latency.
    """
    times, outs = [], []
    for r in range(-warmup, repeats):
        started = time.perf_counter()
        out = policy.predict_action(obs, generator=torch.Generator().manual_seed(r % 1_000_003))
        if r >= 0:
            times.append((time.perf_counter() - started) * 1000)
            outs.append(out)
    return times, outs
