"""The references of a checked window: its true global hypergradient (tangents carried to T), the
truncated look-aheads, the expected global over minibatch orders, and every estimator held against them."""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from glocal_cli.estimators import make_estimator
from glocal_cli.runner import HPORunner
from glocal_cli.verify.settings import IF_EMPTY_VARIANTS, ORDER_SEED, VerifySettings, if_empty_name, lookahead_name


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

    One call of :meth:`~glocal_cli.runner.HPORunner.hypergrad_to_end` recording σ local
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
    each order's ``h_T`` is :meth:`~glocal_cli.runner.HPORunner.hypergrad_to_end` from the same
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
