"""LeRobot's DiffusionPolicy networks, built from a ``LeRobotConfig`` and checked against the file.

The UNet is structurally DiffusionPolicy's, so its weights map by renaming onto
``ConditionalUnet1D``; the image encoder is LeRobot's own (ResNet18 trunk, SpatialSoftmax
with a stored ``pos_grid``, Linear, ReLU) and is reproduced here. Networks are first built
on the meta device and their expected weight names and shapes compared with the
safetensors header, so a config that disagrees with its file, or asks for absurd sizes,
fails before any memory is allocated.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from parapolicy.checkpoints.lerobot.config import ENV, STATE, LeRobotConfig
from parapolicy.checkpoints.messages import head, quoted
from parapolicy.checkpoints.networks import NetworkBundle
from parapolicy.errors import CheckpointError
from parapolicy.models.unet1d import ConditionalUnet1D
from parapolicy.models.vision import center_crop, make_resnet18

UNET, ENCODER = "diffusion.unet.", "diffusion."
_INT_BUFFERS = ("num_batches_tracked",)  # BatchNorm's step counter (LeRobot >= 0.6 default backbone)


# ---------------------------------------------------------------------------- key mapping
def lerobot_unet_key_to_dp(key: str) -> str:
    """``conv1``/``conv2`` -> ``blocks.0``/``blocks.1``; bare down/up convs gain ``.conv``."""
    key = key.replace(".conv1.", ".blocks.0.").replace(".conv2.", ".blocks.1.")
    return re.sub(r"^((?:down|up)_modules\.\d+\.2)\.(weight|bias)$", r"\1.conv.\2", key)


def dp_unet_key_to_lerobot(key: str) -> str:
    key = re.sub(r"^((?:down|up)_modules\.\d+\.2)\.conv\.(weight|bias)$", r"\1.\2", key)
    return key.replace(".blocks.0.", ".conv1.").replace(".blocks.1.", ".conv2.")


# ---------------------------------------------------------------------------- networks
class LeRobotSpatialSoftmax(nn.Module):
    """LeRobot's keypoint pooling: softmax attention @ a fixed (H*W, 2) grid."""

    def __init__(self, in_channels: int, height: int, width: int, num_kp: int):
        super().__init__()
        self.nets = nn.Conv2d(in_channels, num_kp, kernel_size=1)
        self.num_kp, self.height, self.width = num_kp, height, width
        xs = torch.linspace(-1.0, 1.0, width, dtype=torch.float64)
        ys = torch.linspace(-1.0, 1.0, height, dtype=torch.float64)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        self.register_buffer("pos_grid", torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).float())

    def forward(self, features):
        attention = torch.softmax(self.nets(features).reshape(-1, self.height * self.width), dim=-1)
        return (attention @ self.pos_grid).view(-1, self.num_kp, 2)


class LeRobotRgbEncoder(nn.Module):
    """ResNet18 trunk (``backbone.N``) -> SpatialSoftmax -> Linear -> ReLU, center crop in eval."""

    def __init__(self, image_shape, crop_shape=None, use_group_norm=True, num_kp=32):
        super().__init__()
        self.crop_shape = tuple(crop_shape) if crop_shape is not None else None
        self.backbone = nn.Sequential(*list(make_resnet18(use_group_norm).children())[:-2])
        hw = self.crop_shape or tuple(image_shape[1:])
        fh, fw = (int(hw[0]) + 31) // 32, (int(hw[1]) + 31) // 32  # resnet18 halves 5 times, rounding up
        self.pool = LeRobotSpatialSoftmax(512, fh, fw, num_kp)
        self.out = nn.Linear(num_kp * 2, num_kp * 2)
        self.feature_dim = num_kp * 2

    def forward(self, x):
        x = center_crop(x, self.crop_shape)
        return torch.relu(self.out(torch.flatten(self.pool(self.backbone(x)), start_dim=1)))


class LeRobotObsEncoder(nn.Module):
    """Per-step features [state, camera features in config order, environment state].

    ``separate_per_camera`` gives a ModuleList (``rgb_encoder.<i>.`` keys) even for one
    camera, as LeRobot builds it.
    """

    def __init__(self, obs_shapes: dict, image_keys, crop_shape, use_group_norm, num_kp, separate_per_camera):
        super().__init__()
        self.obs_shapes = dict(obs_shapes)
        self.image_keys = list(image_keys)
        first = self.obs_shapes[self.image_keys[0]] if self.image_keys else None
        self.separate = bool(separate_per_camera) and bool(self.image_keys)
        if not self.image_keys:
            self.rgb_encoder = None
        elif self.separate:
            self.rgb_encoder = nn.ModuleList(
                LeRobotRgbEncoder(first, crop_shape, use_group_norm, num_kp) for _ in self.image_keys
            )
        else:
            self.rgb_encoder = LeRobotRgbEncoder(first, crop_shape, use_group_norm, num_kp)

    def first_rgb(self):
        return self.rgb_encoder[0] if isinstance(self.rgb_encoder, nn.ModuleList) else self.rgb_encoder

    def output_dim(self) -> int:
        dim = sum(self.obs_shapes[k][0] for k in (STATE, ENV) if k in self.obs_shapes)
        rgb = self.first_rgb()
        return dim + (rgb.feature_dim * len(self.image_keys) if rgb is not None else 0)

    def forward(self, obs: dict) -> torch.Tensor:
        feats = [obs[STATE]] if STATE in obs else []
        for i, key in enumerate(self.image_keys):
            enc = self.rgb_encoder[i] if self.separate else self.rgb_encoder
            feats.append(enc(obs[key]))
        if ENV in obs:
            feats.append(obs[ENV])
        return torch.cat(feats, dim=-1)


def build_networks(config: LeRobotConfig, device="meta") -> NetworkBundle:
    """The UNet and observation encoder of ``config``; on the meta device (the default) shapes only, no memory."""
    with torch.device(device):
        encoder = LeRobotObsEncoder(config.obs_shapes, config.image_keys, config.crop_shape, config.use_group_norm,
                                    config.num_keypoints, config.separate_rgb_encoders)
        unet = ConditionalUnet1D(
            input_dim=config.action_dim, global_cond_dim=encoder.output_dim() * config.n_obs_steps,
            diffusion_step_embed_dim=config.diffusion_step_embed_dim, down_dims=config.down_dims,
            kernel_size=config.kernel_size, n_groups=config.n_groups,
            cond_predict_scale=config.use_film_scale_modulation,
        )
    return NetworkBundle(unet, encoder)


def expected_weights(networks: NetworkBundle) -> dict:
    """``{file key: shape}`` LeRobot writes for these networks."""
    want = {UNET + dp_unet_key_to_lerobot(k): tuple(v.shape) for k, v in networks.model.state_dict().items()}
    want.update({ENCODER + k: tuple(v.shape) for k, v in networks.obs_encoder.state_dict().items()})
    return want


def check_header(header: dict, want: dict, origin: str) -> None:
    """Names, shapes and dtypes of the file's network tensors against the config's networks."""
    missing = [k for k in want if k not in header]
    extra = [k for k in header if k not in want]
    if missing or extra:
        parts = ([f"missing weights {quoted(missing)}"] if missing else []) + (
            [f"unexpected weights {quoted(extra)}"] if extra else [])
        raise CheckpointError(f"{origin}: model.safetensors does not match config.json: {'; '.join(parts)}")
    bad = [f"{k!r}: file {header[k][1]} vs config {want[k]}" for k in want if header[k][1] != want[k]]
    if bad:
        raise CheckpointError(f"{origin}: weight shapes do not match config.json: {head(bad)}")
    for key, (dtype, _) in header.items():
        allowed = ("I64",) if key.endswith(_INT_BUFFERS) else ("F16", "BF16", "F32", "F64")
        if dtype not in allowed:
            raise CheckpointError(f"{origin}: weight {key!r}: expected dtype {'/'.join(allowed)}, found {dtype}")


def materialize(networks: NetworkBundle, tensors: dict) -> None:
    """Move the meta networks to the CPU and copy the (already checked) file tensors in."""
    parts = ((networks.model, UNET, dp_unet_key_to_lerobot), (networks.obs_encoder, ENCODER, str))
    for module, prefix, rename in parts:
        module.to_empty(device="cpu")
        names = module.state_dict().keys()
        # to_empty leaves garbage in anything the file does not overwrite
        assert all(name in names for name, _ in module.named_buffers()), "non-persistent buffer"
        module.load_state_dict({k: tensors[prefix + rename(k)] for k in names}, strict=True)

