"""Build the network of `model._target_` through normlab's network convention.

A network for normlab is any nn.Module class whose constructor takes, as keyword arguments:

- `norm_layer(num_features, *, spatial=None) -> nn.Module`: the `norm` group's layer over
  `num_features` features. `spatial=None` gives the form of the data: the 2-D (channel) form
  for image inputs (C, H, W), the 1-D form otherwise; `spatial=False` asks for the 1-D form
  on image data (an MLP on flattened images), `spatial=True` for the 2-D form;
- `act_layer() -> nn.Module`: a new module of the `activation` group's non-linearity;
- `num_classes` and `input_shape` (one example's shape, without the batch dimension);
- its own arguments: the other keys of `model` (`model.width=32`);
- optionally the normlab features it implements, passed only when the constructor names them:
  `norm_before_act` (norm.placement), `linear_bias` (norm.linear_bias), `dropout` and
  `dropconnect` (the drop probabilities of those regularizers). A config that asks for one the
  network does not take is refused with one line before training.

normlab's own `mlp`, `cnn`, `vgg` and `resnet_small` are built this way, like any other.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from normlab.config.bounds import check_bounds
from normlab.config.errors import ConfigError
from normlab.config.targets import import_target
from normlab.models.activations import activation_from_config
from normlab.models.initialization import initialize
from normlab.models.norms import build_norm, linear_needs_bias, norm_settings

CONVENTION = ("norm_layer", "act_layer", "num_classes", "input_shape")
# where normlab takes each argument it passes from (a `model` key cannot set them)
_SOURCES = {
    "norm_layer": "the norm group",
    "act_layer": "the activation group",
    "num_classes": "the data",
    "input_shape": "the data",
    "norm_before_act": "norm.placement",
    "linear_bias": "norm.linear_bias",
    "dropout": "regularizer=dropout",
    "dropconnect": "regularizer=dropconnect",
}
# networks with a batched form for several members (normlab.models.member_layers); others
# train as stacks of one
STACKABLE = ("normlab.models.mlp.MLP", "normlab.models.cnn.CNN", "normlab.models.vgg.VGG")
_GUIDE = 'docs/extending.md, "Your own network"'


def network_target(model_cfg: DictConfig) -> str:
    """The dotted path in `model._target_`."""
    if "_target_" not in model_cfg or OmegaConf.is_missing(model_cfg, "_target_"):
        raise ConfigError(
            "model._target_ is not set: name the network class, e.g. "
            "model=custom model._target_=mypackage.nets.Net"
        )
    return str(model_cfg._target_)


def network_class(model_cfg: DictConfig) -> Callable[..., nn.Module]:
    """The class `model._target_` names, imported; one-line errors for what cannot be one."""
    target = network_target(model_cfg)
    where = f"model._target_={target}"
    network = import_target(where, target, "package.module.Class")
    name = target.rpartition(".")[2]
    if not (inspect.isclass(network) and issubclass(network, nn.Module)):
        raise ConfigError(f"{where}: {name} is not an nn.Module class")
    parameters = _parameters(network)
    missing = [p for p in CONVENTION if p not in parameters and not _takes_any(network)]
    if missing:
        raise ConfigError(
            f"{where}: its constructor takes no {', '.join(missing)}; a network for normlab "
            f"takes norm_layer, act_layer, num_classes and input_shape ({_GUIDE})"
        )
    return network


def _parameters(network: Callable) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(network).parameters)


def _takes_any(network: Callable) -> bool:
    """Whether the constructor has **kwargs."""
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(network).values())


def network_arguments(model_cfg: DictConfig, network: Callable) -> dict:
    """The network's own arguments: the keys of `model` but `_target_`, typed and bounded by
    the class's `config_schema` dataclass when it has one."""

    schema = getattr(network, "config_schema", None)
    typed = model_cfg
    if schema is not None:
        try:
            typed = OmegaConf.merge(OmegaConf.structured(schema), model_cfg)
        except OmegaConfBaseException as exc:
            key = f"model.{exc.full_key}" if getattr(exc, "full_key", None) else "model"
            reason = str(getattr(exc, "msg", exc)).strip().splitlines()[0]
            raise ConfigError(f"{key}: {reason}") from None
        check_bounds(typed, schema, "model.")
    arguments = OmegaConf.to_container(typed, resolve=True, enum_to_str=True)
    arguments.pop("_target_", None)
    return arguments


def _feature_arguments(cfg) -> dict:
    """The normlab features a network may take, with the values `cfg` gives them."""
    regularizer, norm = cfg.regularizer, norm_settings(cfg.norm)
    return {
        "norm_before_act": norm.placement == "before_activation",
        "linear_bias": linear_needs_bias(norm),
        "dropout": regularizer.dropout.p if regularizer.get("dropout") else 0.0,
        "dropconnect": regularizer.dropconnect.p if regularizer.get("dropconnect") else 0.0,
    }


def _asked_for(cfg) -> dict[str, str]:
    """The features `cfg` asks for (feature -> the setting asking), which the network must take."""
    asked, norm = {}, norm_settings(cfg.norm)
    if norm.placement != "before_activation":
        asked["norm_before_act"] = f"norm.placement={getattr(norm.placement, 'value', '')}"
    if norm.linear_bias is not None:
        asked["linear_bias"] = f"norm.linear_bias={norm.linear_bias}"
    for name in ("dropout", "dropconnect"):
        if cfg.regularizer.get(name):
            asked[name] = f"regularizer={name}"
    return asked


def check_network(cfg) -> None:
    """`model` names a network that takes the convention, its keys and the features the config
    asks for; raises ConfigError with one line (run before anything is built)."""
    network = network_class(cfg.model)
    target = network_target(cfg.model)
    arguments = network_arguments(cfg.model, network)
    parameters = _parameters(network)
    for key in arguments:
        if key in _SOURCES:
            raise ConfigError(
                f"model.{key}: normlab passes {key} itself (from {_SOURCES[key]}); remove the key"
            )
        if key not in parameters and not _takes_any(network):
            own = [p for p in parameters if p not in _SOURCES]
            raise ConfigError(
                f"model.{key}: {target} takes no argument {key}; its own arguments: "
                f"{', '.join(own) or 'none'}"
            )
    for name, parameter in parameters.items():
        needed = parameter.default is inspect.Parameter.empty and parameter.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if needed and name not in CONVENTION and name not in arguments:
            raise ConfigError(
                f"model.{name}: {target} needs it (no default); add +model.{name}=<value>"
            )
    for feature, setting in _asked_for(cfg).items():
        if feature not in parameters:
            raise ConfigError(
                f"{setting}: model._target_={target} takes no {feature} argument, so it cannot "
                f"apply it; drop the setting or add {feature} to the network ({_GUIDE})"
            )


def norm_factory(norm_cfg, input_shape: tuple[int, ...]) -> Callable[..., nn.Module]:
    """The `norm_layer` a network is given: the `norm` group's layer, 2-D on image data."""
    image_data = len(input_shape) == 3

    def norm_layer(num_features: int, *, spatial: bool | None = None) -> nn.Module:
        return build_norm(
            norm_cfg, num_features, spatial=image_data if spatial is None else spatial
        )

    return norm_layer


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network of `cfg.model` (initialization is applied separately), checked by one
    eval-mode forward pass on two zero examples: a network that cannot take the data's shape
    or gives the wrong number of outputs fails here, in one line, before training."""
    network = network_class(cfg.model)
    target = network_target(cfg.model)
    parameters = _parameters(network)
    features = {k: v for k, v in _feature_arguments(cfg).items() if k in parameters}
    try:
        model = network(
            norm_layer=norm_factory(cfg.norm, tuple(input_shape)),
            act_layer=functools.partial(activation_from_config, cfg.activation),
            num_classes=num_classes,
            input_shape=tuple(input_shape),
            **network_arguments(cfg.model, network),
            **features,
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model._target_={target}: {_one_line(exc)}") from None
    _check_forward(model, target, tuple(input_shape), num_classes)
    return model


def _one_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


@torch.no_grad()
def _check_forward(
    model: nn.Module, target: str, input_shape: tuple[int, ...], num_classes: int
) -> None:
    modes = {module: module.training for module in model.modules()}
    model.eval()  # no batch statistics, no dropout draws: the pass changes nothing
    try:
        out = model(torch.zeros(2, *input_shape))
    except Exception as exc:
        raise ConfigError(
            f"model._target_={target}: its forward pass fails on a batch of shape "
            f"{(2, *input_shape)} ({type(exc).__name__}: {_one_line(exc)})"
        ) from None
    finally:
        for module, training in modes.items():
            module.training = training
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model._target_={target}: gives outputs of shape {shape} for a batch of 2; "
            f"normlab needs logits of shape (2, {num_classes})"
        )


def seeded_network(
    cfg, input_shape: tuple[int, ...], num_classes: int, init_seed: int
) -> nn.Module:
    """The network of `cfg` with its initial weights drawn from `init_seed`: the one start
    that training, a stack's members, gradcheck and the bench share."""
    import pytorch_lightning as pl  # here: the config checks import this module, and need no pl

    pl.seed_everything(init_seed, verbose=False)
    network = build_model(cfg, input_shape, num_classes)
    initialize(network, instantiate(cfg.init.weight), instantiate(cfg.init.bias))
    return network
