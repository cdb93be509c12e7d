import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def toy_ckpt(tmp_path_factory):
    """A ToyReach UNet checkpoint trained for two steps, with 10 DDPM inference steps (fast rollouts)."""
    import numpy as np
    from omegaconf import OmegaConf

    from parapolicy.checkpoints.dp_cfg import safe_arithmetic
    from parapolicy.train.dataset import save_buffer
    from parapolicy.train.trainer import train

    root = tmp_path_factory.mktemp("toyckpt")
    rng = np.random.default_rng(0)
    save_buffer(str(root / "d.npz"), [{"obs": rng.normal(size=(30, 4)), "action": rng.uniform(-1, 1, size=(30, 2))}
                                      for _ in range(3)])
    if not OmegaConf.has_resolver("eval"):
        OmegaConf.register_new_resolver("eval", safe_arithmetic)
    cfg = OmegaConf.load(os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "train", "toy.yaml"))
    cfg.data.path, cfg.training.num_steps, cfg.training.batch_size = str(root / "d.npz"), 2, 8
    cfg.policy.num_inference_steps = 10
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra")
    return train(plain, str(root / "run"), progress=False)


@pytest.fixture
def capped():
    """Address space capped at the current size + 2 GiB while a payload loads, and a time budget."""
    import contextlib
    import resource
    import time

    if not os.path.exists("/proc/self/statm"):
        pytest.skip("needs /proc to size the memory cap")

    @contextlib.contextmanager
    def run(seconds=10.0):
        pages = int(open("/proc/self/statm").read().split()[0])
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = pages * os.sysconf("SC_PAGE_SIZE") + (2 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
        start = time.perf_counter()
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        assert time.perf_counter() - start < seconds

    return run


@pytest.fixture(scope="session")
def robomimic_ckpt(tmp_path_factory):
    """``robomimic_ckpt(kind)``: a two-step upstream-format robomimic checkpoint of one kind
    (``robomimic_fixtures.KINDS``), trained once per session on first use."""
    from tests.support.robomimic_fixtures import train_tiny

    root, made = tmp_path_factory.mktemp("robomimic_ckpts"), {}

    def get(kind: str) -> str:
        if kind not in made:
            made[kind] = train_tiny(kind, str(root))
        return made[kind]

    return get
