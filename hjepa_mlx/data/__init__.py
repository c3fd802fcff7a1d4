"""Datasets (synthetic, CIFAR, STL-10, ImageFolder/ImageNet-100), transforms, multi-dataset sampling, loader."""
