"""Wide ResNet (pre-activation; Zagoruyko & Komodakis 2016) with group norm and leaky ReLU.

Differences from the original, as in the paper: batch norm is replaced by group norm
(no running statistics, no mutable collections, so ``model.apply(params, x)`` is a pure
function) and ReLU by leaky ReLU (slope 0.01). No dropout.

Group norm groups: ``num_groups(c) = min(32, c // 4)``, i.e. 32 groups (Wu & He 2018)
where the width allows it, and never fewer than 4 channels per group (a 16-channel layer
gets 4 groups of 4 rather than per-channel instance norm). WRN-k=2 widths 16/32/64/128
give 4/8/16/32 groups. The group count does not change the parameter count.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from glocal_cli.models.conv import make_conv

Array = Any

# He-normal, fan-out: the initialization of the reference WRN implementation.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def num_groups(channels: int) -> int:
    """Group-norm group count for ``channels`` channels: ``min(32, channels // 4)``, >= 1."""
    return max(1, min(32, channels // 4))


class WideBasicBlock(nn.Module):
    """Pre-activation basic block: GN -> act -> conv3x3(stride) -> GN -> act -> conv3x3,
    plus identity, or a 1x1 conv of the activated input when the shape changes.

    ``[B, H, W, Cin]`` -> ``[B, H/stride, W/stride, features]``.
    """

    features: int
    strides: int = 1
    conv_impl: str = "patches"
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = lambda h: nn.leaky_relu(h, self.negative_slope)  # noqa: E731
        cin = x.shape[-1]
        o = act(nn.GroupNorm(num_groups(cin), name="norm1")(x))
        y = make_conv(self.conv_impl, self.features, (3, 3), strides=self.strides, padding="SAME",
                      use_bias=False, kernel_init=conv_init, name="conv1")(o)
        y = act(nn.GroupNorm(num_groups(self.features), name="norm2")(y))
        y = make_conv(self.conv_impl, self.features, (3, 3), padding="SAME",
                      use_bias=False, kernel_init=conv_init, name="conv2")(y)
        if cin != self.features or self.strides != 1:
            x = make_conv(self.conv_impl, self.features, (1, 1), strides=self.strides, padding="VALID",
                          use_bias=False, kernel_init=conv_init, name="shortcut")(o)
        return x + y


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32x3 images.

    conv3x3(16) -> 3 groups of ``(depth - 4) / 6`` blocks with widths 16k, 32k, 64k
    (strides 1, 2, 2) -> GN -> leaky ReLU -> global average pool -> dense
    ``num_classes``. Convolutions have no bias. Input ``[B, 32, 32, 3]`` -> logits
    ``[B, num_classes]``. Parameters (10 classes): WRN-28-2 1,467,610; WRN-16-2 691,674.
    """

    depth: int = 28
    widen_factor: int = 2
    num_classes: int = 10
    conv_impl: str = "patches"
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if (self.depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {self.depth}")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        x = make_conv(self.conv_impl, 16, (3, 3), padding="SAME", use_bias=False,
                      kernel_init=conv_init, name="stem")(x)
        for g, (width, stride) in enumerate(((16 * k, 1), (32 * k, 2), (64 * k, 2))):
            for b in range(n):
                x = WideBasicBlock(width, stride if b == 0 else 1, self.conv_impl,
                                   self.negative_slope, name=f"group{g}_block{b}")(x)
        x = nn.leaky_relu(nn.GroupNorm(num_groups(x.shape[-1]), name="norm")(x), self.negative_slope)
        x = jnp.mean(x, axis=(-3, -2))
        return nn.Dense(self.num_classes, name="head")(x)
