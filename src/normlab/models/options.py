"""A config typed by the option tables: the `norm` and `activation` nodes by their options'
schemas (normlab.models.norms.NORMS, normlab.models.activations.ACTIVATIONS, or a user's
entry), and a whole resolved config (a stack member's, a DDP rank's, a saved run's)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from normlab.config.schema import TrainConfig
from normlab.models.activations import activation_settings
from normlab.models.norms import norm_settings


def type_options(cfg: DictConfig) -> None:
    """The `norm` and `activation` nodes typed by their options' schemas, in place (ConfigError
    on a wrong key or value)."""
    cfg.norm = norm_settings(cfg.norm)
    cfg.activation = activation_settings(cfg.activation)


def typed_config(resolved: dict | DictConfig) -> DictConfig:
    """A resolved config as the typed config the schemas make of it (enums, bounds, each
    option's own schema)."""
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), resolved)
    type_options(cfg)
    return cfg
