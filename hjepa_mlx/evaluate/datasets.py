"""Labelled train/test loaders (evaluation transform, fixed order) for evaluating an encoder."""

from __future__ import annotations

from hjepa_mlx.config.schema import Config
from hjepa_mlx.errors import UserError


def run_datasets(config: Config) -> list[tuple[str, str]]:
    d = config.data
    if d.use_multi_dataset:
        return [(e.name, e.path) for e in d.datasets]
    return [(d.dataset, d.data_path)]


def labelled_loaders(config: Config, name: str | None, data_path: str | None, batch_size: int):
    """[(name, train loader, test loader)] for `name`, or for every dataset of the run when None."""
    from hjepa_mlx.build import _dataset
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.transforms import make_eval_transform

    known = dict(run_datasets(config))
    names = [name] if name else list(known)
    out = []
    tf = make_eval_transform(config.data.image_size, config.data.eval_crop_fraction)
    for n in names:
        root = data_path or known.get(n, config.data.data_path)
        train = _dataset(config, n, root, "train_labelled" if n == "stl10" else "train")
        test = _dataset(config, n, root, "val")
        if not getattr(train, "labelled", True):
            raise UserError(f"{n}: the training split has no labels; k-NN and linear probes need labelled data")
        out.append((n, BatchLoader(train, min(batch_size, len(train)), tf, shuffle=False, drop_last=False),
                    BatchLoader(test, min(batch_size, len(test)), tf, shuffle=False, drop_last=False)))
    return out
