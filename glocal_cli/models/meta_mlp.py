"""Data-reweighting meta module mu_phi of the paper: per-example loss -> weight."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

Array = Any


class MetaMLP(nn.Module):
    """MLP 1 -> ``hidden`` -> 1 mapping each example's loss to a weight in (0, 1).

    ReLU hidden layer, sigmoid output (so weights are positive and bounded, in (0, 1);
    the inner loss is ``sum_i L_i * mu(L_i)``, see SPEC section 4). With ``hidden=128``
    it has exactly 385 parameters (1*128 + 128 + 128*1 + 1).

    Input per-example losses ``[B]`` -> weights ``[B]``. Callers usually pass
    ``jax.lax.stop_gradient(losses)`` or not, as their algorithm requires; this module
    does not decide that.
    """

    hidden: int = 128

    @nn.compact
    def __call__(self, losses: Array) -> Array:
        h = nn.relu(nn.Dense(self.hidden, name="hidden")(losses[..., None]))
        return nn.sigmoid(nn.Dense(1, name="out")(h))[..., 0]
