"""Inner optimizers whose hyperparameters are a differentiable function of φ.

An :class:`InnerOptimizer` is optax-shaped: ``init(params) -> opt_state`` and
``update(grads, opt_state, params, phi) -> (updates, opt_state)``; the only
difference from an ``optax.GradientTransformation`` is the extra ``phi``
argument (a ``[q]`` vector) that the hyperparameters are computed from, so that
``jax.jvp``/``jax.grad`` with respect to ``phi`` flows through every step,
the momentum buffer included.

:func:`learnable_sgd` is the paper's: SGD with learning rate, momentum and
weight decay, each ``sigmoid(φ_i)`` so that it stays in (0, 1). It is built
from optax transforms (``add_decayed_weights``, ``trace``, ``scale``) whose
hyperparameters are traced values, so other inner optimizers can be added the
same way.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


class InnerOptimizer(NamedTuple):
    """An optax-style optimizer whose hyperparameters depend on ``phi``.

    Attributes:
      init: ``params -> opt_state``.
      update: ``(grads, opt_state, params, phi) -> (updates, opt_state)``.
      hyperparams: ``phi [q] -> {name: scalar}`` (for logging).
      names: hyperparameter names, in the order of ``phi``.
    """

    init: Callable
    update: Callable
    hyperparams: Callable[[jnp.ndarray], Dict[str, jnp.ndarray]]
    names: Sequence[str]


SGD_HPARAMS = ("lr", "momentum", "weight_decay")


def logit(p) -> np.ndarray:
    """Inverse of the sigmoid: ``p in (0, 1) -> log(p / (1 - p))``."""
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def sgd_phi0(lr: float, momentum: float = 0.1, weight_decay: float = 1e-3) -> np.ndarray:
    """Initial ``φ [3]`` for :func:`learnable_sgd` from hyperparameter values."""
    return logit([lr, momentum, weight_decay])


def learnable_sgd(learn: Sequence[str] = SGD_HPARAMS, fixed: Dict[str, float] | None = None) -> InnerOptimizer:
    """SGD with momentum and weight decay; the hyperparameters in ``learn`` are ``sigmoid(φ)``.

    Update (the usual PyTorch-style SGD):
      ``g = grad + wd * params``; ``buf = momentum * buf + g``;
      ``params = params - lr * buf``.

    Args:
      learn: names (from ``lr``, ``momentum``, ``weight_decay``) learned from
        ``phi`` in this order; ``phi`` has shape ``[len(learn)]``.
      fixed: values of the hyperparameters not in ``learn`` (defaults:
        momentum 0, weight decay 0; ``lr`` must be learned or given).
    """
    learn = tuple(learn)
    for name in learn:
        if name not in SGD_HPARAMS:
            raise ValueError(f"unknown SGD hyperparameter {name!r}; allowed: {', '.join(SGD_HPARAMS)}")
    fixed = {"momentum": 0.0, "weight_decay": 0.0, **(fixed or {})}
    if "lr" not in learn and "lr" not in fixed:
        raise ValueError("lr must be learned or given in fixed")

    def hyperparams(phi):
        values = {name: jax.nn.sigmoid(phi[i]) for i, name in enumerate(learn)}
        for name in SGD_HPARAMS:
            if name not in values:
                values[name] = jnp.asarray(fixed[name])
        return values

    def make_tx(phi) -> optax.GradientTransformation:
        hp = hyperparams(phi)
        return optax.chain(
            optax.add_decayed_weights(hp["weight_decay"]),
            optax.trace(decay=hp["momentum"], nesterov=False),
            optax.scale(-hp["lr"]),
        )

    def init(params):
        # The transforms' states do not depend on the hyperparameter values.
        return make_tx(jnp.zeros((len(learn),))).init(params)

    def update(grads, opt_state, params, phi):
        return make_tx(phi).update(grads, opt_state, params)

    return InnerOptimizer(init=init, update=update, hyperparams=hyperparams, names=learn)
