"""What should I use? local / glocal against fixed inner optimizers, hypergradient descent and a tuned schedule.

The ``baselines`` run family (dvc.yaml stage group ``baselines``, ``params.yaml``
``grid.baselines``) holds paired seeds of every variant at one setting. A variant run
at several initial learning rates (``sgd-cosine``) is a *tuning grid*: per seed, the
run with the lowest final **validation** loss is kept (:func:`select_by_validation`;
the test set is never looked at), and the row's cost is the whole grid's.

Cost in inner-step equivalents (measured, not assumed), in units of one inner step of
the ``none`` row (the paper's SGD at a fixed lr0), so that ``none`` costs T:

* ``cost`` (when ``<runs>/baselines/cost.json`` exists, written by
  ``scripts/baselines_cost.py``, dvc stage ``baselines_cost``): every variant's window
  timed round-robin in one process (load from other processes hits all alike); a run
  costs ``inner_steps_per_window × windows it ran``;
* ``cost from the runs``: each run's own steady window time (``metrics.json``
  ``window_s``, the mean window after the compiling one, host work included) × its
  windows / (the ``none`` run's ``window_s`` / τ). The runs of a table are hours apart on
  a shared CPU, so this one moves with the load; it is shown beside the first.

A local window (q tangents through τ steps and a validation gradient) or a glocal one
(σ validation gradients) costs what it measured, not one step per step.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from glocal_cli.report.collect import Group, Run
from glocal_cli.report.tables import fmt, fmt_stat, markdown, paired_difference

#: Row order of the table (variants not listed follow, sorted); labels are ``config.variant_name``'s.
ROW_ORDER = ("none", "local", "glocal", "hd", "prodigy", "dadapt_adamw", "schedule_free_sgd", "mechanize_sgd", "dog",
             "sgd", "sgd-cosine", "sgd-warmup_cosine", "adam", "adam-cosine", "adam-warmup_cosine")

#: What each variant is (the table's second column).
DESCRIPTIONS = {
    "none": "the paper's SGD (momentum 0.1, weight decay 1e-3), fixed lr0",
    "local": "the paper's SGD, lr / momentum / weight decay tuned by local hypergradients",
    "glocal": "the paper's SGD, tuned by glocal hypergradients (Hankel DMD)",
    "hd": "hypergradient descent (Baydin et al. 2018) on the paper's SGD, beta 1e-3",
    "prodigy": "optax.contrib.prodigy (learning-rate free)",
    "dadapt_adamw": "optax.contrib.dadapt_adamw (D-Adaptation, learning-rate free)",
    "schedule_free_sgd": "optax.contrib.schedule_free_sgd at lr0, evaluated at its averaged iterate",
    "mechanize_sgd": "optax.contrib.mechanize(optax.sgd(1.0)) (Mechanic, learning-rate free)",
    "dog": "optax.contrib.dog (DoG, learning-rate free)",
    "sgd": "the paper's SGD arithmetic, fixed lr0 (optax.sgd)",
    "sgd-cosine": "the paper's SGD with a cosine schedule from lr0 to 0",
    "sgd-warmup_cosine": "the paper's SGD, 5 % linear warmup then cosine",
    "adam": "optax.adam at lr0",
    "adam-cosine": "optax.adam, cosine schedule from lr0 to 0",
    "adam-warmup_cosine": "optax.adam, 5 % linear warmup then cosine",
}


def _val_loss(r: Run) -> float:
    v = r.value("val_loss")
    return v if r.status == "complete" and math.isfinite(v) else math.nan


def select_by_validation(groups: Sequence[Group]) -> Dict[int, Run]:
    """Per seed, the run of ``groups`` (one per lr0 of a grid) with the lowest final validation loss.

    Only completed runs with a finite validation loss compete (a diverged one is never
    chosen); ties go to the smaller lr0. The test set plays no part. Returns
    ``{seed: run}`` for the seeds where at least one run competes.
    """
    best: Dict[int, Tuple[float, float, Run]] = {}
    for g in groups:
        for r in g.runs:
            v = _val_loss(r)
            if not math.isfinite(v):
                continue
            key = (v, r.lr0)
            if r.seed not in best or key < best[r.seed][:2]:
                best[r.seed] = (v, r.lr0, r)
    return {s: best[s][2] for s in sorted(best)}


def _step_seconds(none: Group) -> float:
    """Seconds of one inner step of the ``none`` row (its steady window / τ, median over its runs)."""
    vals = [r.value("window_s") / float(r.config.get("tau", math.nan)) for r in none.runs]
    vals = [v for v in vals if math.isfinite(v) and v > 0]
    return float(np.median(vals)) if vals else math.nan


def _cost(runs: Sequence[Run], step_s: float) -> float:
    """Mean over ``runs`` of (steady window seconds × windows run) / ``step_s``: inner-step equivalents.

    Over the complete runs when there are any: a diverged run stops early, and its windows would make a
    full run look cheaper than it is."""
    runs = [r for r in runs if r.status == "complete"] or list(runs)
    vals = [r.value("window_s") * r.value("outer_steps") / step_s for r in runs]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _timed_cost(runs: Sequence[Run], per_window: float) -> float:
    """Mean over ``runs`` of ``per_window`` (inner-step equivalents of one window, timed) × windows run."""
    vals = [per_window * r.value("outer_steps") for r in runs]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def _wall(runs: Sequence[Run]) -> float:
    vals = [r.value("wall_s") for r in runs if math.isfinite(r.value("wall_s"))]
    return float(np.mean(vals)) if vals else math.nan


class Row:
    """One row: the seeds' runs (for a grid: the ones chosen) and the cost of producing them.

    ``cost``: timed round-robin (NaN without a cost file); ``run_cost``: from the runs' own windows.
    """

    def __init__(self, label: str, group: Group, wall: float, cost: float, run_cost: float, grid: Sequence[Group] = (),
                 key: str = ""):
        self.label, self.group, self.wall, self.cost, self.run_cost = label, group, wall, cost, run_cost
        self.grid = list(grid)
        #: the row's name in the numbers and the record: the variant, ``<variant>@<lr0>`` where it has several rows
        self.key = key or group.method


def rows(groups: Sequence[Group], timing: Optional[dict] = None) -> List[Row]:
    """The table's rows from the baselines groups of one dataset (a variant at several lr0s is a grid).

    ``timing``: the content of ``cost.json`` (``{"variants": {label: {"inner_steps_per_window": x}}}``), or None.
    """
    per_window = {k: float(v.get("inner_steps_per_window", math.nan))
                  for k, v in ((timing or {}).get("variants") or {}).items()}
    by_variant: Dict[tuple, List[Group]] = {}
    for g in groups:
        # a method-none variant at several lr0s is a tuning grid; a hypergradient method's rows stand each alone
        key = (g.method, None) if _method(g) == "none" else (g.method, g.lr0)
        by_variant.setdefault(key, []).append(g)
    nones = [gs for (v, _), gs in by_variant.items() if v == "none"]
    step_s = _step_seconds(nones[0][0]) if len(nones) == 1 and len(nones[0]) == 1 else math.nan
    rank = lambda k: (ROW_ORDER.index(k[0]) if k[0] in ROW_ORDER else len(ROW_ORDER), k[0], k[1] or 0.0)  # noqa: E731
    out = []
    for key in sorted(by_variant, key=rank):
        v = key[0]
        gs = sorted(by_variant[key], key=lambda g: g.lr0)
        pw = per_window.get(v, math.nan)
        if len(gs) == 1:
            g = gs[0]
            several = sum(k[0] == v for k in by_variant) > 1
            out.append(Row(f"{v} (lr0 {g.lr0:g})" if _uses_lr0(g) else v, g, _wall(g.runs), _timed_cost(g.runs, pw),
                           _cost(g.runs, step_s), key=f"{v}@{g.lr0:g}" if several else v))
            continue
        chosen = select_by_validation(gs)
        tuned = Group(gs[0].family, gs[0].dataset, math.nan, f"{v} (tuned)", (), list(chosen.values()))
        lrs = ", ".join(f"{g.lr0:g}" for g in gs)
        out.append(Row(f"{v}, tuned: best of lr0 ∈ {{{lrs}}} by validation loss", tuned,
                       sum(_wall(g.runs) for g in gs), sum(_timed_cost(g.runs, pw) for g in gs),
                       sum(_cost(g.runs, step_s) for g in gs), gs))
    return out


def _description(g: Group) -> str:
    """What a row is: :data:`DESCRIPTIONS`, or for a hypergradient method tuning an optax optimizer what it learns."""
    name = g.method.replace(" (tuned)", "")
    if name in DESCRIPTIONS or not g.runs or _optimizer(g) == "learnable_sgd":
        return DESCRIPTIONS.get(name, "")
    return f"{_optimizer(g)} with {_learned(g)} tuned by {_method(g)} hypergradients"


def _method(g: Group) -> str:
    return str(g.runs[0].config.get("method") or "none")


def _optimizer(g: Group) -> str:
    return str(g.runs[0].config.get("inner_optimizer") or "learnable_sgd")


def _uses_lr0(g: Group) -> bool:
    """Whether the variant has a learning rate lr0 (the learning-rate-free optimizers ignore it)."""
    from glocal_cli.inner_optim import LR_FREE

    return str(g.runs[0].config.get("inner_optimizer") or "learnable_sgd") not in LR_FREE


def baselines_table(groups: Sequence[Group], timing: Optional[dict] = None) -> Tuple[str, Dict[str, float]]:
    """Markdown of the "What should I use?" table and its numbers (``{variant}/...`` keys).

    Columns: test accuracy mean ± std over seeds; the paired difference against ``glocal``
    (same seeds) with its standard error; runs that diverged; mean wall seconds of the
    program (a grid: summed); cost in inner-step equivalents, timed round-robin (``timing``, the
    content of ``cost.json``) and from the runs' own windows (see the module docstring).
    A second table lists a grid's learning rates, their validation loss and how often each
    was chosen.
    """
    table_rows = rows(groups, timing)
    ref = next((r.group for r in table_rows if r.group.method == "glocal"), None)
    numbers: Dict[str, float] = {}
    lines = []
    for row in table_rows:
        g = row.group
        mean, std, n = g.stat("test_accuracy")
        if ref is not None and g is not ref:
            d, se, n_pairs = paired_difference(g, ref)
            diff = f"{d:+.4f} ± {fmt(se, 4)} (n={n_pairs})" if n_pairs else "–"
            numbers[f"{row.key}/diff_vs_glocal_mean"] = d
            numbers[f"{row.key}/diff_vs_glocal_se"] = se
        else:
            diff = "(reference)" if g is ref else "–"
        fails = sum(r.status != "complete" for gg in (row.grid or [g]) for r in gg.runs)
        lines.append([row.label, _description(g), fmt_stat(mean, std, n, 4), diff, str(fails),
                      fmt(row.wall, 0), fmt(row.cost, 0), fmt(row.run_cost, 0)])
        numbers[f"{row.key}/test_accuracy_mean"] = mean
        numbers[f"{row.key}/test_accuracy_std"] = std
        numbers[f"{row.key}/n"] = n
        numbers[f"{row.key}/wall_s"] = row.wall
        numbers[f"{row.key}/cost_inner_steps"] = row.cost
        numbers[f"{row.key}/cost_inner_steps_from_runs"] = row.run_cost
    text = markdown(["variant", "what", "test accuracy, mean ± std", "minus glocal, paired mean ± SE",
                     "runs not complete", "wall s", "cost, timed (inner-step equivalents)",
                     "cost from the runs' windows"], lines)
    for row in table_rows:
        if not row.grid:
            continue
        chosen = {r.seed: r.lr0 for r in row.group.runs}
        grid_lines = []
        for g in row.grid:
            picked = sorted(s for s, lr in chosen.items() if lr == g.lr0)
            grid_lines.append([f"{g.lr0:g}", fmt_stat(*g.stat("val_loss"), 4), fmt_stat(*g.stat("test_accuracy"), 4),
                               str(sum(r.status != "complete" for r in g.runs)),
                               ", ".join(map(str, picked)) or "–"])
        text += (f"\n{row.group.method}: the grid (validation loss at the end of training decides, per seed; "
                 "the test accuracy is shown, never used)\n\n")
        text += markdown(["lr0", "validation loss, mean ± std", "test accuracy, mean ± std", "runs not complete",
                          "chosen for seeds"], grid_lines)
    return text, numbers


def baselines_record(groups: Sequence[Group], timing: Optional[dict] = None, command: str = "") -> dict:
    """The record (``glocal_cli.report.records``) of the "What should I use?" table: per row its seeds' values
    (a tuned grid: the runs chosen by validation loss, and every lr0 of the grid), its cost and wall time."""
    from glocal_cli.report import records

    table_rows = rows(groups, timing)
    runs = [r for row in table_rows for g in (row.grid or [row.group]) for r in g.runs]
    rec = records.new_record("baselines", "What should I use? glocal and local against fixed, learning-rate-free and "
                             "tuned optimizers, paired seeds (docs/baselines.md)", runs, command)
    rec["setting"].pop("lr0", None)  # the rows differ in lr0 (each row says its own)
    rec["reference"] = "glocal"
    rec["variants"] = {}
    for row in table_rows:
        g = row.group
        entry = {"label": row.label, "description": _description(g),
                 **records.variant_values(g.runs),
                 "lr0": [r.lr0 for r in sorted(g.runs, key=lambda r: r.seed)],
                 "runs_not_complete": sum(r.status != "complete" for gg in (row.grid or [g]) for r in gg.runs),
                 "wall_s_total": records._num(row.wall), "cost_timed": records._num(row.cost),
                 "cost_from_runs": records._num(row.run_cost)}
        if row.grid:
            entry["grid"] = [{"lr0": gg.lr0, **records.variant_values(gg.runs)} for gg in row.grid]
        rec["variants"][row.key] = entry
    if timing:
        rec["cost_json"] = timing
    return rec


# --- Does hypergradient tuning add anything on top of the optimizer I already use? (issue 29) -------------------


def tuning_pairs(groups: Sequence[Group]) -> List[Tuple[Group, Group]]:
    """``(tuned, alone)``: each group where a hypergradient method tunes another optimizer than the paper's SGD,
    with that optimizer under method none at the same lr0 (a learning-rate-free one: its run, whatever lr0).

    A tuned group without its optimizer alone among ``groups`` is left out.
    """
    alone: Dict[Tuple[str, float], Group] = {}
    for g in groups:
        if _method(g) == "none" and _optimizer(g) != "learnable_sgd" and str(g.runs[0].config.get("schedule")
                                                                                or "constant") == "constant":
            alone[(_optimizer(g), g.lr0 if _uses_lr0(g) else math.nan)] = g
    out = []
    for g in sorted(groups, key=lambda g: (g.method, g.lr0)):
        if _method(g) == "none" or _optimizer(g) == "learnable_sgd":
            continue
        ref = alone.get((_optimizer(g), g.lr0 if _uses_lr0(g) else math.nan))
        if ref is None and not _uses_lr0(g):
            ref = next((a for (o, _), a in alone.items() if o == _optimizer(g)), None)
        if ref is not None:
            out.append((g, ref))
    return out


def _learned(g: Group) -> str:
    """The names a tuned row learned (``config.learn``: a list in metrics.json, or a comma-separated string)."""
    value = g.runs[0].config.get("learn") or ""
    names = value if isinstance(value, (list, tuple)) else str(value).split(",")
    return ", ".join(str(n).strip() for n in names if str(n).strip())


def tuning_table(groups: Sequence[Group], timing: Optional[dict] = None) -> Tuple[str, Dict[str, float]]:
    """Markdown of the tuned-optimizer table and its numbers (``{variant}@lr0/...`` keys): each tuned row beside
    its optimizer alone: test accuracy (mean ± std over seeds) of both, the paired difference tuned − alone (mean
    ± standard error over the seeds both have), and the tuned run's cost in inner steps of the optimizer alone
    (its steady window / τ, from the runs' own windows), so that the optimizer alone costs T."""
    lines, numbers = [], {}
    for tuned, alone in tuning_pairs(groups):
        d, se, n = paired_difference(tuned, alone)
        key = f"{tuned.method}@{tuned.lr0:g}"
        t_mean, t_std, t_n = tuned.stat("test_accuracy")
        a_mean, a_std, a_n = alone.stat("test_accuracy")
        step_s = _step_seconds(alone)
        lines.append([tuned.method.split("-", 1)[0], _optimizer(tuned), f"{tuned.lr0:g}" if _uses_lr0(tuned) else "–",
                      _learned(tuned), fmt_stat(a_mean, a_std, a_n, 4), fmt_stat(t_mean, t_std, t_n, 4),
                      f"{d:+.4f} ± {fmt(se, 4)} (n={n})" if n else "–", fmt(_cost(alone.runs, step_s), 0),
                      fmt(_cost(tuned.runs, step_s), 0)])
        numbers.update({f"{key}/diff_mean": d, f"{key}/diff_se": se, f"{key}/n_pairs": n,
                        f"{key}/test_accuracy_mean": t_mean, f"{key}/alone_test_accuracy_mean": a_mean,
                        f"{key}/cost": _cost(tuned.runs, step_s)})
    text = markdown(["method", "optimizer", "lr0", "learned", "optimizer alone, mean ± std", "tuned, mean ± std",
                     "tuned − alone, paired mean ± SE", "cost alone", "cost tuned"], lines)
    return text, numbers


def tuning_record(groups: Sequence[Group], command: str = "") -> dict:
    """The record of :func:`tuning_table`: per pair the tuned row's and its optimizer's seeds (``variants``:
    ``<tuned variant>@<lr0>`` and ``<optimizer>@<lr0>``), and ``pairs`` naming them."""
    from glocal_cli.report import records

    pairs = tuning_pairs(groups)
    runs = [r for t, a in pairs for g in (t, a) for r in g.runs]
    rec = records.new_record("optimizer_tuning", "Does hypergradient tuning add anything on top of the optimizer "
                             "people use? local / glocal tuning named hyperparameters of Adam, schedule-free SGD and "
                             "Prodigy, each beside the optimizer alone at the same lr0, paired seeds", runs, command)
    rec["setting"].pop("lr0", None)
    rec["cost_unit"] = "one inner step of the optimizer alone (its steady window / tau), so that it costs T"
    rec["variants"], rec["pairs"] = {}, []
    for tuned, alone in pairs:
        names = []
        step_s = _step_seconds(alone)
        for g in (tuned, alone):
            name = f"{g.method}@{g.lr0:g}"
            rec["variants"][name] = {"method": _method(g), "optimizer": _optimizer(g), "lr0": g.lr0,
                                     "uses_lr0": _uses_lr0(g), "learn": _learned(g) if g is tuned else "",
                                     "cost_from_runs": records._num(_cost(g.runs, step_s)),
                                     **records.variant_values(g.runs)}
            names.append(name)
        rec["pairs"].append({"tuned": names[0], "alone": names[1]})
    return rec
