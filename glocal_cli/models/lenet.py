"""LeNet of the paper (MNIST-family and SVHN optimizer-HPO tasks)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from glocal_cli.models.conv import make_conv, max_pool

Array = Any


class LeNet(nn.Module):
    """conv 5x5x16 (VALID) -> leaky ReLU -> max-pool 2 -> conv 5x5x16 (VALID) -> leaky ReLU
    -> max-pool 2 -> flatten -> dense 32 -> leaky ReLU -> dense ``num_classes``.

    Input ``[B, H, W, C]`` (any H, W >= 16 and C, e.g. 28x28x1 or 32x32x3) -> logits
    ``[B, num_classes]``. 15,386 parameters for 28x28x1 input and 10 classes
    (416 + 6,416 + 8,224 + 330). Parameter names: ``conv1``, ``conv2``, ``dense1``,
    ``dense2``; identical for both ``conv_impl`` values ("patches": ``PatchConv``,
    fast inside ``lax.scan`` on CPU; "lax": ``nn.Conv``).
    """

    num_classes: int = 10
    conv_impl: str = "patches"
    negative_slope: float = 0.01

    @nn.compact
    def __call__(self, x: Array) -> Array:
        act = lambda h: nn.leaky_relu(h, self.negative_slope)  # noqa: E731
        # With patches (the CPU path) pooling is a reshape + max, whose gradient avoids
        # XLA:CPU's slow select_and_scatter; with lax (GPU) it is nn.max_pool.
        pool = (lambda h: max_pool(h, 2)) if self.conv_impl == "patches" else (lambda h: nn.max_pool(h, (2, 2), strides=(2, 2)))
        x = make_conv(self.conv_impl, 16, (5, 5), padding="VALID", name="conv1")(x)
        x = pool(act(x))
        x = make_conv(self.conv_impl, 16, (5, 5), padding="VALID", name="conv2")(x)
        x = pool(act(x))
        x = jnp.reshape(x, (x.shape[0], -1))
        x = act(nn.Dense(32, name="dense1")(x))
        return nn.Dense(self.num_classes, name="dense2")(x)
