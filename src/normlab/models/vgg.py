"""A VGG-style conv net (Simonyan & Zisserman 2015), the network of Santurkar et al. 2018's
CIFAR-10 experiments, written to the network convention (models/build.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from torch import nn

from normlab.config.schema import VGGConfig
from normlab.models.blocks import HiddenBlock

# stage s has width * STAGE_WIDTHS[s] channels (VGG's 64, 128, 256, 512, 512 at width 64)
STAGE_WIDTHS = (1, 2, 4, 8, 8)


class VGG(nn.Sequential):
    """[input batch norm] -> stages of conv3x3 blocks (conv, 2-D norm, act), each stage ending
    in a 2x2 max-pool while the map is at least 2x2 -> flatten -> linear head.

    `convs_per_stage` [2, 2, 3, 3, 3] is VGG-16 ([1, 1, 2, 2, 2]: VGG-11, [2, 2, 4, 4, 4]:
    VGG-19); on 32x32 CIFAR images five pools leave a 1x1 map of 8 `width` channels, and the
    head is one linear layer, as CIFAR versions of VGG do. A flat nn.Sequential of hidden
    blocks, like the CNN, so a stack of them trains as one batched network."""

    config_schema = VGGConfig

    def __init__(
        self,
        *,
        norm_layer: Callable[..., nn.Module],
        act_layer: Callable[[], nn.Module],
        num_classes: int,
        input_shape: Sequence[int],
        convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3),
        width: int = 64,
        input_norm: bool = False,
        norm_before_act: bool = True,
        linear_bias: bool = True,
        dropout: float = 0.0,
    ):
        if len(input_shape) != 3:
            raise ValueError(
                f"VGG needs image inputs (C, H, W), not inputs of shape {tuple(input_shape)}; "
                "use model=mlp"
            )
        stages = list(convs_per_stage)
        if not 1 <= len(stages) <= len(STAGE_WIDTHS) or min(stages) < 1:
            raise ValueError(
                f"model.convs_per_stage={stages}: give 1 to {len(STAGE_WIDTHS)} stages of at "
                "least one conv each, e.g. [2,2,3,3,3] (VGG-16)"
            )
        channels, height, width_px = input_shape
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        if input_norm:
            layers["input_norm"] = nn.BatchNorm2d(channels)
        for stage, convs in enumerate(stages, start=1):
            out_channels = width * STAGE_WIDTHS[stage - 1]
            for conv in range(1, convs + 1):
                ends_stage = conv == convs and min(height, width_px) >= 2
                layers[f"stage{stage}_conv{conv}"] = HiddenBlock(
                    nn.Conv2d(channels, out_channels, 3, padding=1, bias=linear_bias),
                    norm_layer(out_channels),  # image data: the 2-D form
                    act_layer(),
                    norm_before_act=norm_before_act,
                    dropout_p=dropout,
                    pool=nn.MaxPool2d(2) if ends_stage else None,
                )
                channels = out_channels
            if min(height, width_px) >= 2:
                height, width_px = height // 2, width_px // 2
        layers["flatten"] = nn.Flatten()
        layers["head"] = nn.Linear(channels * height * width_px, num_classes)
        super().__init__(layers)

    @staticmethod
    def norm_widths(
        *, convs_per_stage: Sequence[int] = (2, 2, 3, 3, 3), width: int = 64, **_
    ) -> list[int]:
        """The channels of every conv block's norm."""
        return [
            width * STAGE_WIDTHS[stage]
            for stage, convs in enumerate(list(convs_per_stage)[: len(STAGE_WIDTHS)])
            for _ in range(convs)
        ]
