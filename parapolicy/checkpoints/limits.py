"""Every bound on what an untrusted checkpoint may ask for, in one module.

Each size a checkpoint names is checked against these before anything is allocated from it,
so a tiny file cannot ask for gigabytes or hours. The network bounds differ between formats
where their published checkpoints do (LeRobot's config.json is read more tightly), so each
format has its own ``FormatLimits``; everything else is shared. The tensor-level bounds live
at the bottom floor (``parapolicy.tensor_safety``) because the normalizer needs them too.
"""

from __future__ import annotations

from dataclasses import dataclass

from parapolicy.tensor_safety import MAX_FEATURE_DIM

# ---------------------------------------------------------------------------- both formats
MAX_TRAIN_TIMESTEPS = 10_000  # DDPM's own 1000 with room; the schedule's tables grow with it
MAX_INFERENCE_STEPS = 1_000  # network calls of one sequential chunk; building the step rule is quadratic in it
# A policy's networks and normalizer may take at most this many bytes per tensor byte the
# checkpoint stores: 2 lets float16 weights widen to float32, while weights that share one
# stored tensor (or a tiny file naming huge shapes) cannot multiply what the file holds.
MAX_BYTES_PER_STORED_BYTE = 2


@dataclass(frozen=True)
class FormatLimits:
    """The network and observation sizes one checkpoint format may name."""

    obs_steps: int
    horizon: int  # also bounds n_action_steps
    channels: int  # UNet down_dims and GroupNorm groups (DP: transformer n_emb too)
    levels: int  # len(down_dims)
    kernel: int
    step_embed_dim: int  # diffusion_step_embed_dim
    image_side: int  # image height, width and crop
    vector_dim: int  # one vector observation or the action


# generous for every published DiffusionPolicy workspace, far below a DoS
DP_LIMITS = FormatLimits(obs_steps=1_024, horizon=4_096, channels=16_384, levels=8, kernel=63, step_embed_dim=16_384,
                         image_side=4_096, vector_dim=MAX_FEATURE_DIM)
# LeRobot's own checkpoints sit far inside these
LEROBOT_LIMITS = FormatLimits(obs_steps=64, horizon=1_024, channels=4_096, levels=6, kernel=31, step_embed_dim=4_096,
                              image_side=1_024, vector_dim=4_096)

# ---------------------------------------------------------------------------- DiffusionPolicy workspaces only
MAX_LAYERS = 64  # transformer layers
MAX_HEADS = 256  # transformer heads
MAX_OBS_KEYS = 64  # cfg.policy.shape_meta.obs
MAX_EPISODE_STEPS = 100_000  # cfg.task.env_runner.max_steps
# the stored Hydra cfg, copied out and resolved (dp_cfg)
MAX_CFG_NODES = 200_000  # values copied out of the stored cfg, shared nodes counted each time
MAX_CFG_NESTING = 32  # containers inside containers
MAX_REFERENCE_DEPTH = 24  # interpolations resolving through interpolations
MAX_STRING = 100_000  # characters of any resolved string
MAX_WORK = 1_000_000  # size units (characters, values) handed out by all references together
MAX_INTERPOLATION = 1_000  # characters of one interpolation string (upstream's are under 200)
MAX_PARSED = 20_000  # characters of interpolation text parsed in all (the grammar parser is slow)
# ${eval:...} arithmetic (arithmetic)
MAX_INT_BITS = 4096
MAX_SEQUENCE = 10_000  # items of a string or list
MAX_EXPRESSION = 2_000  # characters of one expression
MAX_EXPRESSION_NESTING = 50

# ---------------------------------------------------------------------------- LeRobot directories only
MAX_CONFIG_JSON_BYTES = 1 << 20  # a LeRobot config.json is a few kB
MAX_CAMERAS = 8
MAX_KEYPOINTS = 1_024  # spatial softmax keypoints
