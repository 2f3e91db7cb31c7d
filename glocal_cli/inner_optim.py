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

import functools
import inspect
import math
from typing import Callable, Dict, Mapping, NamedTuple, Sequence, Tuple

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
    transform: Callable[[jnp.ndarray], jnp.ndarray] | Mapping[str, Callable] = jax.nn.sigmoid,
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
        values in (0, 1); use ``jnp.exp`` for positive values without a bound), or a
        mapping ``{name: transform}`` with one for each name.

    Returns:
      a :class:`LearnableOptimizer` whose state is the inject_hyperparams state
      (it holds an integer step count: :mod:`glocal_cli.hypergrad` carries no
      tangents for integer leaves).
    """
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"hyperparameters {list(names)} name one twice")
    transforms = {n: transform[n] for n in names} if isinstance(transform, Mapping) else {n: transform for n in names}

    def init(params):
        state = optimizer.init(params)
        if not hasattr(state, "hyperparams"):
            raise ValueError("hyperparams_from_phi needs an optimizer built with optax.inject_hyperparams")
        missing = [n for n in names if n not in state.hyperparams]
        if missing:
            raise ValueError(f"hyperparameters {missing} not among {sorted(state.hyperparams)}")
        return state

    def hyperparams(phi):
        return {n: transforms[n](phi[i]) for i, n in enumerate(names)}

    def update(grads, state, params=None, *, phi, **extra):
        hp = dict(state.hyperparams)
        for n, v in hyperparams(phi).items():
            hp[n] = jnp.asarray(v, hp[n].dtype)
        return optimizer.update(grads, state._replace(hyperparams=hp), params, **extra)

    return LearnableOptimizer(optax.GradientTransformationExtraArgs(init, update), names, hyperparams)


# ----------------------------------------------------------------------------------------------
# Fixed inner optimizers (method ``none``): what a practitioner would pick instead of tuning φ.

#: ``TrainConfig.inner_optimizer`` choices. ``learnable_sgd`` is the paper's SGD (every method tunes it);
#: the others train with method ``none`` (docs/baselines.md), and those in :data:`TUNABLE` are also tuned by
#: local / glocal / global (``--learn``).
INNER_OPTIMIZERS = ("learnable_sgd", "sgd", "adam", "hd", "prodigy", "dadapt_adamw", "schedule_free_sgd",
                    "mechanize_sgd", "dog")
#: The inner optimizers that read no ``lr0``: learning-rate free, their own scale starts at 1.0.
LR_FREE = ("prodigy", "dadapt_adamw", "mechanize_sgd", "dog")
#: ``TrainConfig.schedule`` choices: the learning-rate schedule of ``sgd`` and ``adam`` over the T steps.
SCHEDULES = ("constant", "cosine", "warmup_cosine")
SCHEDULED = ("sgd", "adam")  # the inner optimizers whose learning rate (lr0) follows ``schedule``
WARMUP_FRACTION = 0.05  # warmup_cosine: linear warmup from 0 over this fraction of T, then cosine to 0


def lr_schedule(name: str, lr0: float, steps: int) -> optax.Schedule:
    """The learning rate at inner step ``k`` (``0 <= k < steps``): ``name`` from :data:`SCHEDULES`.

    * ``constant``: ``lr0``;
    * ``cosine``: ``lr0 · ½ (1 + cos(π k / T))`` (``optax.cosine_decay_schedule``, to 0 at T);
    * ``warmup_cosine``: linear from 0 to ``lr0`` over ``max(1, round(0.05 T))`` steps, then
      cosine to 0 at T (``optax.warmup_cosine_decay_schedule``).
    """
    if name == "constant":
        return optax.constant_schedule(lr0)
    if name == "cosine":
        return optax.cosine_decay_schedule(lr0, steps)
    if name == "warmup_cosine":
        warmup = max(1, int(round(WARMUP_FRACTION * steps)))
        return optax.warmup_cosine_decay_schedule(0.0, lr0, warmup, steps)
    raise ValueError(f"unknown schedule {name!r}; allowed: {', '.join(SCHEDULES)}")


class HypergradientDescentState(NamedTuple):
    """State of :func:`hypergradient_descent`.

    Attributes:
      learning_rate: ``[]`` the adapted learning rate ``α_t``.
      trace: the direction of the last update ``v_{t-1}`` (the momentum buffer; like ``params``).
    """

    learning_rate: jnp.ndarray
    trace: optax.Updates


def hypergradient_descent(learning_rate: float, hypergrad_lr: float,
                          momentum: float = 0.0) -> optax.GradientTransformation:
    """Hypergradient descent on the learning rate (Baydin et al., ICLR 2018, SGD-HD).

    With ``g_t`` the incoming gradient and ``v_{t-1}`` the previous direction
    (``v_0 = 0``), one update is::

        h_t = ∂f(θ_t)/∂α = −g_t · v_{t-1}          (θ_t = θ_{t-1} − α v_{t-1}: one step back)
        α_t = α_{t-1} − β h_t                      (plain SGD on α, β = hypergrad_lr)
        v_t = g_t + μ v_{t-1}                      (heavy-ball momentum μ; μ = 0: Baydin's SGD-HD)
        u_t = −α_t v_t

    ``h_t`` is the one-step hypergradient of the *training* loss, from the gradient the
    step computes anyway: one dot product per step. ``μ = 0`` is the paper's Algorithm
    (SGD-HD, ``α_t = α_{t-1} + β g_t·g_{t-1}``); with ``μ > 0`` it is the same one-step
    rule applied to the momentum direction. α is not clipped (as in the paper).

    Args:
      learning_rate: ``α_0``.
      hypergrad_lr: ``β``, the learning rate of α.
      momentum: ``μ``.
    """

    def init(params):
        dtype = optax.tree.dtype(params, "lowest")
        return HypergradientDescentState(jnp.asarray(learning_rate, dtype), optax.tree.zeros_like(params))

    def update(updates, state, params=None):
        del params
        h = -optax.tree.vdot(updates, state.trace)
        alpha = (state.learning_rate - hypergrad_lr * h).astype(state.learning_rate.dtype)
        trace = jax.tree_util.tree_map(lambda g, v: g + momentum * v, updates, state.trace)
        return optax.tree.scale(-alpha, trace), HypergradientDescentState(alpha, trace)

    return optax.GradientTransformation(init, update)


def baseline_optimizer(name: str, *, lr0: float, momentum: float, weight_decay: float, steps: int,
                       schedule: str = "constant", hd_beta: float = 1e-3) -> optax.GradientTransformation:
    """A fixed (not learned) inner optimizer from optax / ``optax.contrib``, as they are.

    ``update(grads, state, params)`` needs ``params`` (the contrib optimizers read them).

    * ``sgd``: ``add_decayed_weights(weight_decay)`` then ``optax.sgd(schedule(lr0), momentum)``:
      the paper's SGD arithmetic (``learnable_sgd`` at fixed values) with a learning-rate schedule;
    * ``adam``: ``optax.adam(schedule(lr0))`` (optax defaults otherwise, no weight decay);
    * ``hd``: :func:`hypergradient_descent` from ``α_0 = lr0`` with β = ``hd_beta`` and momentum,
      after ``add_decayed_weights(weight_decay)`` (the paper's SGD with Baydin's learning rate);
    * ``prodigy``, ``dadapt_adamw``, ``dog``: ``optax.contrib``'s, defaults (learning rate 1.0,
      their published learning-rate-free settings);
    * ``schedule_free_sgd``: ``optax.contrib.schedule_free_sgd(lr0)`` (b1 0.9, no warmup); evaluate at
      :func:`eval_params` (its averaged iterate);
    * ``mechanize_sgd``: ``optax.contrib.mechanize(optax.sgd(1.0))`` (Mechanic learns the scale).

    ``schedule`` (:data:`SCHEDULES`) applies to ``sgd`` and ``adam`` only; ``steps`` is T.
    """
    if schedule != "constant" and name not in SCHEDULED:
        raise ValueError(f"schedule {schedule!r} applies to {' | '.join(SCHEDULED)}, not {name!r}")
    from optax import contrib

    lr = lr_schedule(schedule, lr0, steps)
    builders = {
        "sgd": lambda: optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(lr, momentum=momentum)),
        "adam": lambda: optax.adam(lr),
        "hd": lambda: optax.chain(optax.add_decayed_weights(weight_decay),
                                  hypergradient_descent(lr0, hd_beta, momentum)),
        "prodigy": lambda: contrib.prodigy(),
        "dadapt_adamw": lambda: contrib.dadapt_adamw(),
        "schedule_free_sgd": lambda: contrib.schedule_free_sgd(lr0),
        "mechanize_sgd": lambda: contrib.mechanize(optax.sgd(1.0)),
        "dog": lambda: contrib.dog(),
    }
    if name not in builders:
        raise ValueError(f"unknown inner optimizer {name!r}; allowed: {', '.join(builders)}")
    return builders[name]()


def eval_params(name: str, opt_state, params):
    """The parameters to evaluate (validation and test): ``params``, or for ``schedule_free_sgd``
    ``optax.contrib.schedule_free_eval_params(opt_state, params)`` (the averaged iterate x, as
    its authors prescribe; training steps take gradients at the interpolation y). ``opt_state``
    may be the optimizer's own or that of its :func:`optax.inject_hyperparams` wrapper."""
    if name == "schedule_free_sgd":
        from optax import contrib

        inner = opt_state.inner_state if hasattr(opt_state, "hyperparams") else opt_state  # unwrap inject_hyperparams
        return contrib.schedule_free_eval_params(inner, params)
    return params


# ----------------------------------------------------------------------------------------------
# The optimizers the hypergradient methods tune besides the paper's SGD (``--inner-optimizer NAME
# --learn NAMES`` with methods local / glocal / global): optax / optax.contrib optimizers whose named
# hyperparameters φ drives through :func:`hyperparams_from_phi`.

LR = "lr"  # this package's name of an optimizer's learning rate (optax: ``learning_rate``)
#: ``value = transform(φ_i)`` keeps a learned hyperparameter in its valid range; ``(transform, inverse, range)``
TRANSFORMS = {
    "sigmoid": (jax.nn.sigmoid, logit, (0.0, 1.0)),
    "exp": (jnp.exp, np.log, (0.0, math.inf)),
}
#: hyperparameters that live in [0, 1) (momenta, averaging rates): sigmoid; every other one is positive: exp
#: (a learning rate, also a multiplier such as Prodigy's that may exceed 1; weight decay; eps)
UNIT_INTERVAL = ("momentum", "b1", "b2", "beta3")


def transform_of(name: str) -> str:
    """The transform of a learned hyperparameter: ``sigmoid`` for :data:`UNIT_INTERVAL`, else ``exp``."""
    return "sigmoid" if name in UNIT_INTERVAL else "exp"


def _optax_name(name: str) -> str:
    return "learning_rate" if name == LR else name


def _sgd_with_weight_decay(learning_rate, momentum, weight_decay):
    """The ``sgd`` baseline's arithmetic (weight decay added to the gradient, then heavy-ball SGD), injectable."""
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum))


def _learned_wd(wd: float, learned: frozenset, otherwise) -> dict:
    return {"weight_decay": wd} if "weight_decay" in learned else ({} if otherwise is None else {"weight_decay": otherwise})


#: ``--inner-optimizer`` values the methods local / glocal / global tune besides ``learnable_sgd``, each with
#: ``(lr0, momentum0, weight_decay0, learned names) -> {argument: value}``: what it is built with (the rest
#: keep the optimizer's defaults). The learning rate starts at ``--lr0`` (Prodigy: its multiplier at 1.0, as
#: its baseline), SGD's momentum at ``--momentum0``; a learned weight decay starts at ``--weight-decay0``
#: (Adam is optax's AdamW, whose decoupled decay is 0 when not learned: Adam).
TUNABLE = {
    "sgd": lambda lr0, m, wd, learned: dict(learning_rate=lr0, momentum=m, weight_decay=wd),
    "adam": lambda lr0, m, wd, learned: dict(learning_rate=lr0, **_learned_wd(wd, learned, 0.0)),
    "schedule_free_sgd": lambda lr0, m, wd, learned: dict(learning_rate=lr0, **_learned_wd(wd, learned, None)),
    "prodigy": lambda lr0, m, wd, learned: _learned_wd(wd, learned, None),
}


def tunable_builder(name: str) -> Callable[..., optax.GradientTransformation]:
    """The optax builder ``(**hyperparameters) -> GradientTransformation`` of a :data:`TUNABLE` optimizer."""
    from optax import contrib

    return {"sgd": _sgd_with_weight_decay, "adam": optax.adamw, "schedule_free_sgd": contrib.schedule_free_sgd,
            "prodigy": contrib.prodigy}[name]


def _defaults(build: Callable) -> dict:
    return {k: p.default for k, p in inspect.signature(build).parameters.items() if p.default is not inspect.Parameter.empty}


@functools.lru_cache(maxsize=None)
def learnable_names(name: str) -> Tuple[str, ...]:
    """The hyperparameters ``--learn`` may name for ``--inner-optimizer name``: for ``learnable_sgd`` its
    three, else the floats of the optimizer's :func:`optax.inject_hyperparams` state (``lr`` for its
    learning rate), in the optimizer's order."""
    if name == "learnable_sgd":
        return SGD_HPARAMS
    kwargs = TUNABLE[name](1e-3, 0.9, 1e-3, frozenset({"weight_decay"}))
    state = optax.inject_hyperparams(tunable_builder(name))(**kwargs).init({"w": jnp.zeros((1,), jnp.float32)})
    return tuple(LR if k == "learning_rate" else k for k, v in state.hyperparams.items()
                 if jnp.issubdtype(jnp.result_type(v), jnp.floating))


def tunable_optimizer(name: str, learn: Sequence[str], *, lr0: float, momentum: float,
                      weight_decay: float) -> Tuple[LearnableOptimizer, np.ndarray, Dict[str, float]]:
    """``(optimizer, φ0 [q], start values)``: ``--inner-optimizer name`` with the hyperparameters ``learn``
    (``q = len(learn)``, names of :func:`learnable_names`) driven by φ, each by its :func:`transform_of`.

    Raises ``ValueError`` (one line) on an unknown or repeated name, or a learned hyperparameter whose start
    lies outside its transform's range (e.g. a weight decay of 0 under ``exp``).
    """
    if name not in TUNABLE:
        raise ValueError(f"inner optimizer {name!r} is not tuned by a hypergradient; choose from {', '.join(TUNABLE)}")
    learn = tuple(learn)
    allowed = learnable_names(name)
    bad = [n for n in learn if n not in allowed]
    if bad or len(set(learn)) != len(learn) or not learn:
        what = f"has no {', '.join(bad)}" if bad else "names a hyperparameter twice" if learn else "learns nothing"
        raise ValueError(f"--learn {','.join(learn)}: {name} {what}; it can learn {', '.join(allowed)}")
    build = tunable_builder(name)
    kwargs = TUNABLE[name](lr0, momentum, weight_decay, frozenset(learn))
    values = {**_defaults(build), **kwargs}
    start = {n: float(values[_optax_name(n)]) for n in learn}
    for n, v in start.items():
        lo, hi = TRANSFORMS[transform_of(n)][2]
        if not (math.isfinite(v) and lo < v < hi):
            raise ValueError(f"--learn {n}: {name} starts it at {v:g}, outside ({lo:g}, {hi:g}) of its "
                             f"{transform_of(n)} transform")
    base = optax.inject_hyperparams(build)(**kwargs)
    transforms = {_optax_name(n): TRANSFORMS[transform_of(n)][0] for n in learn}
    opt = hyperparams_from_phi(base, [_optax_name(n) for n in learn], transforms)
    phi0 = np.asarray([TRANSFORMS[transform_of(n)][1](start[n]) for n in learn], np.float64)
    return opt, phi0, start
