"""Scalar metrics to TensorBoard event files (tensorboardX) and W&B offline runs (wandb).

Both libraries are the optional extra ``train``; they are imported only when enabled.
TensorBoard events go straight into ``log_dir`` (``tensorboard --logdir LOG_DIR`` finds
them); W&B writes ``log_dir/wandb/offline-run-*`` (upload later with ``wandb sync``).
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError


class MetricsLogger:
    def __init__(self, log_dir: str | os.PathLike | None, *, tensorboard: bool = False,
                 wandb: bool = False, config: dict | None = None, run_name: str | None = None,
                 project: str = "abi"):
        self.log_dir = Path(log_dir) if log_dir else None
        self._tb = None
        self._wandb_run = None
        if (tensorboard or wandb) and self.log_dir is None:
            raise ConfigError("TensorBoard/W&B logging needs a log_dir", field="log_dir")
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                raise ConfigError("TensorBoard logging needs tensorboardX: "
                                  "pip install 'abi[train]'", field="enable_tensorboard") from None
            self._tb = SummaryWriter(logdir=str(self.log_dir), flush_secs=5)
        if wandb:
            try:
                import wandb as wandb_lib
            except ImportError:
                raise ConfigError("W&B logging needs wandb: pip install 'abi[train]'",
                                  field="enable_wandb") from None
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb_run = wandb_lib.init(
                project=project, dir=str(self.log_dir), mode="offline", name=run_name,
                config=config or {}, reinit="create_new",
                settings=wandb_lib.Settings(console="off", x_disable_stats=True,
                                            x_disable_machine_info=True))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"train/{key}", float(value), global_step=step)
        if self._wandb_run is not None:
            self._wandb_run.log({f"train/{k}": float(v) for k, v in metrics.items()}, step=step)

    @property
    def wandb_dir(self) -> str | None:
        return self._wandb_run.dir if self._wandb_run is not None else None

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            import wandb as wandb_lib

            self._wandb_run.finish()
            self._wandb_run = None
            # offline, finish() can return before wandb's service has written the run file;
            # shutting the service down flushes it (unless another run still uses it)
            if wandb_lib.run is None:
                wandb_lib.teardown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
