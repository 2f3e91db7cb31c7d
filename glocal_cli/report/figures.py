"""Figures of the report (matplotlib, Agg backend), each written atomically as PNG.

* :func:`trajectory_figure`: Fig. 2/6/7/8 (LeNet) and Fig. 3 (WRN, CIFAR) — learning
  rate, momentum, weight decay and test accuracy over inner steps, one line per
  method, mean ± std over seeds (shaded).
* :func:`dmd_figure`: Fig. 4 — the DMD eigenvalues of one window on the complex
  plane with the unit circle, and the mode magnitudes ``|b_j λ_j^n| ‖φ_j‖`` over
  ``n``, recomputed from the window's stored local hypergradients.
* :func:`ablation_figure`: Fig. 5 — final test accuracy over σ × m.
* :func:`divergence_figure`: Fig. 9 — validation loss, learning rate and
  hypergradient norm of runs that diverged (or of the global runs, if none did).
* :func:`seed_band_plot`: Fig. 2 from per-seed curves — mean line and min–max band over
  seeds per variant (the paper-scale page, ``glocal_cli.report.paper_scale``).

Inner-step axes get at most five short tick labels (``0, 5k, 10k, 15k, 20k``):
:func:`step_axis`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

from glocal_cli import atomic  # noqa: E402
from glocal_cli.dmd import hankel_dmd_fit  # noqa: E402
from glocal_cli.report.collect import Group, Run, values_by_step  # noqa: E402

METHOD_COLORS = {"none": "0.45", "local": "tab:blue", "glocal": "tab:red", "global": "tab:green"}
PANELS = (("lr", "learning rate", True), ("momentum", "momentum", False), ("weight_decay", "weight decay", True))


def short_number(x: float, pos=None) -> str:
    """A tick label for an inner step: ``0``, ``600``, ``2.5k``, ``20k``, ``1.2M`` (``pos``: matplotlib's, unused)."""
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}"
    return f"{x:.3g}"


class StepLocator(MaxNLocator):
    """Round ticks (steps of 1, 2, 2.5, 5 × 10^k) for an inner-step axis, as many as the axis has room
    for and at most ``max_bins`` intervals.

    Room: one label per 4 font sizes of axis length (matplotlib's own estimate, ``Axis.get_tick_space``,
    allows 3, where labels such as ``12500`` touch their neighbours).
    """

    def __init__(self, max_bins: int = 5):
        super().__init__(nbins=max_bins, steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=2)
        self.max_bins = max_bins

    def __call__(self):
        if self.axis is not None:
            room = int(0.75 * self.axis.get_tick_space())
            self.set_params(nbins=max(1, min(self.max_bins, room)))
        return super().__call__()


def step_axis(ax, max_bins: int = 5) -> None:
    """Give ``ax``'s x axis (inner steps) round ticks with short labels: ``0, 5k, 10k, 15k, 20k`` at T = 20 000.

    Matplotlib's default puts up to nine labels such as ``12500`` on a wide panel at
    T = 20 000, where neighbours touch; :class:`StepLocator` and :func:`short_number`
    keep them apart at any panel width.
    """
    ax.xaxis.set_major_locator(StepLocator(max_bins))
    ax.xaxis.set_major_formatter(FuncFormatter(short_number))


def same_step_range(axes) -> None:
    """Set every axis's x range to 0 … the last step any of them plots (Fig. 2's panels share their x axis)."""
    ends = [float(np.nanmax(line.get_xdata())) for ax in axes for line in ax.lines if len(line.get_xdata())]
    if ends and max(ends) > 0:
        for ax in axes:
            ax.set_xlim(0, max(ends))


def save(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def mean_curve(runs: Sequence[Run], column: str) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(step, mean, std) over runs of a history column, on the steps where it is finite.

    Runs are aligned by inner step; a step enters the mean with the runs that have a
    finite value there (a diverged run stops contributing where it diverged).
    """
    per_step = values_by_step(runs, column)
    if not per_step:
        return None
    steps = np.array(sorted(per_step))
    mean = np.array([np.mean(per_step[s]) for s in steps])
    std = np.array([np.std(per_step[s]) for s in steps])
    return steps, mean, std


def _plot_band(ax, curve, color, label, log=False):
    steps, mean, std = curve
    dashed = label.startswith("glocal")  # glocal equals local when every window falls back: keep both visible
    ax.plot(steps, mean, color=color, label=label, marker="o" if len(steps) <= 12 else None, ms=3,
            ls="--" if dashed else "-", lw=2.2 if dashed else 1.5, zorder=3 if dashed else 2)
    lo, hi = mean - std, mean + std
    if log:
        lo = np.maximum(lo, mean * 0.5)
    ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)


def trajectory_figure(groups: Sequence[Group], title: str, path: Path) -> Optional[Path]:
    """Hyperparameter trajectories and test accuracy of several methods (same dataset and lr0), saved to ``path``."""
    fig = trajectory_plot(groups, title)
    return None if fig is None else save(fig, path)


def trajectory_plot(groups: Sequence[Group], title: str):
    """:func:`trajectory_figure`'s matplotlib figure (not saved), or None when no group has a curve."""
    columns = [c for c, _, _ in PANELS if any(c in r.history for g in groups for r in g.runs)]
    panels = [p for p in PANELS if p[0] in columns] + [("test_accuracy", "test accuracy", False)]
    if not any(mean_curve(g.runs, "test_accuracy") or mean_curve(g.runs, "val_loss") for g in groups):
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), squeeze=False)
    for ax, (col, label, log) in zip(axes[0], panels):
        for g in groups:
            curve = mean_curve(g.runs, col)
            if curve is None:
                continue
            n = len(g.runs)
            _plot_band(ax, curve, METHOD_COLORS.get(g.method, None), f"{g.method} (n={n})", log)
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("inner step")
        step_axis(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    same_step_range(axes[0])
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if not handles:
        handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=8, loc="best")
    fig.suptitle(title + "  (mean ± std over seeds)")
    fig.tight_layout()
    return fig


def pick_window(run: Run) -> Optional[int]:
    """The window to show: the last one whose DMD found an eigenvalue near 1, else the last one."""
    if run.dmd is None or "hypergrads" not in run.dmd:
        return None
    n = run.dmd["hypergrads"].shape[0]
    if n == 0:
        return None
    n_unit = run.history.get("dmd_n_unit")
    if n_unit is not None and len(n_unit) == n:
        good = [i for i in range(n) if np.isfinite(n_unit[i]) and n_unit[i] > 0]
        if good:
            return good[-1]
    return n - 1


def dmd_figure(run: Run, path: Path, horizon: int = 60) -> Optional[Tuple[Path, dict]]:
    """Fig. 4 for one window of a glocal run; returns the path and the window's diagnostics."""
    from glocal_cli import dmd as dmd_mod

    w = pick_window(run)
    if w is None:
        return None
    h = np.asarray(run.dmd["hypergrads"][w], dtype=np.float64)
    cfg = run.config
    m = int(cfg.get("m", 10))
    tol = cfg.get("dmd_tol")
    tol = None if tol is None else float(tol)
    rank_rtol = float(cfg.get("dmd_rank_rtol", dmd_mod.DEFAULT_RANK_RTOL))
    try:
        est = dmd_mod.hankel_dmd_estimate(h, m, tol=tol, rank_rtol=rank_rtol)
    except TypeError:  # an older estimator without rank_rtol
        est = dmd_mod.hankel_dmd_estimate(h, m, tol=tol)
    fit = hankel_dmd_fit(h, m, rank_rtol=rank_rtol) if h.shape[0] - m + 1 >= 3 and np.all(np.isfinite(h)) else None
    if fit is None or fit.eigenvalues.size == 0:
        return None
    eigs = fit.eigenvalues
    tol = dmd_mod.DEFAULT_TOL if tol is None else tol
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    t = np.linspace(0, 2 * np.pi, 400)
    ax1.plot(np.cos(t), np.sin(t), color="0.6", lw=1, label="unit circle")
    ax1.add_patch(plt.Circle((1, 0), tol, color="tab:green", alpha=0.15, label=f"|λ-1| ≤ {tol:g}"))
    sel = np.asarray(getattr(est, "selected", np.zeros(0)))
    near = np.array([sel.size > 0 and float(np.min(np.abs(sel - e))) < 1e-9 for e in eigs], dtype=bool)
    ax1.scatter(eigs.real[~near], eigs.imag[~near], color="tab:blue", zorder=3, label="λ_j")
    ax1.scatter(eigs.real[near], eigs.imag[near], color="tab:red", marker="*", s=120, zorder=4, label="λ_j summed (≈ 1)")
    lim = max(1.15, float(np.max(np.abs(eigs))) * 1.1)
    ax1.set_xlim(-lim, lim)
    ax1.set_ylim(-lim, lim)
    ax1.set_aspect("equal")
    ax1.axhline(0, color="0.85", lw=0.8)
    ax1.axvline(0, color="0.85", lw=0.8)
    ax1.set_xlabel("Re λ")
    ax1.set_ylabel("Im λ")
    ax1.legend(fontsize=7, loc="lower left")
    ax1.set_title(f"DMD eigenvalues, window {w + 1} (σ={h.shape[0]}, m={m})")
    n = np.arange(horizon + 1)
    norms = np.linalg.norm(fit.modes, axis=0)
    order = np.argsort(-np.abs(eigs))
    for j in order:
        mag = np.abs(fit.amplitudes[j]) * norms[j] * np.abs(eigs[j]) ** n
        style = dict(color="tab:red", lw=2) if near[j] else dict(lw=1)
        ax2.semilogy(n, np.maximum(mag, 1e-300), label=f"|λ|={abs(eigs[j]):.3f}", **style)
    top = ax2.get_ylim()[1]
    ax2.set_ylim(max(ax2.get_ylim()[0], top * 1e-12), top)
    ax2.set_xlabel("steps ahead n")
    ax2.set_ylabel("|b_j λ_j^n| ‖φ_j‖")
    ax2.set_title("mode magnitudes (red: λ ≈ 1)")
    ax2.grid(alpha=0.3, which="both")
    if len(order) <= 10:
        ax2.legend(fontsize=7)
    fig.suptitle(f"{run.dataset} lr0={run.lr0:g} seed {run.seed}: estimator says "
                 + (f"fallback ({est.reason})" if est.fallback else f"{est.n_unit} unit eigenvalue(s)"))
    fig.tight_layout()
    info = {
        "run": str(run.path),
        "window": w + 1,
        "eigenvalues": [complex(x) for x in eigs],
        "spectral_radius": float(np.max(np.abs(eigs))),
        "n_unit": int(np.sum(near)),
        "fallback": bool(est.fallback),
        "reason": est.reason,
        "estimator_eigenvalues_match": bool(
            est.eigenvalues.size == eigs.size
            and np.allclose(np.sort_complex(est.eigenvalues), np.sort_complex(eigs), atol=1e-8)
        ),
    }
    return save(fig, path), info


def ablation_figure(cells: Dict[Tuple[int, int], float], title: str, path: Path) -> Optional[Path]:
    """Heat map of final test accuracy over (σ, m)."""
    if not cells:
        return None
    sigmas = sorted({s for s, _ in cells})
    ms = sorted({m for _, m in cells})
    grid = np.full((len(ms), len(sigmas)), np.nan)
    for (s, m), v in cells.items():
        grid[ms.index(m), sigmas.index(s)] = v
    fig, ax = plt.subplots(figsize=(1.4 * len(sigmas) + 2.5, 1.0 * len(ms) + 2.0))
    masked = np.ma.masked_invalid(grid)
    im = ax.imshow(masked, cmap="viridis", origin="lower", aspect="auto")
    for i in range(len(ms)):
        for j in range(len(sigmas)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", color="w", fontsize=9)
    ax.set_xticks(range(len(sigmas)), [str(s) for s in sigmas])
    ax.set_yticks(range(len(ms)), [str(m) for m in ms])
    ax.set_xlabel("σ (hypergradients fed to DMD)")
    ax.set_ylabel("m (Hankel stacks)")
    fig.colorbar(im, ax=ax, label="test accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def divergence_figure(runs: Sequence[Run], title: str, path: Path) -> Optional[Path]:
    """Validation loss, learning rate and hypergradient norm over inner steps of the given runs."""
    runs = [r for r in runs if r.history.get("step") is not None]
    if not runs:
        return None
    panels = [("val_loss", "validation loss"), ("lr", "learning rate"), ("h_used_norm", "‖hypergradient‖")]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (col, label) in zip(axes, panels):
        for r in runs:
            steps, vals = r.history.get("step"), r.history.get(col)
            if vals is None:
                continue
            with np.errstate(invalid="ignore"):
                finite = np.isfinite(vals) & np.isfinite(steps)
            ax.plot(steps[finite], vals[finite], marker="o", ms=3,
                    color=METHOD_COLORS.get(r.method), label=f"{r.method} {r.dataset} lr0={r.lr0:g} ({r.status})")
            bad = ~np.isfinite(vals) & np.isfinite(steps)
            for s in steps[bad]:
                ax.axvline(s, color="k", ls="--", lw=1)
        if col != "lr" and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("inner step (global: outer step × T)")
        step_axis(ax)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


#: :func:`seed_band_plot`'s bands: ``minmax`` (lowest to highest seed), ``std`` (mean ± one sample std, ddof 1).
BANDS = ("minmax", "std")


def seed_band_plot(curves: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]], panels: Sequence[Tuple[str, str, bool]],
                   steps: Optional[float] = None, band: str = "minmax", title: str = ""):
    """Fig. 2 from per-seed curves: one panel per ``(column, label, log scale)`` of ``panels``, and in each,
    per variant, the mean over seeds (line) and a band (:data:`BANDS`).

    ``curves[column][variant] = (steps [k], values [seeds, k])`` (NaN where a seed has no value);
    ``steps``: the x range's end (T), else the last step plotted. Returns the unsaved figure.
    """
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.4), squeeze=False)
    for ax, (col, label, log) in zip(axes[0], panels):
        for variant, (x, values) in curves.get(col, {}).items():
            n = np.isfinite(values).any(axis=1).sum()
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns give NaN: not drawn
                mean = np.nanmean(values, axis=0)
                if band == "minmax":
                    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                else:
                    std = np.nanstd(values, axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
                    lo, hi = mean - std, mean + std
            color = METHOD_COLORS.get(variant)
            dashed = variant.startswith("glocal")
            ax.plot(x, mean, color=color, label=f"{variant} ({n} seed{'s' if n != 1 else ''})",
                    marker="o" if len(x) <= 25 else None, ms=3, ls="--" if dashed else "-", lw=1.8 if dashed else 1.4,
                    zorder=3 if dashed else 2)
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
        if log and ax.lines:
            ax.set_yscale("log")
        ax.set_xlabel("inner step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        step_axis(ax)
    same_step_range(axes[0])
    if steps:
        for ax in axes[0]:
            ax.set_xlim(0, steps)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
