"""Shared test setup: load the optimized BLAS before anything imports mlx.core."""

import hjepa_mlx  # noqa: F401  (must run before mlx.core is imported; see hjepa_mlx/blas.py)
from hjepa_mlx import blas


def pytest_report_header(config):
    return blas.describe()
