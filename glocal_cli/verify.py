"""Does an estimator approximate the TRUE global hypergradient? (the reviewers' question)

For a checked window ``w`` (inner steps ``start = (w-1)τ .. wτ``) of a glocal
training run, from the window's start state with φ fixed and the tangents
reset to zero at ``start``, training continues to the end T with tangents
carried across chunks of τ steps (forward mode). The hypergradient at T is the
window's **true global hypergradient** ``h_T``. The same tangent run gives,
for free,

* the window's last σ local hypergradients ``h_{τ-σ+1} .. h_τ`` (its first
  chunk), which every estimator of :mod:`glocal_cli.estimators` is fed with
  ``steps_left = T - wτ``;
* the **truncated look-aheads** ``h_{kτ}`` (k = 2, 4: the hypergradient after
  k windows with tangents, "the best local money can buy"); they cost k
  windows with tangents instead of one (reported as tangent steps and seconds).

The same loop (:meth:`glocal_cli.hpo.HPORunner.hypergrad_to_end`, the one that
carries tangents to T for the ``global`` method too) run again from the same
window start with K other minibatch orders (``expected_orders``, K >= 4; order
``o`` draws its batches with the seed ``ORDER_SEED + o``) gives K single-order
truths; their mean is the **expected global hypergradient** ``E_order[h_T]``,
the second reference. Where the training is chaotic (lr0 0.1) one order's
``h_T`` varies across orders by about its own size, so agreement with the
single-order truth is mostly noise; the expected global is the signal an
estimator can hope to track.

Every estimate is compared with both references by cosine similarity, relative
error ``‖e - ref‖ / ‖ref‖`` and per-component sign agreement (Adam follows
signs). The paper's ``glocal`` is also split by how its window selected DMD modes
(``tol``: eigenvalues within ``dmd_tol`` of 1; ``nearest``: none was, the
nearest one(s) were summed) and run with ``if_empty`` = ``zero`` and ``local``
on the same windows (:data:`IF_EMPTY_VARIANTS`), the choice the paper leaves open.

Problems:

* the quadratic of :mod:`glocal_cli.quadratic` (closed forms: the truth and the
  look-aheads are exact), a sanity row where the DMD model is exact;
* a classifier on Fashion-MNIST trained by SGD with learnable learning rate,
  momentum and weight decay, at two initial learning rates (the paper's
  Fig. 4/5 setting lr0 = 1e-3, and 0.1). The CPU protocol (``profile="cpu"``)
  uses a one-hidden-layer MLP and a reduced horizon T so that it finishes in
  minutes on 2 cores; the paper protocol (``profile="paper"``) uses LeNet and
  T = 20 000 (a GPU job).

A **batch-size noise study** runs one window from the same start state with
several minibatch orders at batch sizes 128, 512 and 2048 and reports the
spread of ``h_t`` across orders relative to its mean, the per-component sign
agreement across orders, and the lag-1 autocorrelation of the order-to-order
deviations and of the increments ``h_t - h_{t-1}`` within the window.

This module computes and returns a :class:`VerifyResult`; writing files is
the command's job (:mod:`glocal_cli.commands.verify`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from glocal_cli import quadratic, settings
from glocal_cli.config import TrainConfig
from glocal_cli.errors import UserError
from glocal_cli.estimators import ESTIMATORS, make_estimator
from glocal_cli.hpo import HPOConfig, HPORunner
from glocal_cli.hypergrad import make_window_fn, window_hypergrads
from glocal_cli.settings import section, setting

PROFILES = ("cpu", "paper", "quick")
MODELS = ("mlp", "lenet")
ORDER_SEED = 10_000  # minibatch order o of the expected global (and of the noise study) draws with seed ORDER_SEED + o
MIN_ORDERS = 4
PROBLEMS = ("quadratic", "classifier", "noise")
IF_EMPTY_VARIANTS = ("zero", "local")  # glocal's if_empty alternatives compared with the default (nearest)
REFERENCES = ("truth", "expected_global")  # the row keys of the two references


def if_empty_name(if_empty: str) -> str:
    """Name of ``glocal`` run with another ``if_empty``, e.g. ``glocal(if_empty=zero)``."""
    return f"glocal(if_empty={if_empty})"


def lookahead_name(k: int) -> str:
    """Name of the truncated ``k``·τ look-ahead estimator, e.g. ``truncated-4tau``."""
    return f"truncated-{k}tau"


def _cpu_train() -> TrainConfig:
    """The CPU protocol's run settings: Fashion-MNIST, T = 1500, τ 50, σ 20, m 10, batch 128, 2 % validation."""
    return TrainConfig(val_fraction=0.02, hpo=HPOConfig(steps=1500))


@dataclasses.dataclass(frozen=True)
class VerifySettings:
    """Settings of one ``glocal verify`` protocol (defaults: the CPU protocol), validated when built.

    ``train`` holds the classifier runs' settings (dataset, batch size,
    validation split, T / τ / σ / m, outer lr, ``dmd_tol`` and
    ``dmd_rank_rtol`` of the estimators); every run is ``train`` at one seed and one lr0.
    ``windows`` are 1-based outer steps; empty means ``windows_per_seed``
    windows spread evenly over ``1 .. S - max(lookaheads)`` (S = T/τ), so that
    every look-ahead stops before T.
    """

    profile: str = setting("cpu", "cpu | paper | quick")
    model: str = setting("mlp", "mlp (CPU protocol) | lenet (paper protocol)")
    mlp_hidden: int = setting(128, "hidden units of the MLP")
    lr0s: tuple = setting((1e-3, 0.1), "initial learning rates")
    seeds: tuple = setting((0, 1, 2), "seeds of the classifier runs")
    windows: tuple = setting((), "1-based windows checked; empty: windows_per_seed spread evenly")
    windows_per_seed: int = setting(10, "windows checked per seed when windows is empty")
    estimators: tuple = setting(ESTIMATORS, "estimators compared (must include local)")
    lookaheads: tuple = setting((2, 4), "truncated look-aheads k (k windows with tangents)")
    noise_batch_sizes: tuple = setting((128, 512, 2048), "batch sizes of the noise study")
    noise_orders: int = setting(8, "minibatch orders per batch size of the noise study")
    noise_window: int = setting(5, "the noise study starts at this window of the first seed's run")
    quad_seeds: tuple = setting((0, 1, 2, 3, 4), "seeds of the quadratic problem")
    quad_windows: tuple = setting((1, 3, 10), "windows checked on the quadratic")
    quad_steps: int = setting(2000, "T of the quadratic")
    quad_tau: int = setting(50, "tau of the quadratic")
    problems: tuple = setting(("quadratic", "classifier", "noise"), "which studies run")
    expected_orders: int = setting(
        4, f"minibatch orders K (>= {MIN_ORDERS}) whose true global hypergradients are averaged into the "
           "expected-global reference of each checked window")
    train: TrainConfig = section(TrainConfig, "the classifier runs' settings", default=_cpu_train)

    @property
    def outer_windows(self) -> int:
        """S = T / τ."""
        return self.train.hpo.windows

    def checked_windows(self) -> tuple:
        """The 1-based windows whose true global hypergradient is computed."""
        if self.windows:
            return tuple(sorted(set(int(w) for w in self.windows)))
        last = max(1, self.outer_windows - max(self.lookaheads, default=0))
        n = min(self.windows_per_seed, last)
        return tuple(sorted(set(int(round(x)) for x in np.linspace(1, last, n))))

    def __post_init__(self) -> None:
        """Raise a one-line :class:`UserError` (a ``ValueError``) naming a bad value and what is allowed."""
        for name in ("lr0s", "seeds", "windows", "estimators", "lookaheads", "noise_batch_sizes", "problems",
                     "quad_seeds", "quad_windows"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [p for p in self.problems if p not in PROBLEMS]
        if unknown or not self.problems:
            raise UserError(f"problems {list(self.problems)} must be among: {', '.join(PROBLEMS)}")
        if self.expected_orders < MIN_ORDERS:
            raise UserError(f"expected_orders must be >= {MIN_ORDERS} (minibatch orders of the expected global "
                            f"hypergradient), got {self.expected_orders}")
        h = self.train.hpo
        if h.method != "glocal":
            raise UserError(f"method must be glocal (the run whose windows are checked), got {h.method!r}")
        if self.profile not in PROFILES:
            raise UserError(f"profile {self.profile!r} is not one of: {', '.join(PROFILES)}")
        if self.model not in MODELS:
            raise UserError(f"model {self.model!r} is not one of: {', '.join(MODELS)}")
        unknown = [e for e in self.estimators if e not in ESTIMATORS]
        if unknown or not self.estimators:
            raise UserError(f"estimators {list(self.estimators)} must be among: {', '.join(ESTIMATORS)}")
        if "local" not in self.estimators:
            raise UserError("estimators must include 'local' (the baseline every row is compared with)")
        if any(int(k) < 2 for k in self.lookaheads):
            raise UserError(f"lookaheads must be integers >= 2 (k windows), got {list(self.lookaheads)}")
        S = self.outer_windows
        w = self.checked_windows()
        if not w or min(w) < 1 or max(w) > S:
            raise UserError(f"windows must be outer steps in 1..{S} (T={h.steps}, tau={h.tau}), got {list(w)}")
        if not self.seeds or min(self.seeds) < 0:
            raise UserError(f"seeds must be non-empty and >= 0, got {list(self.seeds)}")
        if not self.lr0s or any(not 0.0 < x < 1.0 for x in self.lr0s):
            raise UserError(f"lr0s must be in (0, 1) (it is sigmoid(phi)), got {list(self.lr0s)}")
        if "noise" in self.problems:
            if not 1 <= self.noise_window <= S:
                raise UserError(f"noise_window must be in 1..{S}, got {self.noise_window}")
            if self.noise_orders < 2 or any(b < 1 for b in self.noise_batch_sizes):
                raise UserError("noise study needs >= 2 orders and batch sizes >= 1")
        if self.quad_steps % self.quad_tau or any(
            not 1 <= w <= self.quad_steps // self.quad_tau for w in self.quad_windows
        ):
            raise UserError(f"quad_windows must be in 1..{self.quad_steps // self.quad_tau}, got {list(self.quad_windows)}")
        if h.sigma > self.quad_tau:
            raise UserError(f"sigma must be <= quad_tau, got sigma={h.sigma}, quad_tau={self.quad_tau}")


def profile_settings(profile: str = "cpu", **overrides) -> VerifySettings:
    """The named protocol with ``overrides`` (None values ignored), validated.

    * ``cpu``: MLP (784-128-10) on Fashion-MNIST, T = 1500, τ = 50, σ = 20, m = 10,
      batch 128, 2 % validation, seeds 0-2, 10 windows per seed, lr0 1e-3 and 0.1.
    * ``paper``: LeNet, T = 20 000, τ = 50, σ = 20, m = 10, batch 128, 10 %
      validation, seeds 0-1, 16 windows per seed (a GPU job).
    * ``quick``: a seconds-long smoke test (T = 60, τ = 10, σ = 6, m = 2).
    """
    if profile not in PROFILES:
        raise UserError(f"profile {profile!r} is not one of: {', '.join(PROFILES)}")
    base = {
        "cpu": {},
        "paper": dict(model="lenet", steps=20_000, val_fraction=0.1, seeds=(0, 1), windows_per_seed=16,
                      noise_window=20),
        "quick": dict(steps=60, tau=10, sigma=6, m=2, seeds=(0,), windows_per_seed=2, batch_size=32,
                      val_fraction=0.01, mlp_hidden=16, noise_batch_sizes=(16, 64), noise_orders=3,
                      noise_window=2, quad_seeds=(0,), quad_windows=(1,), quad_steps=200, quad_tau=10),
    }[profile]
    given = {k: v for k, v in overrides.items() if v is not None}
    return settings.from_mapping(VerifySettings, {**base, **given, "profile": profile})


# ---------------------------------------------------------------- comparisons


def compare(est: np.ndarray, true: np.ndarray) -> Dict:
    """Cosine, relative error and per-component sign agreement of ``est [q]`` vs ``true [q]``.

    Sign agreement of a component: ``sign(est_i) == sign(true_i)`` (0 matches only 0).
    Relative error is NaN when the truth is zero; cosine is NaN when the truth is zero
    and 0 when only the estimate is (a zero estimate has no direction: ``if_empty =
    zero``'s empty sum; a NaN would drop those windows from the mean cosine).
    """
    est, true = np.asarray(est, np.float64), np.asarray(true, np.float64)
    nt, ne = np.linalg.norm(true), np.linalg.norm(est)
    cos = float(est @ true / (ne * nt)) if ne > 0 and nt > 0 else (0.0 if nt > 0 else float("nan"))
    rel = float(np.linalg.norm(est - true) / nt) if nt > 0 else float("nan")
    signs = (np.sign(est) == np.sign(true)).astype(int).tolist()
    return {"cosine": cos, "rel_err": rel, "sign_agree": signs, "sign_frac": float(np.mean(signs))}


def sign_agreement(est: np.ndarray, true: np.ndarray) -> Dict:
    """Sign agreement of many estimates ``est [n, q]`` with their truths ``true [n, q]``.

    Returns ``{"overall": fraction of the n·q (window, component) pairs with the
    truth's sign, "per_component": [q] fraction over the n windows}``.
    """
    est, true = np.atleast_2d(np.asarray(est, np.float64)), np.atleast_2d(np.asarray(true, np.float64))
    if est.shape != true.shape:
        raise ValueError(f"shapes differ: {est.shape} vs {true.shape}")
    same = np.sign(est) == np.sign(true)
    return {"overall": float(same.mean()), "per_component": same.mean(axis=0).tolist()}


# ---------------------------------------------------------------- tangent runs


@dataclasses.dataclass
class TangentRun:
    """What one window's run with tangents to T yields (host NumPy).

    Attributes:
      local: ``[σ, q]`` the window's last σ local hypergradients.
      lookahead: ``{k: [q]}`` the hypergradient after k windows (truncated look-ahead).
      truth: ``[q]`` the hypergradient at T (true global, this run's minibatch order).
      seconds: ``{"window": s of the first chunk, k: cumulative s after k chunks, "truth": s to T}``.
      finite: whether every chunk stayed finite.
      chunks: windows of τ steps run.
    """

    local: np.ndarray
    lookahead: Dict[int, np.ndarray]
    truth: np.ndarray
    seconds: Dict
    finite: bool
    chunks: int


def tangent_run(runner: HPORunner, inner, phi, start: int, lookaheads: Sequence[int]) -> TangentRun:
    """A window's tangents from ``start`` to T (``runner.cfg``'s T, τ, σ), φ fixed, tangents zero at ``start``.

    One call of :meth:`~glocal_cli.hpo.HPORunner.hypergrad_to_end` recording σ local
    hypergradients after the first window and ``h`` after every look-ahead's k-th;
    look-aheads beyond T equal the truth.
    """
    cfg = runner.cfg
    n = (cfg.steps - start) // cfg.tau
    if n < 1:
        raise ValueError(f"start={start} leaves no window before T={cfg.steps}")
    got, secs = {}, {}
    t0 = time.perf_counter()

    def keep(k: int, h: np.ndarray) -> None:
        got[k] = h
        secs["window" if k == 1 else k] = time.perf_counter() - t0

    record = {1: cfg.sigma, **{int(k): 1 for k in lookaheads if int(k) <= n}}
    end = runner.hypergrad_to_end(inner, phi, start, record=record, on_record=keep)
    secs["truth"] = time.perf_counter() - t0
    local = got.get(1)
    chunks = (end.steps_done - start) // cfg.tau
    if not end.finite:
        nan = np.full(phi.shape[0], np.nan)
        return TangentRun(local, {k: nan for k in lookaheads}, nan, secs, False, chunks)
    truth = end.hypergrads[-1].copy()
    look = {k: (got[k][-1].copy() if k <= n else truth.copy()) for k in lookaheads}
    for k in lookaheads:
        secs.setdefault(k, secs["truth"])
    return TangentRun(local, look, truth, secs, True, chunks)


def order_problems(problem, n_train: int, batch_size: int, orders: int) -> List:
    """``problem`` with the minibatch orders ``o = 0 .. orders-1`` (batches drawn with seed ``ORDER_SEED + o``)."""
    from functools import partial

    from glocal_cli.data.splits import epoch_batch_indices

    return [problem._replace(batches=partial(epoch_batch_indices, n_train, batch_size, ORDER_SEED + o))
            for o in range(orders)]


def expected_global(runner: HPORunner, inner, phi, start: int, problems: Sequence) -> Dict:
    """The expected global hypergradient of a window: the mean of ``h_T`` over the minibatch orders of ``problems``.

    Each ``problem`` is ``runner.problem`` with another ``batches`` (:func:`order_problems`);
    each order's ``h_T`` is :meth:`~glocal_cli.hpo.HPORunner.hypergrad_to_end` from the same
    ``(inner, phi)`` at ``start``. Returns ``{"expected_global": [q] (NaN unless every order
    is finite), "orders": [K, q], "finite_orders": int, "order_rel_std": ‖std_o h_T‖ / ‖mean_o
    h_T‖ (ddof 1), "seconds"}``.
    """
    t0 = time.perf_counter()
    H = []
    for p in problems:
        end = runner.with_config(runner.cfg, p).hypergrad_to_end(inner, phi, start)
        H.append(end.hypergrads[-1] if end.finite else np.full(phi.shape[0], np.nan))
    H = np.stack(H).astype(np.float64)
    ok = np.all(np.isfinite(H), axis=1)
    mean = H.mean(axis=0) if ok.all() else np.full(H.shape[1], np.nan)
    norm = np.linalg.norm(mean)
    spread = (float(np.linalg.norm(H.std(axis=0, ddof=1)) / norm) if ok.all() and norm > 0 and len(H) > 1
              else float("nan"))
    return {"expected_global": mean, "orders": H, "finite_orders": int(ok.sum()), "order_rel_std": spread,
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------- one window


def _estimator_entry(e, refs: Dict[str, Optional[np.ndarray]], seconds: float, tau: int) -> Dict:
    eigs = np.asarray(e.eigenvalues)
    entry = {"value": np.asarray(e.value, np.float64).tolist(), **compare(e.value, refs["truth"]),
             "fallback": bool(e.fallback), "reason": e.reason, "spectral_radius": float(e.spectral_radius),
             "rank": int(e.rank), "residual": float(e.residual), "imag_norm": float(e.imag_norm),
             "selection": e.selection, "n_selected": int(e.selected.shape[0]),
             "min_dist_to_1": float(np.min(np.abs(eigs - 1.0))) if eigs.size else float("nan"),
             "cost_tangent_steps": tau, "cost_seconds": seconds}
    if refs.get("expected_global") is not None:
        entry["vs_expected_global"] = compare(e.value, refs["expected_global"])
    return entry


def evaluate_window(local: np.ndarray, truth: np.ndarray, steps_left: int, s: VerifySettings,
                    lookahead: Optional[Dict[int, np.ndarray]] = None, cost: Optional[Dict] = None,
                    tau: Optional[int] = None, expected: Optional[np.ndarray] = None) -> Dict[str, Dict]:
    """Every estimator's estimate from the window's ``local [σ, q]``, compared with ``truth [q]`` and ``expected [q]``.

    Returns ``{name: {"value", "cosine", "rel_err", "sign_agree", "sign_frac" (vs the
    single-order truth), "vs_expected_global": {"cosine", "rel_err", "sign_agree",
    "sign_frac"} (when ``expected`` is given), "fallback", "reason", "spectral_radius",
    "rank", "residual", "imag_norm", "selection", "n_selected", "min_dist_to_1",
    "cost_tangent_steps", "cost_seconds"}}`` for every estimator of ``s``, for
    ``glocal`` with every ``if_empty`` of :data:`IF_EMPTY_VARIANTS` (named by
    :func:`if_empty_name`; ``glocal`` itself is ``if_empty = nearest``) and for every
    look-ahead in ``lookahead`` (``{k: [q]}``). ``cost`` holds the tangent run's seconds
    (:attr:`TangentRun.seconds`); window-based estimators cost one window (plus their
    own, measured, time).
    """
    tau = tau or s.train.hpo.tau
    cost = cost or {}
    refs = {"truth": truth, "expected_global": expected}
    h = s.train.hpo
    local = np.asarray(local, np.float64)
    variants = [(name, name, "nearest") for name in s.estimators]
    if "glocal" in s.estimators:
        variants += [(if_empty_name(x), "glocal", x) for x in IF_EMPTY_VARIANTS]
    out = {}
    for key, name, if_empty in variants:
        est = make_estimator(name, m=h.m, tol=h.dmd_tol, rank_rtol=h.dmd_rank_rtol, if_empty=if_empty)
        t0 = time.perf_counter()
        e = est(local, int(steps_left))
        out[key] = _estimator_entry(e, refs, cost.get("window", 0.0) + time.perf_counter() - t0, tau)
    for k, value in (lookahead or {}).items():
        out[lookahead_name(k)] = {"value": np.asarray(value, np.float64).tolist(), **compare(value, truth),
                                  "fallback": False, "reason": "", "cost_tangent_steps": k * tau,
                                  "cost_seconds": cost.get(k, float("nan"))}
        if expected is not None:
            out[lookahead_name(k)]["vs_expected_global"] = compare(value, expected)
    return out


# ---------------------------------------------------------------- problems


def mlp_task(cfg, splits, hidden: int):
    """The optimizer task of :mod:`glocal_cli.tasks` with a one-hidden-layer ReLU MLP instead of LeNet.

    Same inner optimizer (:func:`~glocal_cli.inner_optim.learnable_sgd`), batches,
    validation loss and φ as :func:`glocal_cli.tasks.optimizer_task`; only the
    model differs (``[B, H, W, C] -> flatten -> hidden -> 10``).
    """
    import flax.linen as nn

    from glocal_cli.tasks import optimizer_task_for_model

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = x.reshape((x.shape[0], -1))
            return nn.Dense(splits.num_classes)(nn.relu(nn.Dense(hidden)(x)))

    return optimizer_task_for_model(cfg, splits, MLP())


def _classifier_task(s: VerifySettings, seed: int, lr0: float):
    from glocal_cli.tasks import build_task
    from glocal_cli.train import load_splits

    cfg = settings.from_mapping(TrainConfig, {"seed": seed, "lr0": lr0}, s.train)
    splits = load_splits(cfg)
    task = build_task(cfg, splits) if s.model == "lenet" else mlp_task(cfg, splits, s.mlp_hidden)
    return cfg, splits, task


def problem_key(s: VerifySettings, lr0: float) -> str:
    """Key of a classifier setting in the summary, e.g. ``mlp/fashion_mnist/lr0=0.001``."""
    return f"{s.model}/{s.train.dataset}/lr0={lr0:g}"


def verify_classifier(s: VerifySettings, lr0: float, say: Callable[[str], None] = lambda m: None,
                      on_row: Optional[Callable[[Dict], None]] = None):
    """Rows of every checked window of every seed at ``lr0``, and the noise study's start state.

    The φ trajectory is the glocal run's (the run that the paper's figures show);
    each checked window gets a :func:`tangent_run` to T and, from the same start,
    ``expected_orders`` more runs to T with other minibatch orders (:func:`expected_global`).

    Returns ``(rows, noise_start)`` where ``noise_start`` is
    ``(task, inner, phi, start)`` at ``s.noise_window`` of the first seed (or None);
    ``on_row(row)`` (optional) gets each row when it is done.
    """
    rows, noise_start = [], None
    windows = s.checked_windows()
    key = problem_key(s, lr0)
    h = s.train.hpo
    for seed in s.seeds:
        cfg, splits, task = _classifier_task(s, seed, lr0)
        runner = HPORunner(task.problem, cfg.resolved_hpo())
        orders = order_problems(task.problem, int(task.problem.data["train_x"].shape[0]), cfg.batch_size,
                                s.expected_orders)
        hs = runner.init(task.phi0)
        last = max(max(windows), s.noise_window if seed == s.seeds[0] and "noise" in s.problems else 0)
        for w in range(1, last + 1):
            start = (w - 1) * h.tau
            if seed == s.seeds[0] and w == s.noise_window:
                noise_start = (task, hs.inner, hs.phi, start)
            if w in windows:
                say(f"{key} seed {seed}: window {w}/{s.outer_windows}, tangents to T={h.steps}")
                tr = tangent_run(runner, hs.inner, hs.phi, start, s.lookaheads)
                say(f"{key} seed {seed}: window {w}/{s.outer_windows}, {s.expected_orders} more minibatch orders to T")
                eg = expected_global(runner, hs.inner, hs.phi, start, orders)
                expected = eg["expected_global"]
                eg_finite = bool(np.all(np.isfinite(expected)))
                row = {"problem": key, "lr0": lr0, "seed": seed, "window": w, "start": start,
                       "steps_left": h.steps - w * h.tau, "finite": tr.finite,
                       "hyperparams": task.hyperparams(np.asarray(hs.phi)),
                       "truth": tr.truth.tolist(), "seconds": {str(k): v for k, v in tr.seconds.items()},
                       "expected_global": expected.tolist(), "expected_global_finite": eg_finite,
                       "expected_global_orders": eg["orders"].tolist(),
                       "expected_global_finite_orders": eg["finite_orders"],
                       "expected_global_order_rel_std": eg["order_rel_std"],
                       "expected_global_seconds": eg["seconds"]}
                if tr.finite:
                    row["truth_vs_expected_global"] = compare(tr.truth, expected) if eg_finite else None
                    row["estimates"] = evaluate_window(tr.local, tr.truth, h.steps - w * h.tau, s,
                                                       tr.lookahead, tr.seconds,
                                                       expected=expected if eg_finite else None)
                rows.append(row)
                if on_row is not None:
                    on_row(row)
            hs, rec = runner.run_window(hs)
            if not rec.finite:
                say(f"{key} seed {seed}: training diverged at window {w}")
                break
    return rows, noise_start


def verify_quadratic(s: VerifySettings) -> List[Dict]:
    """Quadratic (p=2, q=2, float64): φ fixed; truth and look-aheads in closed form.

    No minibatches: every order gives the same ``h_T``, so the expected global is the truth.
    """
    rows = []
    tau = s.quad_tau
    with jax.enable_x64(True):
        for seed in s.quad_seeds:
            qp = quadratic.make_quadratic(p=2, q=2, seed=seed, lr=0.1, eig_range=(0.3, 1.0))
            theta0 = np.random.default_rng(seed).normal(size=2)
            phi = np.array([0.2, -0.3])
            prob = quadratic.inner_problem(qp, theta0)
            for w in s.quad_windows:
                start = (w - 1) * tau
                theta_s = quadratic.theta_closed_form(qp, theta0, phi, start)
                out = window_hypergrads(prob.step, prob.val_loss, jnp.asarray(theta_s), jnp.asarray(phi),
                                        prob.batches(start, tau), s.train.hpo.sigma)
                h = np.asarray(out.hypergrads, np.float64)
                truth = quadratic.hypergrad_closed_form(qp, theta_s, phi, s.quad_steps - start)
                look = {k: quadratic.hypergrad_closed_form(qp, theta_s, phi, min(k * tau, s.quad_steps - start))
                        for k in s.lookaheads}
                rows.append({"problem": "quadratic", "lr0": None, "seed": seed, "window": w, "start": start,
                             "steps_left": s.quad_steps - w * tau, "finite": True, "truth": truth.tolist(),
                             "expected_global": truth.tolist(), "expected_global_finite": True,
                             "expected_global_orders": None, "expected_global_finite_orders": 0,
                             "expected_global_order_rel_std": 0.0,
                             "truth_vs_expected_global": compare(truth, truth),
                             "estimates": evaluate_window(h, truth, s.quad_steps - w * tau, s, look, tau=tau,
                                                          expected=truth)})
    return rows


# ---------------------------------------------------------------- batch-size noise


def lag1_autocorr(x: np.ndarray) -> float:
    """Mean lag-1 autocorrelation of the series ``x [..., t]`` (each centred over t); NaN if constant."""
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    num = np.sum(x[..., 1:] * x[..., :-1], axis=-1)
    den = np.sum(x * x, axis=-1)
    ok = den > 0
    return float(np.mean(num[ok] / den[ok])) if np.any(ok) else float("nan")


def noise_stats(H: np.ndarray) -> Dict:
    """Spread of ``H [orders, t, q]`` (one window's h_t under several minibatch orders).

    * ``rel_std_end``: ``‖std_o h_τ‖ / ‖mean_o h_τ‖`` (window end);
    * ``rel_std_mean``: the same ratio averaged over the window's steps;
    * ``rel_std_component_end``: ``[q]`` ``std_o h_τ,i / |mean_o h_τ,i|``;
    * ``sign_agree_end``: fraction of (order, component) pairs of ``h_τ`` with the
      sign of the across-order mean;
    * ``lag1_deviation``: lag-1 autocorrelation over t of ``h_t - mean_o h_t``;
    * ``lag1_increment``: lag-1 autocorrelation over t of ``h_t - h_{t-1}``.
    """
    H = np.asarray(H, np.float64)
    mean, std = H.mean(axis=0), H.std(axis=0, ddof=1)
    norms = np.linalg.norm(mean, axis=-1)
    ratio = np.linalg.norm(std, axis=-1) / np.where(norms > 0, norms, np.nan)
    dev = np.moveaxis(H - mean, 1, -1)  # [orders, q, t]
    inc = np.moveaxis(np.diff(H, axis=1), 1, -1)
    return {"rel_std_end": float(ratio[-1]), "rel_std_mean": float(np.nanmean(ratio)),
            "rel_std_component_end": np.divide(std[-1], np.abs(mean[-1]), out=np.full_like(std[-1], np.nan),
                                               where=mean[-1] != 0).tolist(),
            "sign_agree_end": float(np.mean(np.sign(H[:, -1]) == np.sign(mean[-1]))),
            "lag1_deviation": lag1_autocorr(dev), "lag1_increment": lag1_autocorr(inc),
            "mean_end": mean[-1].tolist(), "norm_end": float(norms[-1])}


def batch_noise(s: VerifySettings, lr0: float, noise_start, say: Callable[[str], None] = lambda m: None) -> List[Dict]:
    """The noise study at one start state: every batch size × ``noise_orders`` minibatch orders."""
    from glocal_cli.data.splits import epoch_batch_indices

    task, inner, phi, start = noise_start
    prob = task.problem
    n_train = int(prob.data["train_x"].shape[0])
    val_batch = 0 if jax.default_backend() == "cpu" else s.train.hpo.tau  # as HPORunner.val_batch's auto rule
    fn = make_window_fn(prob.step, prob.val_loss, s.train.hpo.tau, "forward", val_batch)
    out = []
    for bs in s.noise_batch_sizes:
        say(f"{problem_key(s, lr0)}: batch-size noise, batch {bs}")
        if bs > n_train:
            raise ValueError(f"noise batch size {bs} exceeds the training set ({n_train})")
        H, t0 = [], time.perf_counter()
        for o in range(s.noise_orders):
            idx = epoch_batch_indices(n_train, bs, ORDER_SEED + o, start, s.train.hpo.tau)
            H.append(np.asarray(fn(inner, phi, idx, prob.data).hypergrads, np.float64))
        H = np.stack(H)
        out.append({"problem": problem_key(s, lr0), "lr0": lr0, "batch_size": bs, "orders": s.noise_orders,
                    "window": s.noise_window, "start": start, "finite": bool(np.all(np.isfinite(H))),
                    "seconds": time.perf_counter() - t0, **noise_stats(H)})
    return out


# ---------------------------------------------------------------- summary and result


def _finite_median(xs) -> float:
    xs = np.asarray(xs, np.float64)
    xs = xs[np.isfinite(xs)]
    return float(np.median(xs)) if xs.size else float("nan")


def _finite_mean(xs) -> float:
    xs = np.asarray(xs, np.float64)
    xs = xs[np.isfinite(xs)]
    return float(xs.mean()) if xs.size else float("nan")


def estimator_stats(rows: List[Dict], name: str, ref: str = "truth") -> Dict:
    """Statistics of estimator ``name`` over ``rows`` (each with ``estimates`` and the reference ``row[ref]``).

    ``ref``: ``"truth"`` (the single-order true global hypergradient) or ``"expected_global"``.
    Returns ``{"n", "cosine_mean", "cosine_median", "rel_err_median", "rel_err_mean",
    "sign_agreement", "sign_agreement_per_component", "fallbacks", "fallback_reasons",
    "closer_than_local" (windows with a smaller relative error than local's, same
    reference), "cost_tangent_steps", "cost_seconds_mean"}``.
    """
    if ref not in REFERENCES:
        raise ValueError(f"ref must be one of {', '.join(REFERENCES)}, got {ref!r}")
    v = [r["estimates"][name] for r in rows]
    values = np.array([x["value"] for x in v], np.float64)
    refs = np.array([r[ref] for r in rows], np.float64)
    cmp = [compare(e, t) for e, t in zip(values, refs)]
    rel = np.array([c["rel_err"] for c in cmp])
    loc = np.array([compare(r["estimates"]["local"]["value"], r[ref])["rel_err"] for r in rows])
    signs = sign_agreement(values, refs)
    reasons: Dict[str, int] = {}
    for x in v:
        if x["fallback"]:
            reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    return {
        "n": len(v),
        "cosine_mean": float(np.nanmean([c["cosine"] for c in cmp])),
        "cosine_median": float(np.nanmedian([c["cosine"] for c in cmp])),
        "rel_err_median": float(np.nanmedian(rel)),
        "rel_err_mean": float(np.nanmean(rel)),
        "sign_agreement": signs["overall"],
        "sign_agreement_per_component": signs["per_component"],
        "fallbacks": int(sum(x["fallback"] for x in v)),
        "fallback_reasons": reasons,
        "closer_than_local": int(np.sum(rel < loc)),
        "cost_tangent_steps": int(v[0]["cost_tangent_steps"]),
        "cost_seconds_mean": _finite_mean([x["cost_seconds"] for x in v]),
    }


def _table(rows: List[Dict], names: Sequence[str], ref: str) -> Dict[str, Dict]:
    return {name: estimator_stats(rows, name, ref) for name in names} if rows else {}


def beats_local(stats: Dict[str, Dict]) -> Dict[str, List[str]]:
    """The estimators better than ``local`` in a table of :func:`estimator_stats`, by each criterion.

    ``{"rel_err_median": lower median relative error, "cosine_mean": higher mean
    cosine, "sign_agreement": higher sign agreement}`` (names, table order).
    """
    loc = stats.get("local")
    if not loc:
        return {"rel_err_median": [], "cosine_mean": [], "sign_agreement": []}
    others = [n for n in stats if n != "local"]
    return {"rel_err_median": [n for n in others if stats[n]["rel_err_median"] < loc["rel_err_median"]],
            "cosine_mean": [n for n in others if stats[n]["cosine_mean"] > loc["cosine_mean"]],
            "sign_agreement": [n for n in others if stats[n]["sign_agreement"] > loc["sign_agreement"]]}


def by_selection(rows: List[Dict]) -> Dict[str, Dict]:
    """``glocal``'s windows split by how they selected DMD modes, with the ``if_empty`` variants on the same windows.

    ``{selection: {"windows", "min_dist_to_1_median" (min |λ - 1| of glocal's DMD),
    "truth": {name: stats}, "expected_global": {name: stats}}}`` for selection ``tol``
    (eigenvalues within dmd_tol of 1; every if_empty gives the same estimate there) and
    ``nearest`` (none within tol: the default summed the nearest, ``zero`` gives 0,
    ``local`` falls back to ``h_τ``), over ``glocal``, its if_empty variants, ``mean``
    and ``local`` (those present). A window whose glocal fell back is counted under
    ``fallback``. Statistics against the expected global use the windows where it is finite.
    """
    if not rows or "glocal" not in rows[0]["estimates"]:
        return {}
    names = [n for n in ["glocal"] + [if_empty_name(x) for x in IF_EMPTY_VARIANTS] + ["mean", "local"]
             if n in rows[0]["estimates"]]
    out = {}
    for sel in ("tol", "nearest", "fallback"):
        rs = [r for r in rows if (r["estimates"]["glocal"]["selection"] or "fallback") == sel]
        if not rs and sel == "fallback":
            continue
        ex = [r for r in rs if r.get("expected_global_finite")]
        out[sel] = {"windows": len(rs), "windows_expected_global": len(ex),
                    "min_dist_to_1_median": float(np.nanmedian([r["estimates"]["glocal"].get("min_dist_to_1", np.nan)
                                                                for r in rs])) if rs else float("nan"),
                    "truth": _table(rs, names, "truth"), "expected_global": _table(ex, names, "expected_global")}
    return out


def summarize(rows: List[Dict]) -> Dict[str, Dict]:
    """Per problem: every estimator against both references, the references' spread, and glocal by mode selection.

    ``{problem: {"estimators": {name: stats vs the single-order truth}
    (:func:`estimator_stats`), "estimators_vs_expected_global": {name: stats vs the
    expected global}, "windows", "non_finite_windows", "seeds", "expected_global":
    {"orders", "windows", "non_finite_windows", "truth_rel_dev_median" (median ‖truth −
    expected‖ / ‖expected‖), "truth_cosine_mean", "truth_sign_agreement",
    "order_rel_std_median"}, "beats_local": {"truth": ..., "expected_global": ...}
    (:func:`beats_local`), "glocal_by_selection": (:func:`by_selection`)}}``.
    """
    out = {}
    for problem in dict.fromkeys(r["problem"] for r in rows):
        rs = [r for r in rows if r["problem"] == problem and r["finite"]]
        failed = sum(1 for r in rows if r["problem"] == problem and not r["finite"])
        ex = [r for r in rs if r.get("expected_global_finite")]
        names = list(rs[0]["estimates"]) if rs else []
        est, est_ex = _table(rs, names, "truth"), _table(ex, names, "expected_global")
        dev = [r["truth_vs_expected_global"] for r in ex]
        orders = [r.get("expected_global_orders") for r in rs]
        out[problem] = {
            "estimators": est, "estimators_vs_expected_global": est_ex,
            "windows": len(rs), "non_finite_windows": failed, "seeds": sorted({r["seed"] for r in rs}),
            "expected_global": {
                "orders": len(orders[0]) if orders and orders[0] is not None else 0,
                "windows": len(ex), "non_finite_windows": len(rs) - len(ex),
                "truth_rel_dev_median": float(np.nanmedian([d["rel_err"] for d in dev])) if dev else float("nan"),
                "truth_cosine_mean": float(np.nanmean([d["cosine"] for d in dev])) if dev else float("nan"),
                "truth_sign_agreement": (sign_agreement(np.array([r["truth"] for r in ex]),
                                                        np.array([r["expected_global"] for r in ex]))["overall"]
                                         if ex else float("nan")),
                "order_rel_std_median": _finite_median([r.get("expected_global_order_rel_std", np.nan) for r in ex]),
            },
            "beats_local": {"truth": beats_local(est), "expected_global": beats_local(est_ex)},
            "glocal_by_selection": by_selection(rs),
        }
    return out


def _closest_sentence(est: Dict[str, Dict], ref_words: str) -> str:
    best = min(est, key=lambda e: est[e]["rel_err_median"])
    g, loc = est.get("glocal"), est["local"]
    verdict = ""
    if g is not None:
        closer = g["rel_err_median"] < loc["rel_err_median"]
        verdict = (f" glocal is {'closer to' if closer else 'NOT closer to'} {ref_words} than "
                   f"local (median relative error {g['rel_err_median']:.3g} vs {loc['rel_err_median']:.3g}; "
                   f"closer in {g['closer_than_local']}/{g['n']} windows; {g['fallbacks']} fallbacks).")
    return (f"the closest estimator is {best} (median relative error "
            f"{est[best]['rel_err_median']:.3g}, cosine {est[best]['cosine_mean']:.3f}).{verdict}")


def conclusions(summary: Dict) -> List[str]:
    """Plain sentences per problem, from the numbers: the closest estimator and glocal vs local against each
    reference, which estimators beat local against which, and glocal's if_empty alternatives."""
    lines = []
    for problem, sm in summary.items():
        est = sm["estimators"]
        if not est:
            lines.append(f"{problem}: no finite window.")
            continue
        lines.append(f"{problem}: {_closest_sentence(est, 'the true global hypergradient')}")
        eg, ex = sm["expected_global"], sm["estimators_vs_expected_global"]
        if eg["orders"] and ex:
            lines.append(f"{problem}, against the expected global hypergradient (mean over {eg['orders']} minibatch "
                         f"orders; the single-order truth is {_fmt(eg['truth_rel_dev_median'])} off it, median): "
                         f"{_closest_sentence(ex, 'the expected global hypergradient')}")
        bl = sm["beats_local"]
        parts = []
        for ref, words in (("truth", "the single-order truth"), ("expected_global", "the expected global")):
            if ref == "expected_global" and not (eg["orders"] and ex):
                continue
            b = bl[ref]
            parts.append(f"against {words}: lower median relative error {', '.join(b['rel_err_median']) or 'none'}; "
                         f"higher mean cosine {', '.join(b['cosine_mean']) or 'none'}; higher sign agreement "
                         f"{', '.join(b['sign_agreement']) or 'none'}")
        lines.append(f"{problem}: better than local " + "; ".join(parts) + ".")
        sel = sm["glocal_by_selection"]
        if sel:
            near = sel.get("nearest", {})
            counts = ", ".join(f"{k} {v['windows']}" for k, v in sel.items())
            text = f"{problem}: glocal's mode selection per window: {counts}"
            ref = "expected_global" if near.get("expected_global") else "truth"
            if near.get(ref):
                t = near[ref]
                vals = ", ".join(f"{n} {_fmt(t[n]['rel_err_median'])}" for n in t)
                text += (f"; on the {near['windows']} windows with none within dmd_tol (median min |λ − 1| "
                         f"{_fmt(near['min_dist_to_1_median'])}), median relative error against the "
                         f"{'expected global' if ref == 'expected_global' else 'single-order truth'}: {vals}")
            lines.append(text + ".")
    return lines


@dataclasses.dataclass
class VerifyResult:
    """Everything ``glocal verify`` measured (JSON-ready via :meth:`to_json`)."""

    settings: Dict
    rows: List[Dict]
    summary: Dict
    noise: List[Dict]
    seconds: Dict
    device: str
    complete: bool = True

    def conclusions(self) -> List[str]:
        return conclusions(self.summary)

    def estimator_names(self) -> List[str]:
        """The settings' estimators, glocal's if_empty variants (when glocal runs) and the look-aheads."""
        est = list(self.settings["estimators"])
        variants = [if_empty_name(x) for x in IF_EMPTY_VARIANTS] if "glocal" in est else []
        return est + variants + [lookahead_name(k) for k in self.settings["lookaheads"]]

    def to_json(self) -> Dict:
        return {"settings": self.settings, "device": self.device, "complete": self.complete, "seconds": self.seconds,
                "estimators": self.estimator_names(), "references": list(REFERENCES),
                "summary": self.summary, "conclusions": self.conclusions(), "noise": self.noise, "rows": self.rows}


def run_verify(s: VerifySettings, say: Callable[[str], None] = lambda m: None,
               on_partial: Optional[Callable[[VerifyResult], None]] = None) -> VerifyResult:
    """Run the protocol ``s`` (quadratic, classifier at every lr0, noise study) and return the results.

    ``on_partial(result)`` (optional) gets the results so far (``complete=False``) after
    every classifier window and every study, so that a run cut short keeps them.
    """
    rows, noise, secs, live = [], [], {}, []
    t_all = time.perf_counter()
    flat = {**settings.to_flat(s), "outer_lr": s.train.resolved_outer_lr(), "checked_windows": list(s.checked_windows())}
    device = jax.devices()[0].device_kind

    def emit(*_) -> None:
        if on_partial is not None:
            done = rows + live
            on_partial(VerifyResult(flat, done, summarize(done), noise, dict(secs), device, complete=False))

    if "quadratic" in s.problems:
        say("quadratic (closed forms)")
        t0 = time.perf_counter()
        rows += verify_quadratic(s)
        secs["quadratic"] = time.perf_counter() - t0
        emit()
    for lr0 in s.lr0s if ("classifier" in s.problems or "noise" in s.problems) else ():
        t0 = time.perf_counter()
        live.clear()
        r, noise_start = verify_classifier(s, lr0, say, on_row=lambda row: (live.append(row), emit())) \
            if "classifier" in s.problems else ([], None)
        live.clear()
        secs[f"classifier lr0={lr0:g}"] = time.perf_counter() - t0
        rows += r
        if "noise" in s.problems:
            if noise_start is None:
                noise_start = _noise_start_only(s, lr0)
            t0 = time.perf_counter()
            noise += batch_noise(s, lr0, noise_start, say)
            secs[f"noise lr0={lr0:g}"] = time.perf_counter() - t0
            emit()
    secs["total"] = time.perf_counter() - t_all
    return VerifyResult(flat, rows, summarize(rows), noise, secs, device)


def _noise_start_only(s: VerifySettings, lr0: float):
    """The noise study's start state when the classifier windows are not run: the glocal run to ``noise_window``."""
    cfg, _, task = _classifier_task(s, s.seeds[0], lr0)
    runner = HPORunner(task.problem, cfg.resolved_hpo())
    hs = runner.init(task.phi0)
    for _ in range(s.noise_window - 1):
        hs, rec = runner.run_window(hs)
        if not rec.finite:
            break
    return task, hs.inner, hs.phi, (s.noise_window - 1) * s.train.hpo.tau


# ---------------------------------------------------------------- report text and figure


def _fmt(x, nd=3):
    return "nan" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}g}"


def settings_text(s: Dict) -> str:
    """One paragraph stating the protocol."""
    model = f"MLP 784-{s['mlp_hidden']}-10" if s["model"] == "mlp" else "LeNet"
    tol = "per estimator (glocal_cli.estimators defaults)" if s["dmd_tol"] is None else f"{s['dmd_tol']:g}"
    return (f"Protocol `{s['profile']}`: {model} on {s['dataset']}, SGD with learnable lr, momentum and weight decay "
            f"(outer Adam lr {s['outer_lr']:g}, the glocal run's φ trajectory), T = {s['steps']}, τ = {s['tau']}, "
            f"σ = {s['sigma']}, m = {s['m']}, batch {s['batch_size']}, validation fraction {s['val_fraction']:g}, "
            f"lr0 ∈ {list(s['lr0s'])}, seeds {list(s['seeds'])}, windows {list(s['checked_windows'])} "
            f"per seed; DMD tol {tol}, rank_rtol {s['dmd_rank_rtol']:g}. Quadratic: p = 2, q = 2, "
            f"T = {s['quad_steps']}, τ = {s['quad_tau']}, seeds {list(s['quad_seeds'])}, windows {list(s['quad_windows'])}. "
            "True global hypergradient of a window (`truth`): from the window's start, φ fixed, tangents zero there, "
            "trained to T with the run's own minibatch order. Expected global hypergradient (`expected_global`): the "
            f"mean of the same h_T over K = {s['expected_orders']} other minibatch orders from the same start (batch "
            f"seeds {ORDER_SEED} .. {ORDER_SEED + s['expected_orders'] - 1}; the quadratic has no minibatches, so "
            "there it is the truth). Truncated kτ look-ahead: the truth's run stopped after k windows.")


def _stats_table(stats: Dict[str, Dict]) -> List[str]:
    lines = ["| estimator | mean cosine | median rel. error | sign agreement (per component) | closer than local "
             "| fallbacks (reasons) | cost: tangent steps | cost: s / window |",
             "|---|---:|---:|---|---:|---|---:|---:|"]
    for name, v in stats.items():
        reasons = ", ".join(f"{k} {n}" for k, n in v["fallback_reasons"].items())
        per = ", ".join(f"{x:.2f}" for x in v["sign_agreement_per_component"])
        lines.append(f"| {name} | {_fmt(v['cosine_mean'])} | {_fmt(v['rel_err_median'])} | "
                     f"{v['sign_agreement']:.2f} ({per}) | {v['closer_than_local']}/{v['n']} | "
                     f"{v['fallbacks']}{' (' + reasons + ')' if reasons else ''} | {v['cost_tangent_steps']} | "
                     f"{_fmt(v['cost_seconds_mean'])} |")
    return lines + [""]


def _selection_table(sel: Dict[str, Dict]) -> List[str]:
    lines = ["| glocal's selection | windows | median min \\|λ − 1\\| | estimator | truth: cosine | truth: median rel. "
             "error | truth: signs | expected: cosine | expected: median rel. error | expected: signs |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name_sel, g in sel.items():
        for name, v in g["truth"].items():
            e = g["expected_global"].get(name)
            ecol = (f"{_fmt(e['cosine_mean'])} | {_fmt(e['rel_err_median'])} | {e['sign_agreement']:.2f}"
                    if e else "– | – | –")
            lines.append(f"| {name_sel} | {g['windows']} | {_fmt(g['min_dist_to_1_median'])} | {name} | "
                         f"{_fmt(v['cosine_mean'])} | {_fmt(v['rel_err_median'])} | {v['sign_agreement']:.2f} | {ecol} |")
    return lines + [""]


def markdown(res: VerifyResult) -> str:
    """``verify.md``: settings, per problem one table per reference and glocal by mode selection, the noise
    study and the conclusions."""
    s = res.settings
    lines = ["# glocal verify: estimators vs the true and the expected global hypergradient", "", settings_text(s), "",
             f"Device: {res.device}. Wall time: {res.seconds.get('total', float('nan')):.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in res.seconds.items() if k != 'total')})."
             + ("" if res.complete else " **Partial results: the run has not finished.**"), ""]
    for problem, sm in res.summary.items():
        eg = sm["expected_global"]
        lines += [f"## {problem}", "", f"{sm['windows']} windows over seeds {sm['seeds']}"
                  + (f"; {sm['non_finite_windows']} windows non-finite (left out)" if sm["non_finite_windows"] else "")
                  + ".", "", "### Against the single-order truth (`truth`)", ""]
        lines += _stats_table(sm["estimators"])
        lines += ["### Against the expected global hypergradient (`expected_global`, "
                  + (f"K = {eg['orders']} minibatch orders)" if eg["orders"] else "no minibatches: the truth)"), ""]
        if eg["orders"]:
            lines += [f"{eg['windows']} windows"
                      + (f" ({eg['non_finite_windows']} left out: an order diverged)" if eg["non_finite_windows"] else "")
                      + f". The single-order truth against this reference: median relative deviation "
                      f"{_fmt(eg['truth_rel_dev_median'])}, mean cosine {_fmt(eg['truth_cosine_mean'])}, sign "
                      f"agreement {_fmt(eg['truth_sign_agreement'], 2)}; spread of h_T across the K orders (‖std‖ / "
                      f"‖mean‖, median over windows) {_fmt(eg['order_rel_std_median'])}.", ""]
        else:
            lines += ["No minibatches: the expected global hypergradient is the truth.", ""]
        lines += _stats_table(sm["estimators_vs_expected_global"]) if eg["orders"] and sm["estimators_vs_expected_global"] else []
        if sm["glocal_by_selection"]:
            lines += ["### glocal by mode selection, and its if_empty alternatives on the same windows", "",
                      "`tol`: DMD eigenvalues within dmd_tol of 1 were summed (every if_empty gives the same "
                      "estimate there); `nearest`: none was within dmd_tol and the default (`if_empty = nearest`) "
                      "summed the eigenvalue(s) nearest 1; `glocal(if_empty=zero)` returns the paper's literal empty "
                      "sum 0 there, `glocal(if_empty=local)` falls back to h_τ.", ""]
            lines += _selection_table(sm["glocal_by_selection"])
    if res.noise:
        lines += ["## Noise of h_t against batch size", "",
                  f"One window (window {res.noise[0]['window']} of seed {s['seeds'][0]}'s run) from the same start "
                  f"state, {res.noise[0]['orders']} minibatch orders. rel. std = ‖std over orders‖ / ‖mean over "
                  "orders‖ of h_t; lag-1 = autocorrelation within the window of the deviations from the "
                  "across-order mean and of the increments h_t − h_{t−1}.", "",
                  "| setting | batch | rel. std at τ | rel. std (window mean) | rel. std per component at τ | "
                  "sign agreement at τ | lag-1 deviation | lag-1 increment |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for n in res.noise:
            per = ", ".join(_fmt(x, 2) for x in n["rel_std_component_end"])
            lines.append(f"| {n['problem']} | {n['batch_size']} | {_fmt(n['rel_std_end'])} | "
                         f"{_fmt(n['rel_std_mean'])} | {per} | {n['sign_agree_end']:.2f} | "
                         f"{_fmt(n['lag1_deviation'])} | {_fmt(n['lag1_increment'])} |")
        lines.append("")
    lines += ["## Conclusions (computed from the tables)", ""] + [f"* {c}" for c in res.conclusions()]
    lines += ["", "## Per window", "", "| problem | seed | window | steps left | estimator | cosine | rel. error "
              "| signs | expected: cosine | expected: rel. error | fallback / selection |",
              "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for r in res.rows:
        for name, v in r.get("estimates", {}).items():
            e = v.get("vs_expected_global") or {}
            tag = v["reason"] if v["fallback"] else v.get("selection", "")
            lines.append(f"| {r['problem']} | {r['seed']} | {r['window']} | {r['steps_left']} | {name} | "
                         f"{_fmt(v['cosine'])} | {_fmt(v['rel_err'])} | {v['sign_agree']} | "
                         f"{_fmt(e.get('cosine'))} | {_fmt(e.get('rel_err'))} | {tag} |")
    return "\n".join(lines) + "\n"


def figure(res: VerifyResult):
    """A matplotlib figure: per problem (columns), the relative error of every estimator over the windows
    against the single-order truth (top row) and the expected global hypergradient (bottom row), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [p for p, sm in res.summary.items() if sm["estimators"]]
    ncol = max(1, len(problems))
    fig, axes = plt.subplots(2, ncol, figsize=(5 * ncol, 8), squeeze=False)
    for col, problem in enumerate(problems):
        rs = [r for r in res.rows if r["problem"] == problem and r["finite"]]
        names = list(res.summary[problem]["estimators"])
        for row, (ref, label) in enumerate((("truth", "single-order truth"), ("expected_global", "expected global"))):
            ax = axes[row][col]
            use = [r for r in rs if ref == "truth" or r.get("expected_global_finite")]
            if not use:
                ax.set_axis_off()
                continue
            data = [[max(compare(r["estimates"][n]["value"], r[ref])["rel_err"], 1e-16) for r in use] for n in names]
            ax.boxplot(data)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel(f"‖estimate − ref‖ / ‖ref‖ ({label})", fontsize=8)
            ax.set_title(f"{problem} vs {label}", fontsize=9)
    fig.tight_layout()
    return fig
