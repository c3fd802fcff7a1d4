"""Datasets (synthetic, CIFAR, STL-10, ImageFolder/ImageNet-100), transforms, multi-dataset sampling, loader.

Entry points: registry.{build_dataset, register_dataset, DatasetEntry}, transforms.{TransformSpec,
make_train_transform, make_eval_transform, make_multicrop_transform}, multi.MultiDataset, loader.BatchLoader.
NumPy/Pillow only (no MLX).
"""
