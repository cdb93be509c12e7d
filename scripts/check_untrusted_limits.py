"""Hostile inputs of issue 25, each loaded in a fresh process under an address-space cap.

    PYTHONPATH=. python scripts/check_untrusted_limits.py [--cap-gib 6] [--timeout 60]

(from the repository root: the hostile files are built with the test fixtures, ``tests.support``)

Builds each attack in a temporary directory (a full-size UNet whose weights share one stored
tensor, a parameter with a fake stride/element_size, schedules with too many steps, a
nested ``${eval}`` list, a FIFO named like a stats file, a sampler with blocks=10**7), then
runs ``load_policy`` (or the sampler constructor) in a subprocess with ``RLIMIT_AS`` set and
prints the wall time of the call (after ``import parapolicy``), the process's peak RSS (VmHWM,
imports included) and the first line of the error. Every row should end in
one ParapolicyError well inside the cap and the time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
    import parapolicy
    start = time.perf_counter()
    try:
        exec(sys.argv[2])
        outcome = "no error"
    except BaseException as exc:
        outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
        from parapolicy.errors import ParapolicyError
        outcome = ("ok " if isinstance(exc, ParapolicyError) else "RAW ") + outcome
    peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"s": time.perf_counter() - start, "rss_mib": peak / 1024, "outcome": outcome}))
""")


def build_attacks(root: str) -> dict:
    """name -> Python statement that triggers it (run in the capped child)."""
    import dill
    import torch

    try:
        from tests.support.dp_fixtures import POLICY_CFGS, random_weights
        from tests.support.lerobot_eras import STATE_ONLY_0_5, write_dir
    except ImportError as exc:
        raise SystemExit(f"the attacks are built with the test fixtures: run `PYTHONPATH=. python "
                         f"scripts/check_untrusted_limits.py` from the repository root ({exc})") from None

    from parapolicy.checkpoints.dp_workspace import save_dp_workspace

    attacks = {}
    small = POLICY_CFGS["unet_lowdim_global_ddpm"]()
    state = random_weights(small, seed=0)

    def save(name, cfg, ema):
        path = os.path.join(root, name)
        save_dp_workspace(path, {"policy": cfg, "training": {"use_ema": True}}, {"ema_model": ema})
        return path

    big = dict(small, model=dict(small["model"], down_dims=[512, 1024, 2048], diffusion_step_embed_dim=256,
                                 kernel_size=5, n_groups=8))
    weights = random_weights(big, seed=0)
    by_shape = {}
    shared = {k: by_shape.setdefault(tuple(v.shape), v) if k.startswith("model.") else v for k, v in weights.items()}
    path = save("shared.ckpt", big, shared)
    attacks[f"weights sharing one stored tensor ({os.path.getsize(path) >> 20} MiB file)"] = \
        f"parapolicy.load_policy({path!r})"

    param = torch.nn.Parameter(torch.ones(1).expand(2_000_000_000), requires_grad=False)
    param.element_size, param.stride = int, tuple
    ema = dict(state, **{"normalizer.params_dict.obs.input_stats.mean": param})
    path = os.path.join(root, "param.ckpt")
    torch.save({"cfg": {"policy": small, "training": {"use_ema": True}}, "state_dicts": {"ema_model": ema}}, path,
               pickle_module=dill)
    attacks["parameter with fake stride/element_size (8 GB view)"] = f"parapolicy.load_policy({path!r})"

    for steps in (100_000, 10_000):
        cfg = dict(small, num_inference_steps=None, noise_scheduler=dict(small["noise_scheduler"],
                                                                         num_train_timesteps=steps))
        attacks[f"schedule of {steps} steps"] = f"parapolicy.load_policy({save(f'steps{steps}.ckpt', cfg, state)!r})"

    cfg = dict(small, label="${eval:'[[1] * 10000] * 10000'}")
    attacks["nested ${eval} list"] = f"parapolicy.load_policy({save('eval.ckpt', cfg, state)!r})"

    from parapolicy.checkpoints.lerobot import PRE_STATS

    folder = write_dir(os.path.join(root, "fifo"), STATE_ONLY_0_5, "processor")
    os.unlink(os.path.join(folder, PRE_STATS))
    os.mkfifo(os.path.join(folder, PRE_STATS))
    attacks["FIFO named like a stats file"] = f"parapolicy.load_policy({folder!r})"
    attacks["piadm blocks=10**7"] = "parapolicy.samplers.PIADM(blocks=10**7)"
    attacks["control: the shipped toy checkpoint loads"] = (
        f"parapolicy.load_policy({os.path.join(ROOT, 'parapolicy/assets/checkpoints/toy_reach_unet.ckpt')!r})")
    return attacks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cap-gib", type=float, default=6.0)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    cap = int(args.cap_gib * (1 << 30))
    with tempfile.TemporaryDirectory() as root:
        for name, statement in build_attacks(root).items():
            try:
                proc = subprocess.run([sys.executable, "-c", CHILD, str(cap), statement], capture_output=True,
                                      text=True, timeout=args.timeout, cwd=ROOT)
                row = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else \
                    {"s": float("nan"), "rss_mib": float("nan"), "outcome": proc.stderr.strip()[-160:]}
            except subprocess.TimeoutExpired:
                row = {"s": args.timeout, "rss_mib": float("nan"), "outcome": "HANG (timed out)"}
            print(f"{name:55s} {row['s']:6.2f} s {row['rss_mib']:7.0f} MiB  {row['outcome']}")


if __name__ == "__main__":
    main()
