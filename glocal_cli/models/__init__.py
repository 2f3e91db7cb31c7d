"""Models of the paper (Flax linen): LeNet, WideResNet (group norm), the meta MLP.

All are pure functions ``model.apply(params, x)`` (no mutable collections), fast inside
``lax.scan`` on CPU (convolutions as patches + matmul by default, ``conv_impl="patches"``;
``conv_impl="lax"`` uses ``nn.Conv``) and differentiable in forward and reverse mode.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import flax.linen as nn

from glocal_cli.models.conv import CONV_IMPLS, PatchConv, extract_patches, make_conv
from glocal_cli.models.lenet import LeNet
from glocal_cli.models.meta_mlp import MetaMLP
from glocal_cli.models.wrn import WideBasicBlock, WideResNet, num_groups

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "wrn28_2": partial(WideResNet, depth=28, widen_factor=2),
    "wrn16_2": partial(WideResNet, depth=16, widen_factor=2),
}


def get_model(name: str, num_classes: int = 10, conv_impl: str = "patches") -> nn.Module:
    """Builds the classifier ``name`` ("lenet", "wrn28_2", "wrn16_2").

    Raises ``ValueError`` (one line, naming the allowed values) for an unknown ``name``
    or ``conv_impl``.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"unknown conv_impl {conv_impl!r}; expected one of {list(CONV_IMPLS)}")
    return MODELS[name](num_classes=num_classes, conv_impl=conv_impl)


__all__ = [
    "CONV_IMPLS",
    "MODELS",
    "LeNet",
    "MetaMLP",
    "PatchConv",
    "WideBasicBlock",
    "WideResNet",
    "extract_patches",
    "get_model",
    "make_conv",
    "num_groups",
]
