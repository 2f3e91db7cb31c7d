"""The outer loop's settings and state: :class:`HPOConfig`, :class:`InnerProblem`, :class:`HPOState`.

Hyperparameters ``φ`` are updated every τ inner steps with an optax outer
optimizer (Adam by default) fed with a hypergradient. The methods (``none``,
``local``, ``glocal``, ``global``, ``sgld``) are objects of
:mod:`glocal_cli.methods`; :class:`~glocal_cli.runner.HPORunner` and
:class:`~glocal_cli.runner.SeedGroupRunner` (:mod:`glocal_cli.runner`) advance an
explicit :class:`HPOState` pytree window by window.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from glocal_cli import dmd
from glocal_cli.errors import UserError
from glocal_cli.estimators import ESTIMATORS, needs_window
from glocal_cli.hypergrad import MODES as GRAD_MODES
from glocal_cli.hypergrad import VAL_GRADS
from glocal_cli.settings import check_choices, section, setting

METHODS = ("none", "local", "glocal", "global", "sgld")
OUTER_OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd, "rmsprop": optax.rmsprop}
TUNING_METHODS = ("local", "glocal", "global", "sgld")  # the methods that update phi (an outer optimizer)
TANGENT_METHODS = ("local", "glocal", "global")  # hypergradients by tangents through the unrolled steps
WINDOW_METHODS = ("local", "glocal")  # windows that record local hypergradients and validate inside
GLOCAL_ONLY, SGLD_ONLY = ("glocal",), ("sgld",)
RUN_PANEL, OUTER_PANEL, DMD_PANEL, SGLD_PANEL, PERF_PANEL = "Run", "Outer loop", "Glocal / DMD", "SGLD", "Performance"
DEFAULT_OUTER_LR = 0.1  # outer_lr unset and no task to resolve it (the MNIST-family value)
DEFAULT_SGLD_STEP, DEFAULT_SGLD_VAL_BATCH = 1e-3, 128  # sgld.step_size / val_batch unset and no task


class InnerProblem(NamedTuple):
    """The inner training problem.

    Attributes:
      init_state: inner state at ``t = 0`` (pytree of floating arrays).
      step: ``(state, phi [q], batch, data) -> state``, pure.
      val_loss: ``(state, data) -> scalar``, pure (full-batch validation loss).
      batches: host function ``(start_step, n_steps) -> batch pytree`` with a
        leading ``[n_steps]`` axis; must be a pure function of its arguments.
      data: pytree passed to ``step`` and ``val_loss`` (device arrays), or None.
      hyperparams: ``phi -> {name: value}`` for logging (optional).
      train_loss: ``(params, phi, batch, data) -> scalar``, the minibatch training
        loss whose Gibbs distribution ``sgld`` samples (``params = state[0]``); the
        other methods use ``step`` only.
      val_loss_batch: ``(params, val_idx [b], data) -> scalar``, the validation loss
        on a subsample (``sgld``'s ``u_t``).
      n_train, n_val: training / validation set sizes (``sgld``: ``T₀ = temperature / n_train``).
    """

    init_state: Any
    step: Callable
    val_loss: Callable
    batches: Callable[[int, int], Any]
    data: Any = None
    hyperparams: Optional[Callable] = None
    train_loss: Optional[Callable] = None
    val_loss_batch: Optional[Callable] = None
    n_train: int = 0
    n_val: int = 0


@dataclasses.dataclass(frozen=True)
class SGLDConfig:
    """Settings of the ``sgld`` method (``params.yaml``'s ``hpo.sgld``; flat names ``sgld_<field>``).

    ``step_size`` and ``val_batch`` unset: the run's task default (set by
    :class:`~glocal_cli.config.TrainConfig`: lr0 or 0.1 for reweighting; the
    batch size); an HPOConfig used alone takes 1e-3 and 128.
    """

    temperature: float = setting(1.0, "sgld: temperature of the summed training loss (1: posterior); T0 = this / n_train",
                                 panel=SGLD_PANEL, methods=SGLD_ONLY)
    step_size: Optional[float] = setting(None, "sgld: SGLD step eta; unset: lr0 (0.1 for reweight)",
                                         panel=SGLD_PANEL, methods=SGLD_ONLY)
    burn_in: int = setting(0, "sgld: steps at each window's start not averaged", panel=SGLD_PANEL, methods=SGLD_ONLY)
    thin: int = setting(1, "sgld: average every thin-th step after the burn-in", panel=SGLD_PANEL, methods=SGLD_ONLY)
    damping: float = setting(0.0, "sgld: damping delta of the z recurrence", panel=SGLD_PANEL, methods=SGLD_ONLY)
    persist_z: bool = setting(False, "sgld: carry z across windows (false: z = 0 at every window's start)",
                              panel=SGLD_PANEL, methods=SGLD_ONLY)
    val_batch: Optional[int] = setting(None, "sgld: validation examples per step for u_t; unset: the batch size",
                                       panel=SGLD_PANEL, methods=SGLD_ONLY)

    def __post_init__(self) -> None:
        checks = (
            ("sgld temperature", self.temperature, self.temperature >= 0, ">= 0"),
            ("sgld step size", self.step_size, self.step_size is None or self.step_size > 0, "> 0"),
            ("sgld damping", self.damping, self.damping >= 0, ">= 0"),
            ("sgld val_batch", self.val_batch, self.val_batch is None or self.val_batch >= 1, ">= 1"),
            ("sgld burn_in", self.burn_in, self.burn_in >= 0, ">= 0"),
            ("sgld thin", self.thin, self.thin >= 1, ">= 1"),
        )
        for name, value, ok, allowed in checks:
            if not ok:
                raise UserError(f"{name} must be {allowed}, got {value}")


@dataclasses.dataclass(frozen=True)
class HPOConfig:
    """Settings of the outer loop (paper defaults), validated when built.

    ``params.yaml``'s ``hpo`` section; nested in :class:`~glocal_cli.config.TrainConfig`
    as ``TrainConfig.hpo``. A bad value raises a one-line
    :class:`~glocal_cli.errors.UserError` (a ``ValueError``) naming it.
    """

    method: str = setting("glocal", "how phi is updated every tau steps; sgld: docs/sgld.md",
                          choices=METHODS, panel=RUN_PANEL)
    steps: int = setting(20_000, "inner training steps T", panel=RUN_PANEL)
    tau: int = setting(50, "inner steps per hyperparameter update", panel=OUTER_PANEL)
    sigma: int = setting(20, "local hypergradients fed to DMD (the last sigma of each window)",
                         panel=DMD_PANEL, methods=GLOCAL_ONLY)
    m: int = setting(10, "Hankel time-delay stacks", panel=DMD_PANEL, methods=GLOCAL_ONLY)
    outer_lr: Optional[float] = setting(
        None, "learning rate of the outer optimizer on phi; unset: the task's (0.1 MNIST-family optimizer task, "
              "0.01 reweight / CIFAR; 0.1 for an HPOConfig alone)", panel=OUTER_PANEL, methods=TUNING_METHODS)
    outer_optimizer: Union[str, optax.GradientTransformation] = setting(
        "adam", "the outer optimizer, built with outer_lr (from Python: any optax.GradientTransformation)",
        choices=tuple(OUTER_OPTIMIZERS), panel=OUTER_PANEL, methods=TUNING_METHODS)
    estimator: str = setting(
        "glocal", "what turns a glocal window's sigma local hypergradients into one: glocal is the paper's Eq. 20 "
                  "(docs/method.md)", choices=ESTIMATORS, panel=DMD_PANEL, methods=GLOCAL_ONLY)
    dmd_tol: Optional[float] = setting(
        None, "|lambda - 1| of 'near 1'; unset: the estimator's default (0.1 glocal, 0.02 strict / horizon)",
        panel=DMD_PANEL, methods=GLOCAL_ONLY)
    dmd_rank_rtol: float = setting(dmd.DEFAULT_RANK_RTOL, "SVD truncation of the Hankel fit (1e-10: exact DMD)",
                                   panel=DMD_PANEL, methods=GLOCAL_ONLY)
    grad_mode: str = setting("auto", "tangents by forward or reverse mode; auto: by the number of hyperparameters",
                             choices=GRAD_MODES, panel=OUTER_PANEL, methods=TANGENT_METHODS)
    global_outer_steps: Optional[int] = setting(None, "outer steps of the global method, >= 1; unset: T / tau",
                                                panel=OUTER_PANEL, methods=("global",))
    val_batch: int = setting(-1, "validations batched after the window's scan; -1: auto, 0: in the scan",
                             panel=PERF_PANEL, methods=WINDOW_METHODS)
    val_grad: str = setting(
        "auto", "forward-mode windows: h = grad(val loss) . Z by reverse (one backward pass, contracted with the "
                "q tangents) | forward (q jvps of the val loss, no backward pass) | auto (reverse on CPU, forward "
                "on an accelerator: measured faster there, docs/performance.md)",
        choices=("auto",) + VAL_GRADS, panel=PERF_PANEL, methods=TANGENT_METHODS)
    seed: int = setting(0, "fixes split, initialization, batch order and sgld's Langevin noise", panel=RUN_PANEL)
    sgld: SGLDConfig = section(SGLDConfig, "the sgld method (params.yaml hpo.sgld)", prefix="sgld_")

    def __post_init__(self) -> None:
        """Raise a one-line :class:`UserError` on a bad or inconsistent value."""
        check_choices(self, skip=lambda name, value: name == "outer_optimizer" and not isinstance(value, str))
        for name in ("steps", "tau", "sigma", "m"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps < self.tau:
            raise UserError(f"need 1 <= tau <= steps, got tau={self.tau}, steps={self.steps}")
        if self.steps % self.tau:
            raise UserError(f"steps must be a multiple of tau, got steps={self.steps}, tau={self.tau}")
        if self.method == "glocal" and not 1 <= self.m <= self.sigma - 2:
            raise UserError(f"glocal needs 1 <= m <= sigma - 2, got m={self.m}, sigma={self.sigma}")
        if self.method == "glocal" and self.sigma > self.tau:
            raise UserError(f"sigma must be <= tau, got sigma={self.sigma}, tau={self.tau}")
        if self.outer_lr is not None and not (math.isfinite(self.outer_lr) and self.outer_lr > 0):
            raise UserError(f"outer_lr must be a finite number > 0, got {self.outer_lr}")
        if self.seed < 0:
            raise UserError(f"--seed must be >= 0, got {self.seed}")
        if self.dmd_tol is not None and not (math.isfinite(self.dmd_tol) and self.dmd_tol > 0):
            raise UserError(f"dmd_tol must be a finite number > 0 (or unset: the estimator's default), got {self.dmd_tol}")
        if not (math.isfinite(self.dmd_rank_rtol) and 0 <= self.dmd_rank_rtol < 1):
            raise UserError(f"dmd_rank_rtol must be in [0, 1), got {self.dmd_rank_rtol}")
        if self.global_outer_steps is not None and self.global_outer_steps < 1:
            raise UserError(f"global_outer_steps must be >= 1 (or unset: T / tau), got {self.global_outer_steps}")
        if self.val_batch < -1:
            raise UserError(f"val_batch must be -1 (auto), 0 (in the scan) or a positive count, got {self.val_batch}")
        outer_optimizer(self.outer_optimizer, self.lr)  # raises on an unknown name
        if self.method == "sgld":
            if not 0 <= self.sgld.burn_in < self.tau:
                raise UserError(f"sgld burn_in must be in [0, tau={self.tau}), got {self.sgld.burn_in}")
            if not 1 <= self.sgld.thin <= self.tau:
                raise UserError(f"sgld thin must be in [1, tau={self.tau}], got {self.sgld.thin}")

    @property
    def lr(self) -> float:
        """The outer learning rate: ``outer_lr``, or 0.1 when unset (a TrainConfig sets its task's)."""
        return DEFAULT_OUTER_LR if self.outer_lr is None else float(self.outer_lr)

    @property
    def n_record(self) -> int:
        """Local hypergradients a window records: σ for glocal with an estimator that reads them all, else 1 (``h_τ``)."""
        return self.sigma if self.method == "glocal" and needs_window(self.estimator) else 1

    @property
    def windows(self) -> int:
        """S = T / τ windows per training run."""
        return self.steps // self.tau

    @property
    def outer_steps(self) -> int:
        """Number of hyperparameter updates of a run."""
        if self.method == "global":
            return self.global_outer_steps or self.windows
        return self.windows



def outer_optimizer(spec: Union[str, optax.GradientTransformation], lr: float) -> optax.GradientTransformation:
    """The outer optimizer on ``φ [q]``.

    ``spec`` is any ``optax.GradientTransformation`` (used as given; ``lr`` is
    ignored), or a name from :data:`OUTER_OPTIMIZERS` (``adam``, ``sgd``,
    ``rmsprop``) built with learning rate ``lr``: the same object for the same
    ``(name, lr)``, so the programs compiled with it are shared.
    """
    if isinstance(spec, optax.GradientTransformation):
        return spec
    if spec not in OUTER_OPTIMIZERS:
        raise UserError(
            f"outer optimizer must be an optax.GradientTransformation or one of {', '.join(OUTER_OPTIMIZERS)}, got {spec!r}"
        )
    return _named_outer_optimizer(spec, float(lr))


@functools.lru_cache(maxsize=None)
def _named_outer_optimizer(name: str, lr: float) -> optax.GradientTransformation:
    return OUTER_OPTIMIZERS[name](lr)


def outer_update(tx: optax.GradientTransformation, phi, outer, grad, ok):
    """One outer step ``(phi [q], outer state, grad [q], ok) -> (phi, outer state)``, pure (jit it).

    Where ``ok`` is false (a non-finite window) φ and the outer state are kept.
    """
    updates, new_outer = tx.update(jnp.asarray(grad, phi.dtype), outer, phi)
    new_phi = optax.apply_updates(phi, updates)
    keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
    return keep(new_phi, phi), jax.tree_util.tree_map(keep, new_outer, outer)


class HPOState(NamedTuple):
    """Everything the outer loop carries between windows (checkpoint this).

    Attributes:
      inner: inner state (model parameters, optimizer state).
      phi: ``[q]`` hyperparameters.
      outer: outer optimizer state.
      outer_step: number of completed outer steps (windows, or global retrains).
      aux: the method's own state (:meth:`glocal_cli.methods.Method.init_aux`): sgld's ``z``,
        glocal's recorded local hypergradients ``[σ, q]``, global's ``θ_0``; ``()`` for none / local.
    """

    inner: Any
    phi: jnp.ndarray
    outer: Any
    outer_step: int
    aux: Any = ()
