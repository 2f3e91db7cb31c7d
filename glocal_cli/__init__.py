"""glocal: gradient-based hyperparameter optimization with glocal hypergradients.

Tune the hyperparameters ``φ [q]`` of your own model's training by gradient
descent while it trains. Every τ inner steps (a *window*) φ takes an outer
optimizer step with a hypergradient ``[q]``: ``local`` (``h_τ``, the end of the
window), ``glocal`` (the Hankel-DMD estimate of the global hypergradient from
the window's last σ local ones), or ``global`` (retrain to T).

The public API (imported lazily, so ``import glocal_cli`` does not load JAX):

* :class:`InnerProblem` — your training problem: ``init_state`` (pytree),
  ``step(state, phi [q], batch, data) -> state``, ``val_loss(state, data) ->
  scalar``, ``batches(start, n) -> batch pytree [n, ...]``, ``data``.
* :class:`HPOConfig`, :class:`HPORunner`, :class:`HPOState`,
  :class:`WindowRecord`, :func:`run` — the outer loop; :class:`Method` and
  :data:`METHOD_CLASSES` — the methods as objects (:mod:`glocal_cli.methods`).
* :class:`SeedGroupRunner` — several seeds of one setting (problems that differ
  only in ``init_state``, ``data`` and ``batches``) advanced as one vmapped, jitted
  window (its :class:`WindowRecord` has a leading seed axis). On a GPU, pass
  ``conv_batching="blockdiag"`` (what ``glocal train`` does with
  ``--conv-batching auto``): the seeds' convolutions (``models.conv.seed_conv``)
  then run ungrouped.
* :func:`learnable_sgd`, :func:`hyperparams_from_phi`,
  :class:`LearnableOptimizer`, :func:`logit` — optax inner optimizers whose
  hyperparameters are a differentiable function of ``φ``.
* :func:`hankel_dmd_estimate`, :class:`DMDResult` — the glocal estimator on a
  ``[σ, q]`` sequence of local hypergradients.
* :func:`forward_window`, :func:`reverse_window`, :func:`window_hypergrads`,
  :class:`WindowOutput` — local hypergradients ``[n_record, q]`` of one window.

See the README section "Use as a library" for a complete example.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it. Adding a public name is one line here.
_EXPORTS = {
    # the problem definition and the outer loop
    "InnerProblem": "glocal_cli.hpo",
    "HPOConfig": "glocal_cli.hpo",
    "HPOState": "glocal_cli.hpo",
    "METHODS": "glocal_cli.hpo",
    "HPORunner": "glocal_cli.runner",
    "SeedGroupRunner": "glocal_cli.runner",
    "run": "glocal_cli.runner",
    "WindowRecord": "glocal_cli.methods",
    "HypergradToEnd": "glocal_cli.methods",
    "Method": "glocal_cli.methods",
    "METHOD_CLASSES": "glocal_cli.methods",
    # learnable inner optimizers
    "LearnableOptimizer": "glocal_cli.inner_optim",
    "learnable_sgd": "glocal_cli.inner_optim",
    "hyperparams_from_phi": "glocal_cli.inner_optim",
    "logit": "glocal_cli.inner_optim",
    # estimators of the global hypergradient
    "ESTIMATORS": "glocal_cli.estimators",
    "Estimate": "glocal_cli.estimators",
    "make_estimator": "glocal_cli.estimators",
    "hankel_dmd_estimate": "glocal_cli.dmd",
    "DMDResult": "glocal_cli.dmd",
    # local hypergradients of one window
    "forward_window": "glocal_cli.hypergrad",
    "reverse_window": "glocal_cli.hypergrad",
    "window_hypergrads": "glocal_cli.hypergrad",
    "tangent_hypergrad": "glocal_cli.hypergrad",
    "WindowOutput": "glocal_cli.hypergrad",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'glocal_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


if TYPE_CHECKING:  # static type checkers see the real names
    from glocal_cli.dmd import DMDResult, hankel_dmd_estimate
    from glocal_cli.hpo import METHODS, HPOConfig, HPOState, InnerProblem
    from glocal_cli.hypergrad import (
        WindowOutput,
        forward_window,
        reverse_window,
        tangent_hypergrad,
        window_hypergrads,
    )
    from glocal_cli.inner_optim import LearnableOptimizer, hyperparams_from_phi, learnable_sgd, logit
    from glocal_cli.methods import METHOD_CLASSES, HypergradToEnd, Method, WindowRecord
    from glocal_cli.runner import HPORunner, SeedGroupRunner, run
