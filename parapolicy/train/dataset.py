"""Demonstration replay buffers and the horizon-window sampler used for training.

A buffer is an ``.npz`` with per-step arrays (``obs``, ``action``, ...) concatenated over
episodes and ``episode_ends`` (exclusive end index of each episode), like upstream's
zarr replay buffer. Windows of ``horizon`` steps may start up to ``n_obs_steps - 1``
steps before an episode and end ``n_action_steps - 1`` after it; out-of-episode steps
repeat the first/last step, as upstream's SequenceSampler pads.
"""

from __future__ import annotations

import numpy as np
import torch


def load_buffer(path: str) -> dict:
    with np.load(path) as data:
        buf = {k: data[k] for k in data.files}
    if "episode_ends" not in buf:
        raise ValueError(f"{path} has no episode_ends array: not a replay buffer")
    return buf


def save_buffer(path: str, episodes: list[dict], extra: dict | None = None) -> None:
    keys = episodes[0].keys()
    arrays = {k: np.concatenate([np.asarray(ep[k]) for ep in episodes]) for k in keys}
    arrays["episode_ends"] = np.cumsum([len(ep["action"]) for ep in episodes])
    arrays.update(extra or {})
    np.savez_compressed(path, **arrays)


def window_indices(episode_ends, horizon: int, pad_before: int, pad_after: int) -> np.ndarray:
    """(start, end, episode_start, episode_end) of every sample window, in buffer indices."""
    rows = []
    start = 0
    for end in episode_ends:
        length = end - start
        for i in range(-pad_before, length - horizon + pad_after + 1):
            rows.append((start + i, start + i + horizon, start, end))
        start = end
    return np.asarray(rows, dtype=np.int64)


class SequenceDataset(torch.utils.data.Dataset):
    def __init__(self, buffer: dict, keys, horizon: int, n_obs_steps: int, n_action_steps: int):
        # images stay uint8 in memory and become float in [0, 1] per sample
        self.buffer = {k: buffer[k] if buffer[k].dtype == np.uint8 else np.asarray(buffer[k], dtype=np.float32)
                       for k in keys}
        self.horizon = horizon
        self.windows = window_indices(buffer["episode_ends"], horizon, n_obs_steps - 1, n_action_steps - 1)

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        start, end, ep_start, ep_end = self.windows[i]
        idx = np.clip(np.arange(start, end), ep_start, ep_end - 1)
        return {k: torch.from_numpy(v[idx].astype(np.float32) / 255.0 if v.dtype == np.uint8 else v[idx])
                for k, v in self.buffer.items()}
