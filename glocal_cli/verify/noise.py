"""The batch-size noise study: one window's local hypergradients across minibatch orders and batch sizes."""

from __future__ import annotations

import time
from typing import Callable, Dict, List

import numpy as np

from glocal_cli.verify.settings import ORDER_SEED, VerifySettings
from glocal_cli.verify.problems import problem_key


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
    """The noise study at one start state ``(runner, inner, phi, start)``: every batch size × ``noise_orders``
    minibatch orders, each a window of the run's runner recording its τ local hypergradients."""
    from glocal_cli.data.splits import epoch_batch_indices

    runner, inner, phi, start = noise_start
    prob = runner.problem
    n_train = int(prob.data["train_x"].shape[0])
    fn = runner.window_fn(s.train.hpo.tau)  # the run's own window, recording all of its tau hypergradients
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
