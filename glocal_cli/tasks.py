"""The paper's two tasks as :class:`~glocal_cli.hpo.InnerProblem` instances.

* ``optimizer``: a classifier trained by SGD whose learning rate, momentum and
  weight decay are ``sigmoid(φ)`` (:func:`~glocal_cli.inner_optim.learnable_sgd`);
  ``q`` = number of learned hyperparameters (3 by default).
* ``reweight``: a classifier trained on a long-tailed set with the loss
  ``mean_i L_i · μ_φ(L_i)``, where ``μ_φ`` is the 1→128→1 meta MLP and ``φ``
  its 385 flattened parameters; SGD lr 0.01, momentum 0.9, no weight decay.
  The meta module sees the loss values with ``stop_gradient`` (as in
  Meta-Weight-Net): ``θ`` is not pushed to change the weights themselves.

The data (training, validation arrays) live on the device and are passed to
the step as ``data``; a batch is an ``int32 [B]`` vector of training indices,
from :func:`glocal_cli.data.splits.epoch_batch_indices` (a pure function of
the seed and the step, so any window can be recomputed exactly on resume).
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from glocal_cli.config import TrainConfig
from glocal_cli.data.splits import Splits, epoch_batch_indices
from glocal_cli.hpo import InnerProblem
from glocal_cli.inner_optim import learnable_sgd, logit
from glocal_cli.models import MetaMLP, get_model

EVAL_CHUNK = 1000


class Task(NamedTuple):
    """A task ready for :class:`~glocal_cli.hpo.HPORunner`.

    Attributes:
      problem: the inner problem (init state, step, val loss, batches, data).
      phi0: ``[q]`` float32 initial hyperparameters.
      hyperparams: ``phi [q] -> {name: float}``, the values logged per window.
      evaluate: ``(inner_state, x [N,...], y [N]) -> {"loss", "accuracy"}`` on host.
      params_of: ``inner_state -> model parameters``.
    """

    problem: InnerProblem
    phi0: np.ndarray
    hyperparams: Callable[[np.ndarray], Dict[str, float]]
    evaluate: Callable
    params_of: Callable


def cross_entropy(logits: jnp.ndarray, labels: jnp.ndarray) -> jnp.ndarray:
    """Per-example cross entropy: ``[B, C], [B] -> [B]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def chunked_mean(fn: Callable, x: jnp.ndarray, y: jnp.ndarray, chunk: int = EVAL_CHUNK) -> jnp.ndarray:
    """``mean_i fn(x_i, y_i)`` over ``[N]`` examples, ``chunk`` at a time (bounded memory).

    ``fn(x [c, ...], y [c]) -> [c]``. Full chunks run under ``lax.map``; a
    remainder, if any, is one more call.
    """
    n = x.shape[0]
    full = (n // chunk) * chunk
    total = jnp.zeros((), jnp.float32)
    if full:
        xs = x[:full].reshape((full // chunk, chunk) + x.shape[1:])
        ys = y[:full].reshape((full // chunk, chunk))
        total = jnp.sum(jax.lax.map(lambda a: jnp.sum(fn(*a)), (xs, ys)))
    if full < n:
        total = total + jnp.sum(fn(x[full:], y[full:]))
    return total / n


def _device_data(splits: Splits, train_x=None, train_y=None) -> dict:
    return {
        "train_x": jnp.asarray(splits.train_x if train_x is None else train_x),
        "train_y": jnp.asarray(splits.train_y if train_y is None else train_y),
        "val_x": jnp.asarray(splits.val_x),
        "val_y": jnp.asarray(splits.val_y),
    }


def _batches_fn(n_train: int, cfg: TrainConfig):
    def batches(start: int, n: int) -> np.ndarray:
        return epoch_batch_indices(n_train, cfg.batch_size, cfg.seed, start, n)

    return batches


def _evaluator(model) -> Callable:
    @jax.jit
    def chunk_stats(params, x, y):
        logits = model.apply({"params": params}, x)
        return jnp.sum(cross_entropy(logits, y)), jnp.sum(jnp.argmax(logits, -1) == y)

    def evaluate(params, x, y) -> Dict[str, float]:
        loss = correct = 0.0
        for i in range(0, len(x), EVAL_CHUNK):
            l_, c_ = chunk_stats(params, x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK])
            loss += float(l_)
            correct += float(c_)
        return {"loss": loss / len(x), "accuracy": correct / len(x)}

    return evaluate


def _val_loss_fn(model) -> Callable:
    """``(state, data) -> scalar``: full-batch validation cross entropy of ``state[0]``."""

    def val_loss(state, data):
        per_example = lambda x, y: cross_entropy(model.apply({"params": state[0]}, x), y)
        return chunked_mean(per_example, data["val_x"], data["val_y"])

    return val_loss


def _task(cfg: TrainConfig, splits: Splits, model, params0, opt, step, hyperparams, phi0) -> Task:
    """Assemble a :class:`Task` whose inner state is ``(params, opt_state)``."""
    problem = InnerProblem(
        init_state=(params0, opt.init(params0)),
        step=step,
        val_loss=_val_loss_fn(model),
        batches=_batches_fn(len(splits.train_x), cfg),
        data=_device_data(splits),
        hyperparams=hyperparams,
    )
    return Task(problem, np.asarray(phi0, np.float32), hyperparams, _evaluator(model), lambda s: s[0])


def optimizer_task(cfg: TrainConfig, splits: Splits) -> Task:
    """The optimizer-hyperparameter task (LeNet on MNIST-family, WRN-28-2 on CIFAR)."""
    model = get_model(cfg.model, splits.num_classes, cfg.resolved_conv_impl())
    key = jax.random.PRNGKey(cfg.seed)
    params0 = jax.jit(model.init)(key, jnp.asarray(splits.train_x[:1]))["params"]  # eager init is slow
    opt = learnable_sgd(cfg.learn, fixed={"lr": cfg.lr0, "momentum": cfg.momentum0, "weight_decay": cfg.weight_decay0})
    init_values = {"lr": cfg.lr0, "momentum": cfg.momentum0, "weight_decay": cfg.weight_decay0}
    phi0 = logit([init_values[n] for n in cfg.learn]).astype(np.float32)

    def step(state, phi, idx, data):
        params, opt_state = state
        x, y = data["train_x"][idx], data["train_y"][idx]
        grads = jax.grad(lambda p: jnp.mean(cross_entropy(model.apply({"params": p}, x), y)))(params)
        updates, opt_state = opt.update(grads, opt_state, params, phi=phi)
        return optax.apply_updates(params, updates), opt_state

    def hyperparams(phi):
        values = opt.hyperparams(jnp.asarray(phi))
        return {k: float(v) for k, v in values.items()}

    return _task(cfg, splits, model, params0, opt, step, hyperparams, phi0)


def reweight_task(cfg: TrainConfig, splits: Splits) -> Task:
    """The data-reweighting task: ``splits`` must already be the long-tailed train / balanced val."""
    model = get_model(cfg.model, splits.num_classes, cfg.resolved_conv_impl())
    meta = MetaMLP()
    k_model, k_meta = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params0 = jax.jit(model.init)(k_model, jnp.asarray(splits.train_x[:1]))["params"]
    meta0 = meta.init(k_meta, jnp.zeros((1,), jnp.float32))["params"]
    phi0, unravel = ravel_pytree(meta0)
    opt = optax.sgd(0.01, momentum=0.9)

    def step(state, phi, idx, data):
        params, opt_state = state
        x, y = data["train_x"][idx], data["train_y"][idx]

        def loss(p):
            per_example = cross_entropy(model.apply({"params": p}, x), y)
            weights = meta.apply({"params": unravel(phi)}, jax.lax.stop_gradient(per_example))
            return jnp.mean(per_example * weights)

        updates, opt_state = opt.update(jax.grad(loss)(params), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def hyperparams(phi):
        losses = jnp.asarray([0.1, 1.0, 3.0], jnp.float32)
        w = meta.apply({"params": unravel(jnp.asarray(phi, jnp.float32))}, losses)
        return {"w(L=0.1)": float(w[0]), "w(L=1)": float(w[1]), "w(L=3)": float(w[2])}

    return _task(cfg, splits, model, params0, opt, step, hyperparams, phi0)


def build_task(cfg: TrainConfig, splits: Splits) -> Task:
    """The task named by ``cfg.task``."""
    return {"optimizer": optimizer_task, "reweight": reweight_task}[cfg.task](cfg, splits)
