"""Pictures on disk, drawn with matplotlib's Agg backend (no display needed), viewable without TensorBoard:

- `draw_curves`: every loss term, the validation loss, lr, EMA momentum, k-NN, RankMe / feature std vs step.
- `draw_masks`: masks over real training images, the context as it is, each target block its own colour,
  patches in neither darkened; a legend names the colours.
- `draw_attention`: the image beside the attention each patch receives (last block, mean over heads and
  queries) laid over it, with a colour bar.
- `draw_eval`: evaluate.py's table as grouped bars (one group per metric, one bar per encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hjepa_mlx.run_logging import BLOCK_COLOURS, DROPPED_SHADE, mask_overlay
from hjepa_mlx.runfiles import series

# (panel title, y label, [(metric, label)], log y)
PANELS = [
    ("prediction loss", "loss", [("loss_prediction", "prediction (weighted levels)"),
                                 ("loss_level0", "level 0"), ("loss_level1", "level 1"), ("loss_level2", "level 2"),
                                 ("loss_level3", "level 3")], False),
    ("regularisers (unweighted terms)", "value", [("vicreg_invariance", "VICReg invariance"),
                                                  ("vicreg_variance", "VICReg variance"),
                                                  ("vicreg_covariance", "VICReg covariance"),
                                                  ("contrastive_loss", "NT-Xent")], True),
    ("total loss", "loss", [("loss", "train (total)"), ("val_loss", "validation")], False),
    ("learning rate", "lr", [("lr", "lr")], False),
    ("EMA momentum", "1 - momentum", [("one_minus_momentum", "1 - momentum")], True),
    ("online k-NN top-1", "accuracy", [("knn_top1_k1", "k=1"), ("knn_top1_k5", "k=5"), ("knn_top1_k20", "k=20"),
                                      ("knn_top1", "knn_top1 (metric_k)")], False),
    ("collapse alarm: RankMe", "RankMe", [("rankme", "RankMe")], False),
    ("collapse alarm: feature std", "mean per-dim std", [("feature_std", "feature std")], False),
]


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _finish(plt, fig, path: Path, title: str = "") -> Path:
    """Title, layout, the atomic save and closing the figure: how every picture here ends."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)         # a viewer never sees a half-written picture
    return path


def draw_curves(records: list[dict], path: str | Path, *, title: str = "") -> Path | None:
    """One panel per group of PANELS that has data; None (nothing written) when no record has any."""
    records = [({**r, "one_minus_momentum": 1.0 - r["momentum"]} if "momentum" in r else r) for r in records]
    panels = []
    for name, ylabel, metrics, log in PANELS:
        lines = [(label, *series(records, m)) for m, label in metrics]
        lines = [(label, s, v) for label, s, v in lines if s]
        if lines:
            panels.append((name, ylabel, lines, log))
    if not panels:
        return None
    plt = _pyplot()
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, ylabel, lines, log) in zip(axes.flat, panels):
        for label, steps, values in lines:
            ax.plot(steps, values, marker="o" if len(steps) < 20 else None, markersize=3, label=label)
        if log and all(v > 0 for _, _, vals in lines for v in vals):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _finish(plt, fig, path, title)


def draw_masks(images: list[np.ndarray], contexts: list, targets: list, patch_size: int, path: str | Path, *,
               title: str = "") -> Path:
    """images: uint8 (H, W, 3); contexts[i]: context patch indices of image i; targets[i]: (blocks, K)."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 4.3), squeeze=False)
    for ax, img, ctx, blocks in zip(axes.flat, images, contexts, targets):
        ax.imshow(mask_overlay(img, ctx, list(blocks), patch_size), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
    blocks = len(targets[0]) if targets else 0
    handles = [Patch(facecolor="white", edgecolor="black", label="context (as is)"),
               Patch(facecolor=str(DROPPED_SHADE), edgecolor="black", label="neither (darkened)")]
    handles += [Patch(facecolor=BLOCK_COLOURS[b % len(BLOCK_COLOURS)] / 255.0, label=f"target block {b + 1}")
                for b in range(blocks)]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    out = _save(fig, path)
    plt.close(fig)
    return out


def draw_attention(images: list[np.ndarray], maps: list[np.ndarray], path: str | Path, *, title: str = "") -> Path:
    """images: uint8 (H, W, 3); maps: (gh, gw) attention received per patch, laid over each image."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 6.6), squeeze=False)
    for i, (img, amap) in enumerate(zip(images, maps)):
        h, w = img.shape[:2]
        axes[0, i].imshow(img, interpolation="nearest")
        axes[1, i].imshow(img, interpolation="nearest")
        shown = axes[1, i].imshow(amap, cmap="viridis", alpha=0.6, extent=(0, w, h, 0), interpolation="nearest")
        fig.colorbar(shown, ax=axes[1, i], fraction=0.046, pad=0.04, label="attention received")
        for ax in axes[:, i]:
            ax.set_xticks([]), ax.set_yticks([])
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel("last block, mean over heads and queries")
    return _finish(plt, fig, path, title)


def draw_eval(rows: dict[str, dict], path: str | Path, *, title: str = "") -> Path | None:
    """Grouped bars of the accuracies (k-NN at each k, linear probe) per encoder, and RankMe (with its maximum,
    the feature width) on its own axis."""
    names = list(rows)
    metrics = [m for m in dict.fromkeys(k for r in rows.values() for k in r)
               if all(isinstance(rows[n].get(m), (int, float)) and not isinstance(rows[n].get(m), bool)
                      for n in names if m in rows[n])]
    accs = [m for m in metrics if "top1" in m]            # k-NN at each k, linear probe
    others = [m for m in metrics if m in ("rankme", "rankme_max")]
    if not accs and not others:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if others else 1, figsize=(9 if others else 7, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]} if others else None)
    for ax, group in zip(axes.flat, [accs, others]):
        x = np.arange(len(group))
        width = 0.8 / max(len(names), 1)
        for j, n in enumerate(names):
            vals = [rows[n].get(m, np.nan) for m in group]
            bars = ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=n)
            ax.bar_label(bars, labels=[f"{v:.3g}" if np.isfinite(v) else "" for v in vals], fontsize=7)
        ax.set_xticks(x, group, rotation=20, fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel("top-1 accuracy")
    axes[0, 0].legend(fontsize=8)
    if others:
        axes[0, 1].set_ylabel("RankMe")
    return _finish(plt, fig, path, title)
