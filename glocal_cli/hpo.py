"""HPO drivers: ``none``, ``local``, ``glocal`` and ``global`` on one code path.

Hyperparameters ``φ`` are updated every τ inner steps with an optax outer
optimizer (Adam by default) fed with a hypergradient:

* ``none``: φ fixed, plain training (no tangents);
* ``local``: the local hypergradient at the window's end, ``h_τ``;
* ``glocal``: the window's last σ local hypergradients go through the
  estimator named by ``HPOConfig.estimator`` (:mod:`glocal_cli.estimators`;
  default ``glocal``: the paper's Eq. 20 by Hankel DMD). Its diagnostics and
  any fallback to ``h_τ`` are recorded per window;
* ``global``: every outer step retrains from ``θ_0`` for all T steps with
  tangents carried across windows, and uses ``h_T``;
* ``sgld``: the window's τ steps are SGLD samples of ``exp(−L_T/T₀)`` and the
  hypergradient is the adjoint-forward Monte-Carlo estimate of
  :mod:`glocal_cli.sgld` (needs ``InnerProblem.train_loss``).

The inner problem is an :class:`InnerProblem`; the driver is
:class:`HPORunner`, whose :meth:`HPORunner.run_window` advances an explicit
:class:`HPOState` pytree by one window (one outer step for ``global``) and
returns a :class:`WindowRecord`. The caller owns the loop, so it can show
progress, evaluate, checkpoint and resume between windows.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, List, Mapping, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from glocal_cli import dmd
from glocal_cli.errors import UserError
from glocal_cli.estimators import ESTIMATORS, Estimate, make_estimator, needs_window
from glocal_cli.hypergrad import MODES as GRAD_MODES
from glocal_cli.hypergrad import VAL_GRADS
from glocal_cli.hypergrad import choose_mode, make_train_fn, make_window_fn
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

    def resolved_val_grad(self) -> str:
        """``val_grad`` with auto resolved by the default JAX backend: reverse on CPU, forward elsewhere.

        Same ``h`` up to rounding. Measured (docs/performance.md): on an H200 the σ = 20
        validations of a glocal window take 38 ms forward against 56 ms reverse
        (glocal/local 1.93 against 2.41); on a CPU the two cost the same within noise.
        """
        if self.val_grad != "auto":
            return self.val_grad
        return "reverse" if jax.default_backend() == "cpu" else "forward"

    def resolved_val_batch(self, n_record: int) -> int:
        """Validations batched after the window's scan: ``val_batch``, or auto = 0 on CPU (in the scan), all on an accelerator."""
        if self.val_batch >= 0:
            return self.val_batch
        return 0 if jax.default_backend() == "cpu" else n_record

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
    ``rmsprop``) built with learning rate ``lr``.
    """
    if isinstance(spec, optax.GradientTransformation):
        return spec
    if spec not in OUTER_OPTIMIZERS:
        raise UserError(
            f"outer optimizer must be an optax.GradientTransformation or one of {', '.join(OUTER_OPTIMIZERS)}, got {spec!r}"
        )
    return OUTER_OPTIMIZERS[spec](lr)


def outer_update(tx: optax.GradientTransformation, phi, outer, grad, ok):
    """One outer step ``(phi [q], outer state, grad [q], ok) -> (phi, outer state)``, pure (jit it).

    Where ``ok`` is false (a non-finite window) φ and the outer state are kept.
    """
    updates, new_outer = tx.update(jnp.asarray(grad, phi.dtype), outer, phi)
    new_phi = optax.apply_updates(phi, updates)
    keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
    return keep(new_phi, phi), jax.tree_util.tree_map(keep, new_outer, outer)


class HypergradToEnd(NamedTuple):
    """What :meth:`HPORunner.hypergrad_to_end` returns.

    Attributes:
      state: inner state at the end (or at the first non-finite window).
      hypergrads: ``[1, q]`` the hypergradient ``h_T`` (NaN if not finite).
      val_loss: validation loss at T (NaN if not finite).
      finite: whether the state and ``h_T`` are finite.
      steps_done: inner steps of the run reached (T, or where it stopped).
    """

    state: Any
    hypergrads: np.ndarray
    val_loss: float
    finite: bool
    steps_done: int


class HPOState(NamedTuple):
    """Everything the outer loop carries between windows (checkpoint this).

    Attributes:
      inner: inner state (model parameters, optimizer state).
      phi: ``[q]`` hyperparameters.
      outer: outer optimizer state.
      outer_step: number of completed outer steps (windows, or global retrains).
    """

    inner: Any
    phi: jnp.ndarray
    outer: Any
    outer_step: int


@dataclasses.dataclass
class WindowRecord:
    """Per-window (per outer step) record; all arrays are host NumPy."""

    outer_step: int  # 1-based index of the completed outer step
    step: int  # inner steps done in the current training run
    phi: np.ndarray  # [q] φ used in this window (before the update)
    hypergrad_local: np.ndarray  # [q] last local hypergradient (zeros for `none`)
    hypergrad_used: np.ndarray  # [q] what the outer optimizer got
    val_loss: float  # validation loss at the window's end (NaN for `none`)
    finite: bool  # inner state and hypergradient finite
    dmd: Optional[Estimate] = None  # glocal only: the estimator's result and diagnostics
    hypergrads: Optional[np.ndarray] = None  # [n_record, q] recorded local hypergradients
    seconds: float = 0.0


class HPORunner:
    """Runs the outer loop of one method on one :class:`InnerProblem`.

    Holds only immutable configuration and jitted functions; the evolving
    state is the :class:`HPOState` passed in and returned. The outer
    optimizer is ``cfg.outer_optimizer`` (a name or any
    ``optax.GradientTransformation``).

    Example::

        runner = HPORunner(problem, HPOConfig(method="glocal", steps=200, tau=20, sigma=10, m=4))
        hs = runner.init(phi0)                   # phi0: [q]
        while not runner.done(hs):
            hs, record = runner.run_window(hs)   # record.hypergrad_used: [q]
    """

    def __init__(self, problem: InnerProblem, cfg: HPOConfig):
        self.problem = problem
        self.cfg = cfg
        self.tx = outer_optimizer(cfg.outer_optimizer, cfg.lr)
        self._train = make_train_fn(problem.step)
        self._windows = {}
        self._update = jax.jit(lambda phi, outer, grad: outer_update(self.tx, phi, outer, grad, True))
        self.estimator = make_estimator(cfg.estimator, m=cfg.m, tol=cfg.dmd_tol, rank_rtol=cfg.dmd_rank_rtol)
        if cfg.method == "sgld":
            if problem.train_loss is None or problem.val_loss_batch is None:
                raise ValueError("the sgld method needs an inner problem with train_loss and val_loss_batch")
            self._sgld_fn = _make_sgld_fn(problem, cfg)

    def with_config(self, cfg: HPOConfig, problem: Optional[InnerProblem] = None) -> "HPORunner":
        """A runner with another config, sharing the compiled functions.

        ``problem``: another problem whose ``step`` and ``val_loss`` are this one's (it may
        differ in ``init_state``, ``data`` and ``batches``, which the compiled windows take
        as arguments: another seed); default this runner's problem.
        """
        other = HPORunner(self.problem if problem is None else problem, cfg)
        other._train = self._train
        other._windows = self._windows
        if cfg.outer_optimizer == self.cfg.outer_optimizer and cfg.lr == self.cfg.lr:
            other._update = self._update
        return other


    def val_batch(self, n_record: int) -> int:
        """Validation evaluations batched after the scan: auto = 0 on CPU (in the scan), all on an accelerator."""
        return self.cfg.resolved_val_batch(n_record)

    def window_fn(self, n_record: int, mode: str):
        """The jitted window ``(state, phi [q], batches [τ, ...], data, tangents=None) -> WindowOutput``.

        Records the last ``n_record`` local hypergradients (``hypergrads [n_record, q]``);
        ``mode`` is ``"forward"`` or ``"reverse"``. Compiled once per
        ``(n_record, mode)`` and shared with runners made by :meth:`with_config`.
        """
        vb = self.val_batch(n_record)
        vg = self.cfg.resolved_val_grad()
        key = (n_record, mode, vb, vg)
        if key not in self._windows:
            self._windows[key] = make_window_fn(self.problem.step, self.problem.val_loss, n_record, mode, vb, vg)
        return self._windows[key]

    _window_fn = window_fn

    def init(self, phi0) -> HPOState:
        """Outer state at the start of a run from ``phi0 [q]``."""
        phi = jnp.asarray(phi0, dtype=jax.tree_util.tree_leaves(self.problem.init_state)[0].dtype)
        inner = self.problem.init_state
        if self.cfg.method == "sgld":  # (params, ..., z): the adjoint-forward state rides along
            inner = tuple(inner) + (jax.tree_util.tree_map(jnp.zeros_like, inner[0]),)
        return HPOState(inner, phi, self.tx.init(phi), 0)

    def done(self, hs: HPOState) -> bool:
        return hs.outer_step >= self.cfg.outer_steps

    def inner_steps_done(self, hs: HPOState) -> int:
        """Inner steps of the current training run completed at ``hs``."""
        if self.cfg.method == "global":
            return self.cfg.steps if hs.outer_step else 0
        return hs.outer_step * self.cfg.tau

    def run_window(self, hs: HPOState, on_chunk: Optional[Callable[[int], None]] = None):
        """Advance by one outer step. Returns ``(new HPOState, WindowRecord)``.

        ``on_chunk(n)`` is called after every ``n`` inner steps (progress).
        """
        cfg = self.cfg
        q = hs.phi.shape[0]
        mode = choose_mode(q, cfg.grad_mode)
        phi_np = np.asarray(hs.phi, dtype=np.float64)

        if cfg.method == "global":
            inner, h_all, val, finite, step = self._global_run(hs.phi, mode, on_chunk)
            h_local = h_all[-1]
            used = h_local
            rec_dmd = None
        elif cfg.method == "sgld":
            inner, h_all, val, finite, step = self._sgld_window(hs)
            h_local = used = h_all[-1]
            rec_dmd = None
            if on_chunk is not None:
                on_chunk(cfg.tau)
        else:
            start = hs.outer_step * cfg.tau
            batches = self.problem.batches(start, cfg.tau)
            step = start + cfg.tau
            if cfg.method == "none":
                inner, finite = self._train(hs.inner, hs.phi, batches, self.problem.data)
                finite = bool(finite)
                h_all = np.zeros((0, q))
                h_local = used = np.zeros(q)
                val, rec_dmd = float("nan"), None
            else:
                glocal = cfg.method == "glocal"
                out = self._window_fn(cfg.n_record, mode)(hs.inner, hs.phi, batches, self.problem.data)
                inner = out.state
                h_all = np.asarray(out.hypergrads, dtype=np.float64)
                val = float(out.val_losses[-1])
                h_local = h_all[-1]
                finite = bool(out.finite) and bool(np.all(np.isfinite(h_local)))
                rec_dmd = None
                used = h_local
                if glocal:
                    rec_dmd = self.estimator(h_all, cfg.steps - step)
                    used = rec_dmd.value
            if on_chunk is not None:
                on_chunk(cfg.tau)

        record = WindowRecord(
            outer_step=hs.outer_step + 1,
            step=step,
            phi=phi_np,
            hypergrad_local=np.asarray(h_local, np.float64),
            hypergrad_used=np.asarray(used, np.float64),
            val_loss=val,
            finite=finite,
            dmd=rec_dmd,
            hypergrads=h_all,
        )
        if cfg.method == "none" or not finite:
            return HPOState(inner, hs.phi, hs.outer, hs.outer_step + 1), record
        phi, outer = self._update(hs.phi, hs.outer, jnp.asarray(used, dtype=hs.phi.dtype))
        return HPOState(inner, phi, outer, hs.outer_step + 1), record

    def _sgld_window(self, hs: HPOState):
        """One window of :func:`glocal_cli.sgld.sgld_window`; ``hs.inner = (params, ..., z)``.

        Returns ``(inner, [[mean ĝ]] [1, q], val_loss, finite, step)``. The noise and the
        validation subsamples are pure functions of (seed, window), so a resumed run
        repeats them exactly.
        """
        cfg, problem = self.cfg, self.problem
        start = hs.outer_step * cfg.tau
        batches = problem.batches(start, cfg.tau)
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), hs.outer_step)
        params, z = hs.inner[0], hs.inner[-1]
        if not cfg.sgld.persist_z:
            z = jax.tree_util.tree_map(jnp.zeros_like, z)
        out, val = self._sgld_fn(params, z, hs.phi, batches, key, problem.data, hs.inner[1:-1])
        inner = (out.params,) + tuple(hs.inner[1:-1]) + (out.z,)
        h = np.asarray(out.hypergrad, np.float64)[None, :]
        finite = bool(out.finite) and bool(np.isfinite(val))
        return inner, h, float(val), finite, start + cfg.tau

    def _global_run(self, phi, mode, on_chunk):
        """Retrain from θ_0 for T steps with φ fixed, tangents carried (see :meth:`hypergrad_to_end`)."""
        if mode == "reverse":
            raise ValueError("the global method needs forward mode (tangents carried over T steps)")
        return self.hypergrad_to_end(self.problem.init_state, phi, 0, on_chunk)

    def hypergrad_to_end(
        self,
        inner,
        phi,
        start: int,
        on_chunk: Optional[Callable[[int], None]] = None,
        record: Optional[Mapping[int, int]] = None,
        on_record: Optional[Callable[[int, np.ndarray], None]] = None,
    ) -> HypergradToEnd:
        """``h_T``: train from ``inner`` at inner step ``start`` to T with φ fixed and ``Z = 0`` at ``start``.

        Forward mode, tangents carried across windows of τ steps. This is the
        one loop that carries tangents to T: the global baseline's hypergradient
        (``start = 0``), and in ``glocal verify`` a checked window's true global
        hypergradient together with its σ local hypergradients and the truncated
        look-aheads (recorded on the way with ``record``).

        Args:
          inner, phi: the inner state at ``start`` and ``φ [q]`` (fixed).
          start: inner step of ``inner``; ``T - start`` must be at least one window.
          on_chunk: ``on_chunk(τ)`` after every window (progress).
          record: ``{k: n}``: after the k-th window of τ steps (1-based, ``1 <= k <=
            (T - start) / τ``), hand the last ``n >= 1`` local hypergradients of that
            window, ``[n, q]`` host float64 (tangents counted from ``start``), to
            ``on_record(k, h)``. Windows not named record nothing (no validation), except
            the last, which always records ``h_T``.
          on_record: receives the recorded windows, in order (also a non-finite one, before the run stops).

        Returns a :class:`HypergradToEnd` ``(state, hypergrads [1, q], val_loss,
        finite, steps_done)``; stops at the first window whose state or recorded
        hypergradients are non-finite.
        """
        cfg = self.cfg
        n = (cfg.steps - start) // cfg.tau
        if n < 1:
            raise ValueError(f"start must leave at least one window before T={cfg.steps}, got {start}")
        record = {int(k): int(v) for k, v in (record or {}).items()}
        bad = {k: v for k, v in record.items() if not 1 <= k <= n or v < 1}
        if bad:
            raise ValueError(f"record must map windows 1..{n} to counts >= 1, got {bad}")
        n_record = {**record, n: max(record.get(n, 0), 1)}
        tangents = None
        for w in range(n):
            k = w + 1
            batches = self.problem.batches(start + w * cfg.tau, cfg.tau)
            out = self.window_fn(n_record.get(k, 0), "forward")(inner, phi, batches, self.problem.data, tangents)
            inner, tangents = out.state, out.tangents
            if on_chunk is not None:
                on_chunk(cfg.tau)
            finite = bool(out.finite)
            if k in n_record:
                h = np.asarray(out.hypergrads, np.float64)
                finite = finite and bool(np.all(np.isfinite(h)))
                if k in record and on_record is not None:
                    on_record(k, h[-record[k]:])
            if not finite:
                q = phi.shape[0]
                return HypergradToEnd(inner, np.full((1, q), np.nan), float("nan"), False, start + k * cfg.tau)
        return HypergradToEnd(inner, h[-1:], float(out.val_losses[-1]), True, cfg.steps)


def _make_sgld_fn(problem: InnerProblem, cfg: HPOConfig):
    """Jitted ``(params, z, phi, batches, key, data, rest) -> (SGLDWindow, full val loss)``.

    ``T₀ = sgld.temperature / n_train`` (the tasks' training loss is a mean, so a
    temperature of 1 is the Bayesian posterior of the summed loss). The validation
    subsample of each step (``sgld.val_batch`` indices, with replacement) comes from
    ``key``; the window's reported validation loss is the full one at its end.
    """
    from glocal_cli import sgld

    c = cfg.sgld
    temp = c.temperature / problem.n_train if problem.n_train else c.temperature
    step = DEFAULT_SGLD_STEP if c.step_size is None else c.step_size
    val_batch = DEFAULT_SGLD_VAL_BATCH if c.val_batch is None else c.val_batch
    settings = sgld.SGLDSettings(step, temp, c.burn_in, c.thin, c.damping)
    n_val = max(int(problem.n_val), 1)

    def val_loss(params, phi, idx, data):
        return problem.val_loss_batch(params, idx, data)

    def fn(params, z, phi, batches, key, data, rest):
        k_noise, k_val = jax.random.split(key)
        val_idx = jax.random.randint(k_val, (cfg.tau, val_batch), 0, n_val)
        out = sgld.sgld_window(problem.train_loss, val_loss, params, z, phi, batches, val_idx, k_noise, data, settings)
        full = problem.val_loss((out.params,) + tuple(rest), data)
        return out, full

    return jax.jit(fn)


def run(problem: InnerProblem, cfg: HPOConfig, phi0) -> tuple[HPOState, List[WindowRecord]]:
    """Run a whole method to the end (no checkpoints); stops at the first non-finite window."""
    runner = HPORunner(problem, cfg)
    hs = runner.init(phi0)
    records: List[WindowRecord] = []
    while not runner.done(hs):
        hs, rec = runner.run_window(hs)
        records.append(rec)
        if not rec.finite:
            break
    return hs, records
