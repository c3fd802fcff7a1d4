"""Configuration: schema (frozen dataclasses), legacy aliases, strict loader, cross-field rules."""

from hjepa_mlx.config.loader import LoadedConfig, dump_yaml, load_config, to_dict
from hjepa_mlx.config.schema import Config

__all__ = ["Config", "LoadedConfig", "load_config", "dump_yaml", "to_dict"]
