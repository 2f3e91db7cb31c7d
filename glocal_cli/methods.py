"""The HPO methods as objects: ``none``, ``local``, ``glocal``, ``global``, ``sgld``.

A method is a small frozen object (in the shape of learned_optimization's truncated
step): it holds the inner problem's pure functions and its resolved static settings, and
says what one window (one outer step) does to the carried state ``(inner, φ, outer
optimizer state, aux)``:

* :meth:`Method.init_aux`: the method's own state in the :class:`~glocal_cli.hpo.HPOState`
  pytree (``sgld``: its adjoint-forward ``z``; ``glocal``: the window's recorded local
  hypergradients ``[σ, q]``; ``global``: ``θ_0``, which every outer step retrains from);
* :meth:`Method.inputs`: what the host hands the window (the minibatches; ``sgld``: and
  its Langevin key), a pure function of the seed and the outer step;
* :meth:`Method.window`: the device-side window ``(carry, inputs, data) -> (carry,
  WindowRecord)``, pure: :class:`~glocal_cli.runner.SeedGroupRunner` vmaps (and
  shard_maps) it over seeds, and a single run is a group of one;
* :meth:`Method.host`: an optional host step after it (``glocal``: the estimator, NumPy on
  the host, then the outer update).

``global`` is the one method whose window is a host loop: it retrains from ``θ_0`` over
all T steps with tangents carried, in compiled chunks of τ steps (:func:`tangents_to_end`,
the same loop ``glocal verify`` uses for its true global hypergradients).

Equal methods compare equal (their functions by identity, their settings by value), so
the compiled programs, cached by their static arguments (:func:`compiled`), are shared by
every runner built on the same problem: the seeds of a group, a resumed run, the
minibatch orders of ``glocal verify``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from glocal_cli import hypergrad
from glocal_cli.estimators import make_estimator
from glocal_cli.hpo import HPOConfig, InnerProblem, outer_optimizer, outer_update
from glocal_cli.runtime import Runtime


class Carry(NamedTuple):
    """What a window carries (an :class:`~glocal_cli.hpo.HPOState` without its outer-step count)."""

    inner: Any
    phi: Any
    outer: Any
    aux: Any


class WindowRecord(NamedTuple):
    """One window: what the window computed, from the device to a ``history.csv`` row.

    For a group of seeds every array has a leading ``[S]`` axis and ``dmd`` is a list
    (one estimate per seed); :meth:`seed` gives one seed's record (host NumPy).

    Attributes:
      phi: ``[q]`` φ used in the window.
      phi_next: ``[q]`` φ after the outer update (unchanged where not finite / ``none``).
      hypergrad_local: ``[q]`` the last local hypergradient (zeros for ``none``).
      hypergrad_used: ``[q]`` what the outer optimizer got.
      val_loss: validation loss at the window's end (NaN for ``none``).
      finite: inner state and hypergradient finite.
      hypergrads: ``[n_record, q]`` the recorded local hypergradients.
      outer_step: 1-based index of the completed outer step (set by the runner).
      step: inner steps done in the current training run (set by the runner).
      dmd: ``glocal``: the estimator's :class:`~glocal_cli.estimators.Estimate` (a list for a group).
      seconds: host seconds attributed to the window (set by ``glocal train``).
    """

    phi: Any
    phi_next: Any
    hypergrad_local: Any
    hypergrad_used: Any
    val_loss: Any
    finite: Any
    hypergrads: Any
    outer_step: Any = None
    step: Any = None
    dmd: Any = None
    seconds: Any = None

    def seed(self, s: int) -> "WindowRecord":
        """Seed ``s`` of a group's record, arrays as host NumPy (float64; ``finite`` a bool)."""
        f64 = lambda x: np.asarray(x[s], np.float64)  # noqa: E731
        return WindowRecord(
            phi=f64(self.phi), phi_next=f64(self.phi_next), hypergrad_local=f64(self.hypergrad_local),
            hypergrad_used=f64(self.hypergrad_used), val_loss=float(self.val_loss[s]), finite=bool(self.finite[s]),
            hypergrads=f64(self.hypergrads), outer_step=self.outer_step, step=self.step,
            dmd=None if self.dmd is None else self.dmd[s], seconds=self.seconds)


class HypergradToEnd(NamedTuple):
    """What :func:`tangents_to_end` returns (leading ``[S]`` axes for a group; none for one seed).

    Attributes:
      state: inner state at the end (or at the first window where no seed was finite).
      hypergrads: ``[1, q]`` the hypergradient ``h_T`` (NaN where not finite).
      val_loss: validation loss at T (NaN where not finite).
      finite: whether the state and ``h_T`` are finite.
      steps_done: inner steps of the run reached (T, or where it stopped).
    """

    state: Any
    hypergrads: np.ndarray
    val_loss: Any
    finite: Any
    steps_done: int


# ---------------------------------------------------------------------------------- the methods


@dataclasses.dataclass(frozen=True)
class Method:
    """One HPO method with its static settings; the base class is the tangent-free part.

    Attributes:
      step, val_loss: the inner problem's pure functions (:class:`~glocal_cli.hpo.InnerProblem`).
      tx: the outer optimizer on φ.
      tau, steps: window length τ and T.
      grad_mode: ``auto`` | ``forward`` | ``reverse`` (resolved by q inside the window).
      n_record: local hypergradients a window records.
      val_batch, val_grad: resolved validation choices (:class:`~glocal_cli.runtime.Runtime`).
    """

    name: ClassVar[str] = ""
    tunes: ClassVar[bool] = True  # updates φ (an outer optimizer)
    samples: ClassVar[bool] = False  # samples exp(-L/T0): needs the task's training loss L(θ, φ) (sgld)
    step: Callable = None
    val_loss: Callable = None
    tx: Any = None
    tau: int = 1
    steps: int = 1
    grad_mode: str = "auto"
    n_record: int = 1
    val_batch: int = 0
    val_grad: str = "reverse"

    def init_aux(self, problem: InnerProblem, phi) -> Any:
        """The method's own state at the start of a run (a pytree; ``()`` for none)."""
        return ()

    def inputs(self, problem: InnerProblem, cfg: HPOConfig, outer_step: int) -> Any:
        """The window's host inputs: the minibatches of inner steps ``outer_step·τ ..`` (``[τ, ...]``)."""
        return problem.batches(outer_step * self.tau, self.tau)

    def window(self, carry: Carry, inputs, data) -> Tuple[Carry, WindowRecord]:
        raise NotImplementedError

    #: the optional host step ``(method, runner, carry, record, on_chunk) -> (carry, record)`` after the window
    host: ClassVar[Optional[Callable]] = None

    def mode(self, q: int) -> str:
        return hypergrad.choose_mode(q, self.grad_mode)

    def local_window(self, carry: Carry, batches, data):
        """``(window output, h_τ [q], finite)`` of a window recording ``n_record`` hypergradients (forward
        or reverse mode by q)."""
        out = chunk_fn(self, self.n_record, self.mode(carry.phi.shape[0]))(carry.inner, carry.phi, batches, data)
        h = out.hypergrads[-1]
        return out, h, out.finite & jnp.all(jnp.isfinite(h))

    def apply_update(self, phi, outer, grad, ok) -> Tuple[Any, Any]:
        """``(φ, outer state)`` after one outer step with ``grad [q]`` (both kept where not ``ok``); pure."""
        return outer_update(self.tx, phi, outer, grad, ok)

    def update(self, carry: Carry, grad, ok) -> Tuple[Any, Any]:
        """:meth:`apply_update` on the carried φ and outer state."""
        return self.apply_update(carry.phi, carry.outer, grad, ok)

    def steps_done(self, outer_step: int) -> int:
        """Inner steps of the current training run completed after ``outer_step`` outer steps."""
        return outer_step * self.tau

    @property
    def steps_per_outer(self) -> int:
        """Inner steps one outer step trains (τ; T for ``global``)."""
        return self.tau


@dataclasses.dataclass(frozen=True)
class NoneMethod(Method):
    """``none``: φ fixed, plain training (no tangents)."""

    name: ClassVar[str] = "none"
    tunes: ClassVar[bool] = False

    def window(self, carry, inputs, data):
        inner, finite = hypergrad.train_window(self.step, carry.inner, carry.phi, inputs, data)
        q, dt = carry.phi.shape[0], carry.phi.dtype
        zeros = jnp.zeros((q,), dt)
        rec = WindowRecord(carry.phi, carry.phi, zeros, zeros, jnp.asarray(jnp.nan, dt), finite, jnp.zeros((0, q), dt))
        return carry._replace(inner=inner), rec


@dataclasses.dataclass(frozen=True)
class LocalMethod(Method):
    """``local``: the local hypergradient at the window's end, ``h_τ``, and the outer update, in one program."""

    name: ClassVar[str] = "local"

    def window(self, carry, inputs, data):
        out, h, finite = self.local_window(carry, inputs, data)
        phi, outer = self.update(carry, h, finite)
        rec = WindowRecord(carry.phi, phi, h, h, out.val_losses[-1], finite, out.hypergrads)
        return Carry(out.state, phi, outer, carry.aux), rec


def _glocal_host(method: "GlocalMethod", runner, carry: Carry, rec: WindowRecord, on_chunk=None):
    """The estimator on each seed's ``[σ, q]`` recorded hypergradients (host NumPy), then the outer update."""
    h_all, finite = jax.device_get((carry.aux, rec.finite))  # one transfer
    h_all = np.asarray(h_all, np.float64)
    steps_left = method.steps - rec.step
    estimates = [method.estimator(h_all[s], steps_left) for s in range(runner.n_seeds)]
    used = np.stack([np.asarray(e.value, np.float64) for e in estimates])  # [S, q], recorded as is
    used = runner.pad(used)  # padding seeds take their seed's estimate (never recorded)
    grad = jnp.asarray(np.where(finite[:, None], used, 0.0), carry.phi.dtype)
    phi, outer = runner.program(method.apply_update)(carry.phi, carry.outer, *runner.place((grad, jnp.asarray(finite))))
    return carry._replace(phi=phi, outer=outer), rec._replace(phi_next=phi, hypergrad_used=used, dmd=estimates)


@dataclasses.dataclass(frozen=True)
class GlocalMethod(Method):
    """``glocal``: the window records its last σ local hypergradients (in ``aux``); the host runs the
    estimator (:mod:`glocal_cli.estimators`; default the paper's Eq. 20 by Hankel DMD) and the update."""

    name: ClassVar[str] = "glocal"
    estimator: Callable = dataclasses.field(default=None, compare=False)  # host NumPy: not in any program
    host: ClassVar[Callable] = _glocal_host

    def init_aux(self, problem, phi):
        return jnp.zeros((self.n_record, phi.shape[0]), phi.dtype)

    def window(self, carry, inputs, data):
        out, h, finite = self.local_window(carry, inputs, data)
        rec = WindowRecord(carry.phi, carry.phi, h, h, out.val_losses[-1], finite, out.hypergrads)
        return Carry(out.state, carry.phi, carry.outer, out.hypergrads), rec


@dataclasses.dataclass(frozen=True)
class SGLDMethod(Method):
    """``sgld``: the window's τ steps are SGLD samples of ``exp(−L_T/T₀)`` and the hypergradient is the
    adjoint-forward Monte-Carlo estimate of :mod:`glocal_cli.sgld`; ``aux`` is its ``z``.

    The noise and the validation subsamples come from a key that is a pure function of
    (seed, window), so a resumed run repeats them exactly. The window's reported
    validation loss is the full one at its end.
    """

    name: ClassVar[str] = "sgld"
    samples: ClassVar[bool] = True
    train_loss: Callable = None
    val_loss_batch: Callable = None
    settings: Any = None  # sgld.SGLDSettings
    sgld_val_batch: int = 128
    n_val: int = 1
    persist_z: bool = False

    def init_aux(self, problem, phi):
        return jax.tree_util.tree_map(jnp.zeros_like, problem.init_state[0])

    def inputs(self, problem, cfg, outer_step):
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), outer_step)
        return super().inputs(problem, cfg, outer_step), key

    def window(self, carry, inputs, data):
        from glocal_cli import sgld

        batches, key = inputs
        params, rest = carry.inner[0], tuple(carry.inner[1:])
        z = carry.aux if self.persist_z else jax.tree_util.tree_map(jnp.zeros_like, carry.aux)
        k_noise, k_val = jax.random.split(key)
        val_idx = jax.random.randint(k_val, (self.tau, self.sgld_val_batch), 0, self.n_val)
        val = lambda p, phi, idx, d: self.val_loss_batch(p, idx, d)  # noqa: E731
        out = sgld.sgld_window(self.train_loss, val, params, z, carry.phi, batches, val_idx, k_noise, data,
                               self.settings)
        inner = (out.params,) + rest
        full = self.val_loss(inner, data)
        finite = out.finite & jnp.isfinite(full)
        h = out.hypergrad
        phi, outer = self.update(carry, h, finite)
        rec = WindowRecord(carry.phi, phi, h, h, full, finite, h[None, :])
        return Carry(inner, phi, outer, out.z), rec


def _global_host(method: "GlobalMethod", runner, carry: Carry, rec, on_chunk=None):
    """Retrain from ``θ_0`` (``aux``) to T with φ fixed and tangents carried; update with ``h_T``."""
    end = tangents_to_end(runner, carry.aux, carry.phi, 0, on_chunk)
    h = end.hypergrads[:, -1]
    finite = np.asarray(end.finite)
    grad = jnp.asarray(np.where(finite[:, None], np.nan_to_num(h), 0.0), carry.phi.dtype)
    phi, outer = runner.program(method.apply_update)(carry.phi, carry.outer, *runner.place((grad, jnp.asarray(finite))))
    rec = WindowRecord(carry.phi, phi, h, h, np.asarray(end.val_loss), finite, h[:, None, :])
    return Carry(end.state, phi, outer, carry.aux), rec


@dataclasses.dataclass(frozen=True)
class GlobalMethod(Method):
    """``global``: every outer step retrains from ``θ_0`` for all T steps with tangents carried and uses ``h_T``.

    Its window is a host loop over compiled chunks of τ steps (:func:`tangents_to_end`);
    forward mode only.
    """

    name: ClassVar[str] = "global"
    host: ClassVar[Callable] = _global_host
    window = None  # no device-side window: the host step is the whole outer step

    def init_aux(self, problem, phi):
        return problem.init_state

    def inputs(self, problem, cfg, outer_step):
        return None

    def steps_done(self, outer_step: int) -> int:
        return self.steps if outer_step else 0

    @property
    def steps_per_outer(self) -> int:
        return self.steps


#: Method name -> class; :data:`glocal_cli.hpo.METHODS` lists the names a config accepts.
METHOD_CLASSES: Dict[str, type] = {c.name: c for c in (NoneMethod, LocalMethod, GlocalMethod, GlobalMethod, SGLDMethod)}


def make_method(problem: InnerProblem, cfg: HPOConfig, runtime: Runtime) -> Method:
    """The method ``cfg.method`` for ``problem`` with the resolved ``runtime`` choices."""
    cls = METHOD_CLASSES[cfg.method]
    base = dict(step=problem.step, val_loss=problem.val_loss, tx=outer_optimizer(cfg.outer_optimizer, cfg.lr),
                tau=cfg.tau, steps=cfg.steps, grad_mode=cfg.grad_mode, n_record=cfg.n_record,
                val_batch=runtime.val_batch, val_grad=runtime.val_grad)
    if cls is GlobalMethod and hypergrad.choose_mode(1, cfg.grad_mode) == "reverse":
        raise ValueError("the global method needs forward mode (tangents carried over T steps)")
    if cls is GlocalMethod:
        base["estimator"] = make_estimator(cfg.estimator, m=cfg.m, tol=cfg.dmd_tol, rank_rtol=cfg.dmd_rank_rtol)
    if cls is SGLDMethod:
        base.update(_sgld_fields(problem, cfg))
    return cls(**base)


def _sgld_fields(problem: InnerProblem, cfg: HPOConfig) -> dict:
    """``T₀ = sgld.temperature / n_train`` (the tasks' training loss is a mean, so a temperature of 1 is
    the Bayesian posterior of the summed loss); the step size and validation batch, or their defaults."""
    from glocal_cli import sgld
    from glocal_cli.hpo import DEFAULT_SGLD_STEP, DEFAULT_SGLD_VAL_BATCH

    if problem.train_loss is None or problem.val_loss_batch is None:
        raise ValueError("the sgld method needs an inner problem with train_loss and val_loss_batch")
    c = cfg.sgld
    temp = c.temperature / problem.n_train if problem.n_train else c.temperature
    step = DEFAULT_SGLD_STEP if c.step_size is None else c.step_size
    return dict(train_loss=problem.train_loss, val_loss_batch=problem.val_loss_batch,
                settings=sgld.SGLDSettings(step, temp, c.burn_in, c.thin, c.damping),
                sgld_val_batch=DEFAULT_SGLD_VAL_BATCH if c.val_batch is None else c.val_batch,
                n_val=max(int(problem.n_val), 1), persist_z=c.persist_z)


# ---------------------------------------------------------------------------------- tangents to T


@functools.lru_cache(maxsize=256)
def chunk_fn(method: Method, n_record: int, mode: str = "forward") -> Callable:
    """``(inner, phi, batches, data, tangents=None) -> WindowOutput``: one window of τ steps recording the
    local hypergradients of its last ``n_record`` steps; forward mode continues from ``tangents`` (None:
    zero). One function object per ``(method, n_record, mode)``, so its compiled programs are cached."""

    def fn(inner, phi, batches, data, tangents=None):
        if mode == "forward":
            return hypergrad.forward_window(method.step, method.val_loss, inner, phi, batches, n_record, tangents,
                                            data, method.val_batch, method.val_grad)
        if mode != "reverse":
            raise ValueError(f"mode must be 'forward' or 'reverse', got {mode!r}")
        if tangents is not None:
            raise ValueError("reverse mode cannot continue from given tangents")
        return hypergrad.reverse_window(method.step, method.val_loss, inner, phi, batches, n_record, data)

    return fn


def tangents_to_end(runner, inner, phi, start: int, on_chunk: Optional[Callable[[int], None]] = None,
                    record: Optional[Mapping[int, int]] = None,
                    on_record: Optional[Callable[[int, np.ndarray], None]] = None) -> HypergradToEnd:
    """``h_T`` of every seed: train from ``inner`` at inner step ``start`` to T with φ fixed and ``Z = 0`` at ``start``.

    Forward mode, tangents carried across windows of τ steps, each window one compiled
    program over the group's seeds. This is the one loop that carries tangents to T:
    the global method's hypergradient (``start = 0``), and in ``glocal verify`` a checked
    window's true global hypergradient together with its σ local hypergradients and the
    truncated look-aheads (recorded on the way with ``record``).

    Args:
      runner: a :class:`~glocal_cli.runner.SeedGroupRunner` (its method, minibatches and placement).
      inner, phi: the group's inner states at ``start`` and ``φ [S, q]`` (fixed).
      start: inner step of ``inner``; ``T - start`` must be at least one window.
      on_chunk: ``on_chunk(τ)`` after every window (progress).
      record: ``{k: n}``: after the k-th window of τ steps (1-based, ``1 <= k <= (T - start) / τ``),
        hand the last ``n >= 1`` local hypergradients of that window, ``[S, n, q]`` host float64
        (tangents counted from ``start``), to ``on_record(k, h)``. Windows not named record
        nothing (no validation), except the last, which always records ``h_T``.
      on_record: receives the recorded windows, in order (also a non-finite one, before the run stops).

    Returns a :class:`HypergradToEnd` with leading ``[S]`` axes; stops at the first window
    after which no seed is finite (the others are NaN where not finite).
    """
    method = runner.method
    tau, steps = method.tau, method.steps
    n = (steps - start) // tau
    if n < 1:
        raise ValueError(f"start must leave at least one window before T={steps}, got {start}")
    record = {int(k): int(v) for k, v in (record or {}).items()}
    bad = {k: v for k, v in record.items() if not 1 <= k <= n or v < 1}
    if bad:
        raise ValueError(f"record must map windows 1..{n} to counts >= 1, got {bad}")
    n_record = {**record, n: max(record.get(n, 0), 1)}
    tangents, h, ok = None, None, np.ones(runner.n_padded, bool)
    for w in range(n):
        k = w + 1
        fn = runner.program(chunk_fn(method, n_record.get(k, 0)))
        out = fn(inner, phi, runner.batches(start + w * tau, tau), runner.data, tangents)
        inner, tangents = out.state, out.tangents
        if on_chunk is not None:
            on_chunk(tau)
        ok = ok & np.asarray(out.finite)
        if k in n_record:
            h = np.asarray(out.hypergrads, np.float64)
            ok = ok & np.all(np.isfinite(h), axis=(1, 2))
            if k in record and on_record is not None:
                on_record(k, h[:, -record[k]:])
        if not ok.any():
            q = phi.shape[-1]
            nan = np.full((runner.n_padded, 1, q), np.nan)
            return HypergradToEnd(inner, nan, np.full(runner.n_padded, np.nan), ok, start + k * tau)
    h_end = np.where(ok[:, None, None], h[:, -1:], np.nan)
    val = np.where(ok, np.asarray(out.val_losses, np.float64)[:, -1], np.nan)
    return HypergradToEnd(inner, h_end, val, ok, steps)
