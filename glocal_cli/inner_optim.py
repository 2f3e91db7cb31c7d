"""Inner optimizers whose hyperparameters are a differentiable function of φ.

A :class:`LearnableOptimizer` wraps an optax
``GradientTransformationExtraArgs`` whose ``update`` takes the hyperparameters
as the extra keyword argument ``phi`` (a ``[q]`` vector)::

    updates, state = opt.update(grads, state, params, phi=phi)

so ``jax.jvp``/``jax.grad`` with respect to ``phi`` flows through every inner
step, the momentum buffer included. ``opt.tx`` is the optax transformation
itself and can be placed in any ``optax.chain`` (which forwards ``phi``).

* :func:`learnable_sgd` is the paper's: SGD with learning rate, momentum and
  weight decay, each ``sigmoid(φ_i)`` so that it stays in (0, 1).
* :func:`hyperparams_from_phi` drives the hyperparameters of ANY optax
  optimizer built with ``optax.inject_hyperparams`` from ``φ``, e.g.
  ``optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-4)``
  with ``names=("learning_rate", "weight_decay")``.
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax


class LearnableOptimizer(NamedTuple):
    """An optax optimizer whose hyperparameters are a function of ``phi [q]``.

    Attributes:
      tx: the optax transformation; ``tx.update(grads, state, params, *, phi)``.
      names: hyperparameter names, in the order of ``phi`` (``q = len(names)``).
      hyperparams: ``phi [q] -> {name: scalar}``, every hyperparameter value
        (learned and fixed) for logging.
    """

    tx: optax.GradientTransformationExtraArgs
    names: Sequence[str]
    hyperparams: Callable[[jnp.ndarray], Dict[str, jnp.ndarray]]

    def init(self, params):
        """``params -> opt_state`` (same as ``tx.init``)."""
        return self.tx.init(params)

    def update(self, grads, state, params=None, *, phi):
        """``(grads, state, params, *, phi [q]) -> (updates, state)`` (same as ``tx.update``)."""
        return self.tx.update(grads, state, params, phi=phi)


SGD_HPARAMS = ("lr", "momentum", "weight_decay")


def logit(p) -> np.ndarray:
    """Inverse of the sigmoid: ``p in (0, 1) -> log(p / (1 - p))``."""
    p = np.asarray(p, dtype=np.float64)
    return np.log(p) - np.log1p(-p)


def sgd_phi0(lr: float, momentum: float = 0.1, weight_decay: float = 1e-3) -> np.ndarray:
    """Initial ``φ [3]`` for :func:`learnable_sgd` from hyperparameter values."""
    return logit([lr, momentum, weight_decay])


def learnable_sgd(learn: Sequence[str] = SGD_HPARAMS, fixed: Dict[str, float] | None = None) -> LearnableOptimizer:
    """SGD with momentum and weight decay; the hyperparameters in ``learn`` are ``sigmoid(φ)``.

    Update (the usual PyTorch-style SGD, the same arithmetic as
    ``optax.chain(optax.add_decayed_weights(wd), optax.trace(momentum), optax.scale(-lr))``):
      ``g = grad + wd * params``; ``buf = g + momentum * buf``;
      ``updates = -lr * buf``.
    The state is an ``optax.TraceState`` (the momentum buffer, like ``params``).

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

    def init(params):
        return optax.TraceState(trace=optax.tree_utils.tree_zeros_like(params))

    def update(grads, state, params=None, *, phi, **extra):
        del extra
        hp = hyperparams(phi)
        wd, momentum, lr = hp["weight_decay"], hp["momentum"], hp["lr"]
        g = jax.tree_util.tree_map(lambda g_, p_: g_ + wd * p_, grads, params)
        buf = jax.tree_util.tree_map(lambda g_, b_: g_ + momentum * b_, g, state.trace)
        updates = jax.tree_util.tree_map(lambda b_: -lr * b_, buf)
        return updates, optax.TraceState(trace=buf)

    return LearnableOptimizer(optax.GradientTransformationExtraArgs(init, update), learn, hyperparams)


def hyperparams_from_phi(
    optimizer: optax.GradientTransformation,
    names: Sequence[str],
    transform: Callable[[jnp.ndarray], jnp.ndarray] = jax.nn.sigmoid,
) -> LearnableOptimizer:
    """Drive the hyperparameters ``names`` of an ``optax.inject_hyperparams`` optimizer by ``φ``.

    Before each update, ``state.hyperparams[names[i]] = transform(phi[i])``;
    the rest of the optimizer is untouched, so any optax chain wrapped in
    ``optax.inject_hyperparams`` can have some of its hyperparameters learned.

    Args:
      optimizer: e.g. ``optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.9)``
        (its numeric hyperparameters are the ones that can be named).
      names: hyperparameters learned from ``phi``, in the order of ``phi [q]``.
      transform: elementwise map from ``phi_i`` to the value (default sigmoid,
        values in (0, 1); use ``jnp.exp`` for positive values without a bound).

    Returns:
      a :class:`LearnableOptimizer` whose state is the inject_hyperparams state
      (it holds an integer step count: :mod:`glocal_cli.hypergrad` carries no
      tangents for integer leaves).
    """
    names = tuple(names)

    def init(params):
        state = optimizer.init(params)
        if not hasattr(state, "hyperparams"):
            raise ValueError("hyperparams_from_phi needs an optimizer built with optax.inject_hyperparams")
        missing = [n for n in names if n not in state.hyperparams]
        if missing:
            raise ValueError(f"hyperparameters {missing} not among {sorted(state.hyperparams)}")
        return state

    def hyperparams(phi):
        return {n: transform(phi[i]) for i, n in enumerate(names)}

    def update(grads, state, params=None, *, phi, **extra):
        hp = dict(state.hyperparams)
        for n, v in hyperparams(phi).items():
            hp[n] = jnp.asarray(v, hp[n].dtype)
        return optimizer.update(grads, state._replace(hyperparams=hp), params, **extra)

    return LearnableOptimizer(optax.GradientTransformationExtraArgs(init, update), names, hyperparams)
