"""When a run saves and what a save records: the end-of-epoch save (every `save_frequency` epochs, the
last epoch, and whenever a measured `checkpoint.metric` beats the best), the saves inside an epoch
(save_schedule.py), the stop and collapse saves, and the metadata a resume needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlx.utils import tree_flatten

from hjepa_mlx.save_schedule import MidEpochSaves


@dataclass(frozen=True)
class SavePolicy:
    """checkpoint.*: save_frequency (epochs), save_every_steps / save_every_minutes (inside an epoch),
    save_best, metric ('val_loss' | 'knn_top1'), mode ('min' | 'max'), keep_last_k."""
    save_frequency: int
    save_every_steps: int
    save_every_minutes: float
    save_best: bool
    metric: str
    mode: str
    keep_last_k: int


@dataclass(frozen=True)
class Position:
    """Where the run is after a step: `epoch` (0-based), `batch` done in it, global `step` done."""
    epoch: int
    batch: int
    step: int


class Saver:
    """manager: the run's CheckpointManager (a no-op saver on data-parallel ranks other than 0);
    config_dict, seed, total_steps: recorded in every checkpoint's metadata; best: the best metric so far
    (from the resumed checkpoint)."""

    def __init__(self, manager, policy: SavePolicy, *, run_dir: Path, config_dict: dict, seed: int,
                 total_steps: int, epochs: int, best=None):
        self.manager, self.policy, self.run_dir = manager, policy, Path(run_dir)
        self.config_dict, self.seed, self.total_steps, self.epochs = config_dict, seed, total_steps, epochs
        self.best = best
        self.mid_epoch = MidEpochSaves(policy.save_every_steps, policy.save_every_minutes)

    def metadata(self, at: Position) -> dict:
        return checkpoint_metadata(self.config_dict, at, seed=self.seed, best=self.best,
                                   total_steps=self.total_steps, run_dir=self.run_dir)

    def save(self, state, at: Position, *, metric_value=None) -> Path | None:
        return self.manager.save(state, self.metadata(at), epoch=at.epoch, metric_value=metric_value)

    def end_of_epoch_due(self, epoch: int, metric_value) -> bool:
        """After epoch `epoch` (0-based): every save_frequency epochs, the last one, or a new best (saved
        whenever it is measured, whatever save_frequency says)."""
        p = self.policy
        return ((epoch + 1) % p.save_frequency == 0 or epoch + 1 == self.epochs
                or (p.save_best and self.manager.improves(metric_value)))

    def save_end_of_epoch(self, state, epoch: int, step: int, metric_value) -> Path | None:
        if self.policy.save_best and self.manager.improves(metric_value):
            self.best = metric_value
        saved = self.save(state, Position(epoch + 1, 0, step),
                          metric_value=metric_value if self.policy.save_best else None)
        self.mid_epoch.mark_saved()
        return saved

    def saved_line(self, path: Path, state) -> str:
        """The log line of a saved checkpoint: its size, and the size of the encoder alone."""
        encoder_bytes = sum(v.nbytes for _, v in tree_flatten(state["target"]))
        return (f"checkpoint {path.name}: {path.stat().st_size / 1e6:.1f} MB, the full training state for resume "
                f"(both encoders, predictor, AdamW moments); the target encoder alone is {encoder_bytes / 1e6:.1f} "
                f"MB (scripts/export.py); the newest {self.manager.keep_last_k} (checkpoint.keep_last_k) and the "
                f"best are kept")


def checkpoint_metadata(config_dict: dict, at: Position, *, seed: int, best, total_steps: int, run_dir) -> dict:
    """What a resume needs besides the arrays: the config, the position, the best metric so far, and the
    length of metrics.jsonl at save time."""
    return {"config": config_dict, "epoch": at.epoch, "batch_in_epoch": at.batch, "step": at.step, "seed": seed,
            "best_metric": best, "total_steps": total_steps, "metrics_bytes": _metrics_bytes(Path(run_dir))}


def _metrics_bytes(run_dir: Path) -> int:
    """Length of metrics.jsonl at save time: a resume cuts the rows written after the checkpoint."""
    try:
        return (run_dir / "metrics.jsonl").stat().st_size
    except OSError:
        return 0
