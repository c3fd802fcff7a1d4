"""The supervised ceiling: the config's encoder trained *with labels* for the same number of steps.

python benchmarks/supervised.py CONFIG --data-path P --steps S [--out JSON] [--set KEY=VALUE ...]

A calibration for `benchmarks/quality.py`: the same encoder (the config's context encoder, same init and
seed), the same augmentations, batch size, AdamW (lr, betas, weight decay, warm-up, cosine, clipping from
the config) and the same number of optimizer steps, trained with cross-entropy through a linear head on
the mean-pooled, affine-free normalised tokens (the features quality.py evaluates). It reports the test
accuracy of that head and k-NN (cosine, k = 1 and 20) of the pooled features - what labels make of this
encoder in this budget, the number a self-supervised run of the same budget can at best approach.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, machine, print_machine, write_json  # noqa: E402  (loads BLAS first)

from hjepa_mlx.errors import UserError  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--data-path", required=True, help="dataset root, e.g. ../shared/data/cifar10-dev")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps (quality.py's run: its 'steps')")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", help="JSON output (default: benchmarks/results/supervised_<config>.json)")
    args = p.parse_args(argv)
    info = machine()
    print_machine(info)
    try:
        return run(args, info)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args, info: dict) -> int:
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import numpy as np

    from hjepa_mlx import kernels
    from hjepa_mlx.build import build_model, labelled_loaders, open_labelled_train, transform_spec
    from hjepa_mlx.config import load_config
    from hjepa_mlx.config.plan import make_plan
    from hjepa_mlx.data.loader import BatchLoader
    from hjepa_mlx.data.transforms import make_train_transform
    from hjepa_mlx.evaluate.features import extract_features
    from hjepa_mlx.evaluate.knn import knn_accuracy
    from hjepa_mlx.models.hierarchy import TARGET_LN_EPS

    config = load_config(args.config, args.overrides + [f"data.data_path={args.data_path}"]).config
    mx.random.seed(config.experiment.seed)
    model = build_model(config, make_plan(config), quiet=True)
    (name, bank_loader, test_loader), = labelled_loaders(config, None, args.data_path, config.data.batch_size)
    labelled = open_labelled_train(config, name, args.data_path)
    num_classes = int(max(int(labelled.load(i)[1]) for i in range(len(labelled)))) + 1

    class Classifier(nn.Module):
        def __init__(self, encoder, dim: int):
            super().__init__()
            self.encoder = encoder
            self.head = nn.Linear(dim, num_classes)

        def features(self, images):
            return kernels.layer_norm(self.encoder(images), None, None, TARGET_LN_EPS).mean(axis=1)

        def __call__(self, images):
            return self.head(self.features(images))

    t = config.training
    net = Classifier(model.encoder, config.model.embed_dim or model.encoder.norm.weight.shape[0])
    train = BatchLoader(labelled, config.data.batch_size, make_train_transform(transform_spec(config),
                        config.data.image_size), seed=config.experiment.seed, num_workers=config.data.num_workers)
    warmup = max(1, min(args.steps - 1, round(t.warmup_epochs * len(train))))
    schedule = optim.join_schedules([optim.linear_schedule(t.lr * t.warmup_lr_ratio, t.lr, warmup),
                                     optim.cosine_decay(t.lr, args.steps - warmup, t.lr * t.min_lr_ratio)], [warmup])
    opt = optim.AdamW(schedule, betas=list(t.betas), weight_decay=t.weight_decay)
    state = [net.state, opt.state]

    def loss_fn(images, labels):
        return nn.losses.cross_entropy(net(images), labels).mean()

    @partial(mx.compile, inputs=state, outputs=state)
    def step(images, labels):
        loss, grads = nn.value_and_grad(net, loss_fn)(images, labels)
        if t.clip_grad:
            grads, _ = optim.clip_grad_norm(grads, t.clip_grad)
        opt.update(net, grads)
        return loss

    start, done, epoch = time.perf_counter(), 0, 0
    while done < args.steps:
        for batch in train.epoch(epoch):
            loss = step(mx.array(batch.images), mx.array(batch.labels))
            mx.eval(state, loss)
            done += 1
            if done % 50 == 0 or done == args.steps:
                print(f"step {done}/{args.steps}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
            if done == args.steps:
                break
        epoch += 1
    train_s = time.perf_counter() - start

    encode = mx.compile(net.features)
    bank_x, bank_y, _ = extract_features(encode, bank_loader.epoch(0))
    test_x, test_y, _ = extract_features(encode, test_loader.epoch(0))
    accuracy = float(np.mean(np.argmax(np.array(net.head(mx.array(test_x))), axis=1) == test_y))
    knn = knn_accuracy(bank_x, bank_y, test_x, test_y, k_values=(1, 20))
    result = {"machine": info, "config": args.config, "overrides": args.overrides, "steps": args.steps,
              "train_seconds": train_s, "test_accuracy": accuracy, "knn_top1_k1": knn[1], "knn_top1_k20": knn[20],
              "bank": len(bank_y), "test": len(test_y)}
    print(f"\nsupervised {Path(args.config).stem}, {args.steps} steps in {train_s / 60:.1f} min: test accuracy "
          f"{accuracy:.3f}; k-NN@1 {knn[1]:.3f}, k-NN@20 {knn[20]:.3f} ({len(bank_y)} bank / {len(test_y)} test)")
    out = args.out or RESULTS / f"supervised_{Path(args.config).stem}.json"
    write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
