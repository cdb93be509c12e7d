"""wandb logging that works with no account: offline by default, disabled in tests.

Nothing imports wandb until a logger in ``online`` or ``offline`` mode is created, so
``mode="disabled"`` costs nothing.
"""

from __future__ import annotations

import os

MODES = ("offline", "online", "disabled")


class RunLogger:
    def __init__(self, mode="offline", project="parapolicy", name=None, directory=".", config=None, tags=None):
        if mode not in MODES:
            raise ValueError(f"wandb mode must be one of {MODES}, got {mode!r}")
        self.mode, self.run = mode, None
        if mode != "disabled":
            import wandb

            os.makedirs(directory, exist_ok=True)
            self.run = wandb.init(mode=mode, project=project, name=name, dir=directory, config=config or {},
                                  tags=list(tags or []), reinit="finish_previous")

    def log(self, values: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(values, step=step)

    def summary(self, values: dict) -> None:
        if self.run is not None:
            for k, v in values.items():
                self.run.summary[k] = v

    def table(self, key: str, columns, rows) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=list(columns), data=[list(r) for r in rows])})

    def histogram(self, key: str, values) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Histogram(list(values))})

    def video(self, key: str, path: str, fps: int = 10) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Video(path, fps=fps, format="mp4")})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
