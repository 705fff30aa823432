"""Build the network of `model.name` from the model, norm, activation and regularizer groups."""

from __future__ import annotations

from collections import OrderedDict

from hydra.utils import instantiate
from torch import nn

from normlab.config.errors import ConfigError
from normlab.config.schema import ModelName
from normlab.models.activations import activation_from_config
from normlab.models.blocks import HiddenBlock
from normlab.models.dropconnect import DropConnectLinear
from normlab.models.initialization import initialize
from normlab.models.norms import linear_needs_bias, norm_from_config


def hidden_widths(model_cfg) -> list[int]:
    """Units (MLP) or channels (CNN, doubling per block) of each hidden block."""
    if ModelName(model_cfg.name) is ModelName.cnn:
        return [model_cfg.width * 2**i for i in range(model_cfg.depth)]
    return [model_cfg.width] * model_cfg.depth


def _probabilities(reg_cfg) -> tuple[float, float]:
    dropout = reg_cfg.dropout.p if reg_cfg.get("dropout") else 0.0
    dropconnect = reg_cfg.dropconnect.p if reg_cfg.get("dropconnect") else 0.0
    return dropout, dropconnect


def build_mlp(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten -> [input batch norm] -> `depth` hidden blocks -> linear classifier."""
    dropout, dropconnect = _probabilities(cfg.regularizer)
    in_features = 1
    for size in input_shape:
        in_features *= size
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    if cfg.model.input_norm:
        layers["input_norm"] = nn.BatchNorm1d(in_features)
    bias = linear_needs_bias(cfg.norm)
    before = cfg.norm.placement == "before_activation"
    for index, width in enumerate(hidden_widths(cfg.model), start=1):
        linear = (
            DropConnectLinear(in_features, width, bias=bias, p=dropconnect)
            if dropconnect
            else nn.Linear(in_features, width, bias=bias)
        )
        layers[f"layer{index}"] = HiddenBlock(
            linear,
            norm_from_config(cfg.norm, width),
            activation_from_config(cfg.activation),
            norm_before_act=before,
            dropout_p=dropout,
        )
        in_features = width
    layers["head"] = nn.Linear(in_features, num_classes)
    return nn.Sequential(layers)


def build_cnn(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """[input batch norm] -> `depth` conv blocks (conv3x3, 2-D norm, act, 2x2 pool) -> linear."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model=cnn needs image data (C, H, W); data={cfg.data.name.value} gives "
            f"inputs of shape {input_shape}. Use model=mlp"
        )
    if cfg.regularizer.get("dropconnect"):
        raise ConfigError(
            "regularizer=dropconnect applies to model=mlp only; drop it for model=cnn"
        )
    dropout, _ = _probabilities(cfg.regularizer)
    channels, height, width_px = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if cfg.model.input_norm:
        layers["input_norm"] = nn.BatchNorm2d(channels)
    bias = linear_needs_bias(cfg.norm)
    before = cfg.norm.placement == "before_activation"
    for index, out_channels in enumerate(hidden_widths(cfg.model), start=1):
        pool = nn.MaxPool2d(2) if min(height, width_px) >= 2 else None
        layers[f"layer{index}"] = HiddenBlock(
            nn.Conv2d(channels, out_channels, 3, padding=1, bias=bias),
            norm_from_config(cfg.norm, out_channels, spatial=True),
            activation_from_config(cfg.activation),
            norm_before_act=before,
            dropout_p=dropout,
            pool=pool,
        )
        if pool is not None:
            height, width_px = height // 2, width_px // 2
        channels = out_channels
    layers["flatten"] = nn.Flatten()
    layers["head"] = nn.Linear(channels * height * width_px, num_classes)
    return nn.Sequential(layers)


def build_model(cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network of `cfg.model.name` (initialization is applied separately)."""
    if ModelName(cfg.model.name) is ModelName.cnn:
        return build_cnn(cfg, input_shape, num_classes)
    return build_mlp(cfg, input_shape, num_classes)


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


def hidden_blocks(model: nn.Module) -> dict[str, HiddenBlock]:
    """The model's hidden blocks by name (`layer1`, `layer2`, ...)."""
    return {
        name: module for name, module in model.named_children() if isinstance(module, HiddenBlock)
    }
