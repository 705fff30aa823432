"""A small pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks",
CIFAR-style: three stages of width w, 2w, 4w), written to the network convention: it is told its
norm and activation through `norm_layer` / `act_layer` like torchvision's ResNet, so every norm
and activation option of normlab applies to it. `model=resnet_small`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn

from normlab.config.schema import ResNetConfig


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # no bias: every conv here feeds a norm (or the residual sum), which makes a bias redundant
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """norm -> act -> conv3x3 (stride) -> norm -> act -> conv3x3, plus the shortcut: the input
    itself, or a strided 1x1 conv of the normalized input where the shape changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        norm_layer: Callable[..., nn.Module],
        act_layer: Callable[[], nn.Module],
    ):
        super().__init__()
        self.norm1, self.act1 = norm_layer(in_channels), act_layer()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.norm2, self.act2 = norm_layer(out_channels), act_layer()
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(x))
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.act2(self.norm2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """stem conv3x3 -> stages of `blocks_per_stage` blocks (w, 2w, 4w channels; the last two
    halve the resolution) -> norm -> act -> global average pool -> linear head.
    `blocks_per_stage` = n gives the 6n + 2 layers of the CIFAR ResNets (n = 3: ResNet-20)."""

    config_schema = ResNetConfig

    def __init__(
        self,
        *,
        norm_layer: Callable[..., nn.Module],
        act_layer: Callable[[], nn.Module],
        num_classes: int,
        input_shape: Sequence[int],
        width: int = 16,
        blocks_per_stage: int = 1,
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(
                f"the ResNet needs image inputs (C, H, W), not inputs of shape "
                f"{tuple(input_shape)}; use model=mlp"
            )
        widths = self.norm_widths(width=width)
        self.stem = _conv3x3(input_shape[0], widths[0])
        channels = widths[0]
        for stage, out_channels in enumerate(widths, start=1):
            blocks = OrderedDict()
            for index in range(1, blocks_per_stage + 1):
                stride = 2 if stage > 1 and index == 1 else 1
                blocks[f"block{index}"] = PreActBlock(
                    channels, out_channels, stride, norm_layer, act_layer
                )
                channels = out_channels
            self.add_module(f"stage{stage}", nn.Sequential(blocks))
        self.final_norm, self.final_act = norm_layer(channels), act_layer()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(x))))
        x = self.pool(self.final_act(self.final_norm(x)))
        return self.head(x.flatten(1))

    @staticmethod
    def norm_widths(*, width: int = 16, **_) -> list[int]:
        """The channels of the three stages (every norm normalizes one of them)."""
        return [width, 2 * width, 4 * width]
