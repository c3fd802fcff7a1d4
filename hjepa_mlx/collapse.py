"""The online collapse alarm: RankMe and per-dimension std of the pooled target features on a fixed probe
set of held-out images, every `logging.collapse_frequency` steps.

The original H-JEPA collapsed without anyone noticing until the morning. Here each check logs `rankme`
and `feature_std` (metrics.jsonl, TensorBoard); a check is *bad* when RankMe < `rank_fraction` * D or the
mean per-dimension std < `std_threshold`; `patience` bad checks in a row raise the alarm (one warning
line naming the step range), and with `training.stop_on_collapse` the run saves a checkpoint and stops.

Thresholds (defaults, in the schema): RankMe below 0.1 * D means the features use less than a tenth of
their dimensions; a mean per-dimension std below 0.01 of the affine-free-normalised target tokens (whose
per-token variance over D is 1) means the images have become nearly indistinguishable (a collapsed seed
run measured 0.005, healthy runs 0.1 - 0.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from hjepa_mlx.evaluate.quality import rankme


@dataclass(frozen=True)
class CollapseSettings:
    frequency: int            # steps between checks (0: never)
    probe_images: int         # held-out images in the probe set (RankMe needs many more than D)
    rank_fraction: float      # bad when RankMe < rank_fraction * D
    std_threshold: float      # bad when the mean per-dimension std < std_threshold
    patience: int             # bad checks in a row that raise the alarm
    stop: bool                # training.stop_on_collapse


class CollapseMonitor:
    """Args: settings; model (HJEPAModel: `encode_target(params, images) -> (B, N, D)`); probe_batches:
    list of NumPy image batches (B, H, W, 3) of one shape, the fixed probe set."""

    def __init__(self, settings: CollapseSettings, model, probe_batches: list[np.ndarray]):
        self.settings = settings
        self._batches = [mx.array(b) for b in probe_batches]
        self._encode = mx.compile(lambda params, images: model.encode_target(params, images).mean(axis=1))
        self.bad_since: int | None = None     # first step of the current run of bad checks
        self.bad_count = 0

    @property
    def probe_images(self) -> int:
        return sum(int(b.shape[0]) for b in self._batches)

    def due(self, step: int) -> bool:
        return self.settings.frequency > 0 and bool(self._batches) and step % self.settings.frequency == 0

    def check(self, step: int, target_params) -> tuple[dict, str | None]:
        """Metrics {rankme, rankme_fraction, feature_std, collapse_alarm} at `step`, and the warning line
        when this check raises (or keeps) the alarm, else None."""
        z = np.concatenate([np.array(self._encode(target_params, b), dtype=np.float64) for b in self._batches])
        d = z.shape[1]
        rank = rankme(z) if np.isfinite(z).all() else 0.0
        std = float(z.std(axis=0).mean()) if np.isfinite(z).all() else 0.0
        s = self.settings
        bad = rank < s.rank_fraction * d or std < s.std_threshold
        if bad:
            self.bad_count += 1
            self.bad_since = step if self.bad_since is None else self.bad_since
        else:
            self.bad_count, self.bad_since = 0, None
        alarm = self.bad_count >= s.patience
        metrics = {"rankme": rank, "rankme_fraction": rank / d, "feature_std": std, "collapse_alarm": float(alarm)}
        message = None
        if alarm:
            message = (f"collapse alarm: the pooled target features look collapsed on {self.bad_count} checks in a "
                       f"row (steps {self.bad_since}-{step}): RankMe {rank:.1f} of {d} (alarm below "
                       f"{s.rank_fraction * d:.1f}), mean per-dimension std {std:.4f} (alarm below "
                       f"{s.std_threshold}); lower the LR, raise loss.vicreg_weight, or check the augmentations")
        return metrics, message

    @property
    def should_stop(self) -> bool:
        return self.settings.stop and self.bad_count >= self.settings.patience


def probe_batches(loader, count: int) -> list[np.ndarray]:
    """The first `count` images of `loader` (rounded down to whole batches; at least one batch when the
    loader has any), as a list of image batches."""
    out, seen = [], 0
    for batch in loader.epoch(0):
        if out and seen + len(batch) > count:
            break
        if len(batch) != loader.batch_size:
            break
        out.append(batch.images)
        seen += len(batch)
    return out
