"""normlab's small conv net, written to the network convention (models/build.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from normlab.config.schema import ModelConfig
from normlab.models.blocks import HiddenBlock


class CNN(nn.Sequential):
    """[input batch norm] -> `depth` conv blocks (conv3x3, 2-D norm, act, 2x2 max-pool) with
    `width`, 2 `width`, ... channels -> flatten -> linear head. An nn.Sequential of named
    children, like the MLP, so that the stacked network can batch it."""

    config_schema = ModelConfig

    def __init__(
        self,
        *,
        norm_layer: Callable[..., nn.Module],
        act_layer: Callable[[], nn.Module],
        num_classes: int,
        input_shape: Sequence[int],
        depth: int = 2,
        width: int = 16,
        input_norm: bool = False,
        norm_before_act: bool = True,
        linear_bias: bool = True,
        dropout: float = 0.0,
    ):
        if len(input_shape) != 3:
            raise ValueError(
                f"the CNN needs image inputs (C, H, W), not inputs of shape {tuple(input_shape)}; "
                "use model=mlp"
            )
        channels, height, width_px = input_shape
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if input_norm:
            layers["input_norm"] = nn.BatchNorm2d(channels)
        for index, out_channels in enumerate(self.norm_widths(depth=depth, width=width), start=1):
            pool = nn.MaxPool2d(2) if min(height, width_px) >= 2 else None
            layers[f"layer{index}"] = HiddenBlock(
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=linear_bias),
                norm_layer(out_channels),  # image data: the 2-D form
                act_layer(),
                norm_before_act=norm_before_act,
                dropout_p=dropout,
                pool=pool,
            )
            if pool is not None:
                height, width_px = height // 2, width_px // 2
            channels = out_channels
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(channels * height * width_px, num_classes)
        super().__init__(layers)

    @staticmethod
    def norm_widths(*, depth: int = 2, width: int = 16, **_) -> list[int]:
        """The channels of each conv block's norm (doubling per block)."""
        return [width * 2**i for i in range(depth)]
