"""Labelled train/test loaders (evaluation transform, fixed order) for evaluating an encoder."""

from __future__ import annotations

from hjepa_mlx.config.schema import Config
from hjepa_mlx.errors import UserError


def labelled_loaders(config: Config, name: str | None, data_path: str | None, batch_size: int):
    """[(name, train loader, test loader)] for `name`, or for every dataset of the run when None."""
    from hjepa_mlx.build import open_dataset, open_labelled_train, run_dataset_entries
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.transforms import make_eval_transform

    known = {n: path for n, path, _ in run_dataset_entries(config)}
    names = [name] if name else list(known)
    out = []
    tf = make_eval_transform(config.data.image_size, config.data.eval_crop_fraction)
    for n in names:
        root = data_path or known.get(n, config.data.data_path)
        train = open_labelled_train(config, n, root)
        test = open_dataset(config, n, root, "val")
        if not getattr(train, "labelled", True):
            raise UserError(f"{n}: the training split has no labels; k-NN and linear probes need labelled data")
        out.append((n, BatchLoader(train, min(batch_size, len(train)), tf, shuffle=False, drop_last=False),
                    BatchLoader(test, min(batch_size, len(test)), tf, shuffle=False, drop_last=False)))
    return out
