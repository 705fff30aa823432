"""normlab's fully connected network, written to the network convention (models/build.py)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from normlab.config.schema import ModelConfig
from normlab.models.blocks import HiddenBlock
from normlab.models.dropconnect import DropConnectLinear


class MLP(nn.Sequential):
    """Flatten -> [input batch norm] -> `depth` hidden blocks of `width` units -> linear head.

    An nn.Sequential of named children (`flatten`, `input_norm`, `layer1`..., `head`): the
    batched forward (normlab.models.member_layers) runs several of them child by child.
    """

    config_schema = ModelConfig

    def __init__(
        self,
        *,
        norm_layer: Callable[..., nn.Module],
        act_layer: Callable[[], nn.Module],
        num_classes: int,
        input_shape: Sequence[int],
        depth: int = 3,
        width: int = 100,
        input_norm: bool = False,
        norm_before_act: bool = True,
        linear_bias: bool = True,
        dropout: float = 0.0,
        dropconnect: float = 0.0,
    ):
        in_features = math.prod(input_shape)
        layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
        if input_norm:
            layers["input_norm"] = nn.BatchNorm1d(in_features)
        for index, units in enumerate(self.norm_widths(depth=depth, width=width), start=1):
            linear = (
                DropConnectLinear(in_features, units, bias=linear_bias, p=dropconnect)
                if dropconnect
                else nn.Linear(in_features, units, bias=linear_bias)
            )
            layers[f"layer{index}"] = HiddenBlock(
                linear,
                norm_layer(units, spatial=False),  # flattened features, even of images
                act_layer(),
                norm_before_act=norm_before_act,
                dropout_p=dropout,
            )
            in_features = units
        layers["head"] = nn.Linear(in_features, num_classes)
        super().__init__(layers)

    @staticmethod
    def norm_widths(*, depth: int = 3, width: int = 100, **_) -> list[int]:
        """The features of each hidden block's norm (what norm.num_groups must divide)."""
        return [width] * depth
