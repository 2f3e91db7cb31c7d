"""The paper's two tasks as :class:`~glocal_cli.hpo.InnerProblem` instances.

* ``optimizer``: a classifier trained by SGD whose learning rate, momentum and
  weight decay are ``sigmoid(φ)`` (:func:`~glocal_cli.inner_optim.learnable_sgd`);
  ``q`` = number of learned hyperparameters (3 by default).
* ``reweight``: a classifier trained on a long-tailed set with the loss
  ``mean_i L_i · μ_φ(L_i)``, where ``μ_φ`` is the 1→128→1 meta MLP and ``φ``
  its 385 flattened parameters; SGD lr 0.01, momentum 0.9, no weight decay.
  The meta module sees the loss values with ``stop_gradient`` (as in
  Meta-Weight-Net): ``θ`` is not pushed to change the weights themselves.
  ``reweight_loss = "sum"`` is the paper's literal ``sum_i L_i · μ_φ(L_i)``.
  Method ``none`` trains with plain cross entropy (every weight 1).

With ``method = "sgld"`` the tasks also expose their training loss
(:attr:`~glocal_cli.hpo.InnerProblem.train_loss`): the reweight task its weighted
loss, the optimizer task ``CE + ½ exp(φ) ‖θ‖²`` with ``φ = log(weight decay)``
(``--learn weight_decay`` only; SGLD's step size is fixed, see :mod:`glocal_cli.sgld`).

The data (training, validation arrays) live on the device and are passed to
the step as ``data``; a batch is an ``int32 [B]`` vector of training indices,
from :func:`glocal_cli.data.splits.epoch_batch_indices` (a pure function of
the seed and the step, so any window can be recomputed exactly on resume).
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from glocal_cli.config import EVAL_CHUNK, TrainConfig
from glocal_cli.data.splits import Splits, epoch_batch_indices
from glocal_cli.hpo import InnerProblem
from glocal_cli.methods import METHOD_CLASSES
from glocal_cli.runtime import Runtime
from glocal_cli.runtime import resolve as resolve_runtime
from glocal_cli.inner_optim import baseline_optimizer, eval_params, learnable_sgd, logit, tunable_optimizer
from glocal_cli.models import MetaMLP, get_model



@functools.partial(jax.jit, static_argnums=0)
def _jit_init(model, key, x):
    """``model.init(key, x)``, compiled once per (equal) model and input shape, not once per seed.

    ``jax.jit(model.init)`` made a new jitted function (a new bound method) per call, so
    every seed of a group compiled LeNet's init again (about 3 s each on a 2-core CPU).
    """
    return model.init(key, x)
_HOST = jax.local_devices(backend="cpu")[0]
# The meta MLP has collapsed (a failure status) when its weight is below COLLAPSE_THRESHOLD at
# every probe loss: the inner gradient is then < 1 % of plain cross entropy's for every example
# with a loss in [0.1, 10], so training has in effect stopped. (The run the issue reports, outer
# lr 0.1, reached w(L=0.1) = 5e-4, w(L=1) = 6e-12 after 4 windows and test accuracy 0.10.)
COLLAPSE_PROBE = (0.1, 0.3, 1.0, 2.0, 3.0, 5.0, 10.0)
COLLAPSE_THRESHOLD = 1e-2


class Task(NamedTuple):
    """A task ready for :class:`~glocal_cli.runner.HPORunner`.

    Attributes:
      problem: the inner problem (init state, step, val loss, batches, data).
      phi0: ``[q]`` float32 initial hyperparameters.
      hyperparams: ``phi [q] -> {name: float}``, the values logged per window.
      evaluate: ``(inner_state, x [N,...], y [N]) -> {"loss", "accuracy"}`` on host.
      params_of: ``inner_state -> model parameters``.
      health: ``phi [q] -> str``: a failure message when φ is degenerate (the
        reweight task's collapsed meta MLP), ``""`` when healthy; or None.
    """

    problem: InnerProblem
    phi0: np.ndarray
    hyperparams: Callable[[np.ndarray], Dict[str, float]]
    evaluate: Callable
    params_of: Callable
    health: Optional[Callable[[np.ndarray], str]] = None


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


def _evaluator(model, num_classes: int) -> Callable:
    """``(params, x, y) -> {"loss", "accuracy", "balanced_accuracy"}``.

    ``balanced_accuracy`` is the mean over the classes present in ``y`` of the per-class recall.
    """

    @jax.jit
    def chunk_stats(params, x, y):
        logits = model.apply({"params": params}, x)
        hit = jnp.argmax(logits, -1) == y
        per_class = jax.ops.segment_sum(hit.astype(jnp.float32), y, num_segments=num_classes)
        return jnp.sum(cross_entropy(logits, y)), jnp.sum(hit), per_class

    def evaluate(params, x, y) -> Dict[str, float]:
        chunks = [chunk_stats(params, x[i : i + EVAL_CHUNK], y[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
        loss = correct = 0.0
        hits = np.zeros(num_classes)
        for l_, c_, h_ in jax.device_get(chunks):  # one transfer, summed on the host in the same order as before
            loss += float(l_)
            correct += float(c_)
            hits += np.asarray(h_, np.float64)
        counts = np.bincount(np.asarray(y), minlength=num_classes)
        present = counts > 0
        balanced = float(np.mean(hits[present] / counts[present])) if present.any() else float("nan")
        return {"loss": loss / len(x), "accuracy": correct / len(x), "balanced_accuracy": balanced}

    return evaluate


def _val_loss_fn(model, chunk: int = EVAL_CHUNK, precision: str = "float32",
                 params_of: Callable = lambda s: s[0]) -> Callable:
    """``(state, data) -> scalar``: full-batch validation cross entropy of ``params_of(state)`` (``state[0]``).

    ``chunk`` examples at a time (:func:`chunked_mean`; ``TrainConfig.val_chunk``).
    ``precision = "bfloat16"`` (``TrainConfig.val_precision``): the parameters and the
    validation inputs are cast to bfloat16, so the model's matmuls / convolutions run in
    bfloat16; the logits are cast back and the cross entropy and its sum are float32. The
    gradient with respect to the float32 parameters flows through the casts. Measured
    error of the hypergradient against float32: tests/test_val_options.py and
    docs/performance.md ("Validation cost options (CPU)").
    """
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if precision not in dtypes:
        raise ValueError(f"val precision must be float32 or bfloat16, got {precision!r}")
    dtype = dtypes[precision]  # float32: every cast below is the identity (the loss as before this option)

    def val_loss(state, data):
        params = jax.tree_util.tree_map(lambda p: p.astype(dtype), params_of(state))

        def per_example(x, y):
            logits = model.apply({"params": params}, x.astype(dtype))
            return cross_entropy(logits.astype(jnp.float32), y)

        return chunked_mean(per_example, data["val_x"], data["val_y"], chunk)

    return val_loss


def _val_loss_batch_fn(model) -> Callable:
    """``(params, idx [b], data) -> scalar``: validation cross entropy on a subsample (sgld's ``u_t``)."""

    def val_loss_batch(params, idx, data):
        return jnp.mean(cross_entropy(model.apply({"params": params}, data["val_x"][idx]), data["val_y"][idx]))

    return val_loss_batch


def _task(cfg: TrainConfig, splits: Splits, model, params0, opt, step, hyperparams, phi0, train_loss=None,
          health=None, params_of: Callable = lambda s: s[0]) -> Task:
    """Assemble a :class:`Task` whose inner state is ``(params, opt_state)``.

    ``params_of``: ``inner state -> the parameters evaluated`` (validation and test), ``state[0]`` unless
    the optimizer evaluates elsewhere (schedule-free: its averaged iterate).
    """
    problem = InnerProblem(
        init_state=(params0, opt.init(params0)),
        step=step,
        val_loss=_val_loss_fn(model, cfg.resolved_val_chunk(), cfg.val_precision, params_of),
        batches=_batches_fn(len(splits.train_x), cfg),
        data=_device_data(splits),
        hyperparams=hyperparams,
        train_loss=train_loss,
        val_loss_batch=_val_loss_batch_fn(model),
        n_train=len(splits.train_x),
        n_val=len(splits.val_x),
    )
    evaluate = _evaluator(model, splits.num_classes)
    return Task(problem, np.asarray(phi0, np.float32), hyperparams, evaluate, params_of, health)


def _sgld_weight_decay_task(cfg: TrainConfig, splits: Splits, model, params0) -> Task:
    """Optimizer task under ``sgld``: ``L_T = CE + ½ exp(φ) ‖θ‖²``, ``φ [1] = log(weight decay)``.

    The SGLD step size (``cfg.resolved_sgld_step_size()``, lr0 by default) is fixed; the
    inner state is ``(params, ())``. ``step`` is a plain gradient step of the same loss
    (unused by the sgld driver, kept so the problem is complete).
    """
    eta = cfg.resolved_sgld_step_size()
    opt = optax.identity()

    def train_loss(params, phi, idx, data):
        x, y = data["train_x"][idx], data["train_y"][idx]
        ce = jnp.mean(cross_entropy(model.apply({"params": params}, x), y))
        sq = sum(jnp.sum(p**2) for p in jax.tree_util.tree_leaves(params))
        return ce + 0.5 * jnp.exp(phi[0]) * sq

    def step(state, phi, idx, data):
        params, opt_state = state
        g = jax.grad(train_loss)(params, phi, idx, data)
        return jax.tree_util.tree_map(lambda p, g_: p - eta * g_, params, g), opt_state

    def hyperparams(phi):
        return {"lr": eta, "weight_decay": float(np.exp(np.asarray(phi, np.float64)[0]))}

    phi0 = np.log([cfg.weight_decay0])
    return _task(cfg, splits, model, params0, opt, step, hyperparams, phi0, train_loss=train_loss)


def _fixed_optimizer_task(cfg: TrainConfig, splits: Splits, model, params0) -> Task:
    """Optimizer task with a fixed inner optimizer (``cfg.inner_optimizer``, method none): φ is not read.

    The optimizer is :func:`~glocal_cli.inner_optim.baseline_optimizer` (optax / optax.contrib);
    validation and test use :func:`~glocal_cli.inner_optim.eval_params` (schedule-free: the
    averaged iterate). φ stays the learnable SGD's ``[q]`` vector (unused, logged as the initial values).
    """
    name = cfg.inner_optimizer
    opt = baseline_optimizer(name, lr0=cfg.lr0, momentum=cfg.momentum0, weight_decay=cfg.weight_decay0,
                             steps=cfg.hpo.steps, schedule=cfg.schedule, hd_beta=cfg.hd_beta)

    def loss(p, x, y):
        return jnp.mean(cross_entropy(model.apply({"params": p}, x), y))

    def step(state, phi, idx, data):
        del phi
        params, opt_state = state
        grads = jax.grad(loss)(params, data["train_x"][idx], data["train_y"][idx])
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def hyperparams(phi):
        return {}

    init_values = {"lr": cfg.lr0, "momentum": cfg.momentum0, "weight_decay": cfg.weight_decay0}
    phi0 = logit([init_values[n] for n in cfg.learn]).astype(np.float32)
    return _task(cfg, splits, model, params0, opt, step, hyperparams, phi0,
                 params_of=lambda s: eval_params(name, s[1], s[0]))


def _model(cfg: TrainConfig, splits: Splits, runtime: Optional[Runtime]):
    """The config's network; its convolutions as ``runtime`` resolved them (default: on the default backend)."""
    impl = (runtime or resolve_runtime(cfg.resolved_hpo(), cfg)).conv_impl
    return get_model(cfg.model, splits.num_classes, impl)


def optimizer_task(cfg: TrainConfig, splits: Splits, runtime: Optional[Runtime] = None) -> Task:
    """The optimizer-hyperparameter task (LeNet on MNIST-family, WRN-28-2 on CIFAR)."""
    return optimizer_task_for_model(cfg, splits, _model(cfg, splits, runtime))


def optimizer_task_for_model(cfg: TrainConfig, splits: Splits, model) -> Task:
    """:func:`optimizer_task` with any Flax classifier ``model`` (``x [B, ...] -> logits [B, C]``)."""
    key = jax.random.PRNGKey(cfg.seed)
    params0 = _jit_init(model, key, jnp.asarray(splits.train_x[:1]))["params"]  # eager init is slow
    if METHOD_CLASSES[cfg.hpo.method].samples:
        return _sgld_weight_decay_task(cfg, splits, model, params0)
    if cfg.inner_optimizer != "learnable_sgd":
        if METHOD_CLASSES[cfg.hpo.method].tunes:
            return _tunable_optimizer_task(cfg, splits, model, params0)
        return _fixed_optimizer_task(cfg, splits, model, params0)
    opt = learnable_sgd(cfg.learn, fixed={"lr": cfg.lr0, "momentum": cfg.momentum0, "weight_decay": cfg.weight_decay0})
    init_values = {"lr": cfg.lr0, "momentum": cfg.momentum0, "weight_decay": cfg.weight_decay0}
    phi0 = logit([init_values[n] for n in cfg.learn]).astype(np.float32)

    def hyperparams(phi):
        with jax.default_device(_HOST):  # logging: a few scalars, no round trip to an accelerator
            values = opt.hyperparams(jnp.asarray(np.asarray(phi)))
            return {k: float(v) for k, v in values.items()}

    return _task(cfg, splits, model, params0, opt, _learnable_step(model, opt), hyperparams, phi0)


def _learnable_step(model, opt):
    """One SGD-like step of ``opt`` (a :class:`~glocal_cli.inner_optim.LearnableOptimizer`) with φ as its extra argument."""

    def step(state, phi, idx, data):
        params, opt_state = state
        x, y = data["train_x"][idx], data["train_y"][idx]
        grads = jax.grad(lambda p: jnp.mean(cross_entropy(model.apply({"params": p}, x), y)))(params)
        updates, opt_state = opt.update(grads, opt_state, params, phi=phi)
        return optax.apply_updates(params, updates), opt_state

    return step


def _tunable_optimizer_task(cfg: TrainConfig, splits: Splits, model, params0) -> Task:
    """Optimizer task where a hypergradient method tunes ``cfg.learn`` of an optax / optax.contrib optimizer
    (:func:`~glocal_cli.inner_optim.tunable_optimizer`: each learned value ``sigmoid(φ_i)`` or ``exp(φ_i)``).

    The validation loss the hypergradient differentiates is taken at the parameters the optimizer evaluates
    (:func:`~glocal_cli.inner_optim.eval_params`: schedule-free SGD's averaged iterate, where its test
    accuracy is measured too), so φ is tuned for the model that is reported.
    """
    name = cfg.inner_optimizer
    opt, phi0, _ = tunable_optimizer(name, cfg.learn, lr0=cfg.lr0, momentum=cfg.momentum0,
                                     weight_decay=cfg.weight_decay0)

    def hyperparams(phi):
        with jax.default_device(_HOST):
            values = opt.hyperparams(jnp.asarray(np.asarray(phi)))
            return {("lr" if k == "learning_rate" else k): float(v) for k, v in values.items()}

    return _task(cfg, splits, model, params0, opt, _learnable_step(model, opt), hyperparams,
                 phi0.astype(np.float32), params_of=lambda s: eval_params(name, s[1], s[0]))


def reweight_task(cfg: TrainConfig, splits: Splits, runtime: Optional[Runtime] = None) -> Task:
    """The data-reweighting task: ``splits`` must already be the long-tailed train / balanced val."""
    model = _model(cfg, splits, runtime)
    meta = MetaMLP()
    k_model, k_meta = jax.random.split(jax.random.PRNGKey(cfg.seed))
    params0 = _jit_init(model, k_model, jnp.asarray(splits.train_x[:1]))["params"]
    meta0 = meta.init(k_meta, jnp.zeros((1,), jnp.float32))["params"]
    phi0, unravel = ravel_pytree(meta0)
    opt = optax.sgd(0.01, momentum=0.9)
    reduce = jnp.sum if cfg.reweight_loss == "sum" else jnp.mean
    plain = not METHOD_CLASSES[cfg.hpo.method].tunes  # the baseline: plain cross entropy

    def train_loss(params, phi, idx, data):
        x, y = data["train_x"][idx], data["train_y"][idx]
        per_example = cross_entropy(model.apply({"params": params}, x), y)
        if plain:
            return reduce(per_example)
        weights = meta.apply({"params": unravel(phi)}, jax.lax.stop_gradient(per_example))
        return reduce(per_example * weights)

    def step(state, phi, idx, data):
        params, opt_state = state
        updates, opt_state = opt.update(jax.grad(train_loss)(params, phi, idx, data), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def weights_at(phi, losses):
        return np.asarray(meta.apply({"params": unravel(jnp.asarray(phi, jnp.float32))}, jnp.asarray(losses, jnp.float32)))

    def hyperparams(phi):
        if plain:  # the meta MLP is not used
            return {}
        w = weights_at(phi, [0.1, 1.0, 3.0])
        return {"w(L=0.1)": float(w[0]), "w(L=1)": float(w[1]), "w(L=3)": float(w[2])}

    def health(phi) -> str:
        w = weights_at(phi, COLLAPSE_PROBE)
        if plain or np.max(w) >= COLLAPSE_THRESHOLD:
            return ""
        return (f"meta MLP collapsed: every weight on the probe losses {list(COLLAPSE_PROBE)} is below "
                f"{COLLAPSE_THRESHOLD:g} (max {np.max(w):.3g}); try a smaller --outer-lr")

    return _task(cfg, splits, model, params0, opt, step, hyperparams, phi0, train_loss=train_loss, health=health)


def build_task(cfg: TrainConfig, splits: Splits, runtime: Optional[Runtime] = None) -> Task:
    """The task named by ``cfg.task``; its model as ``runtime`` resolved (default: on the default backend)."""
    return {"optimizer": optimizer_task, "reweight": reweight_task}[cfg.task](cfg, splits, runtime)
