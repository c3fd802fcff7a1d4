"""Validation images come out of the training split: disjoint, complete, fixed by the seed."""

import numpy as np
import pytest

from hjepa_mlx.data.holdout import split_holdout
from hjepa_mlx.errors import UserError


class _Numbers:
    name, num_classes, labelled = "numbers", 10, True

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def load(self, i):
        return np.full((2, 2, 3), i, np.uint8), i % 10


def _ids(subset):
    return [int(subset.load(i)[0][0, 0, 0]) for i in range(len(subset))]


def test_holdout_is_disjoint_complete_and_seeded():
    data = _Numbers(50)
    train, held = split_holdout(data, 12, seed=3)
    assert len(train) == 38 and len(held) == 12
    assert sorted(_ids(train) + _ids(held)) == list(range(50))
    assert _ids(train) == sorted(_ids(train))                       # the train part keeps the dataset order
    assert _ids(split_holdout(data, 12, seed=3)[1]) == _ids(held)    # same seed, same images
    assert _ids(split_holdout(data, 12, seed=4)[1]) != _ids(held)
    assert held.name == "numbers" and held.num_classes == 10 and held.load(0)[1] == _ids(held)[0] % 10


@pytest.mark.parametrize("count", [0, 50, 60])
def test_holdout_must_leave_training_images(count):
    with pytest.raises(UserError, match="data.val_holdout"):
        split_holdout(_Numbers(50), count, seed=0)


def test_the_trainer_never_trains_on_validation_images(tmp_path):
    from hjepa_mlx.build import build_loaders
    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.plan import make_plan

    config = load_config(None, ["data.synthetic.num_train=40", "data.batch_size=4", "data.val_holdout=6"],
                         raw={"data": {"dataset": "synthetic"}}).config
    loaders = build_loaders(config, make_plan(config))
    train, val = loaders.train.dataset, loaders.val.dataset
    assert len(val) == 8                                      # 6 rounded up to whole batches of 4
    assert set(train.indices).isdisjoint(val.indices) and len(train) + len(val) == 40
