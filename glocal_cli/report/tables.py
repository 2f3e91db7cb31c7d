"""Markdown tables of the report: final accuracy, Table 3, Table 4, the σ × m ablation."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple


from glocal_cli.report import paper, records
from glocal_cli.report.collect import Group

METHOD_ORDER = ("none", "local", "glocal", "global")


def fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def fmt_stat(mean: float, std: float, n: int, digits: int = 3) -> str:
    """``mean ± std (n=k)``: std is the sample standard deviation over seeds (ddof 1); one seed has no ±."""
    if n == 0:
        return "–"
    if n == 1 or not math.isfinite(std):
        return f"{mean:.{digits}f} (n={n})"
    return f"{mean:.{digits}f} ± {std:.{digits}f} (n={n})"


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _methods(groups: Sequence[Group]) -> List[str]:
    present = {g.method for g in groups}
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def accuracy_cell(g) -> str:
    """A table cell: "not run" when no run of the group ran, else mean ± std with diverged / not-run counts."""
    if g is None or g.n_not_run() == len(g.runs):
        return "not run"
    cell = fmt_stat(*g.stat("test_accuracy"))
    if g.n_diverged():
        cell += f", {g.n_diverged()} diverged"
    if g.n_not_run():
        cell += f", {g.n_not_run()} not run"
    return cell


def accuracy_table(groups: Sequence[Group]) -> str:
    """Final test accuracy per dataset × lr0 (rows) and method (columns): mean ± std (n seeds)."""
    if not groups:
        return ""
    methods = _methods(groups)
    keys = sorted({(g.dataset, g.lr0) for g in groups})
    by = {(g.dataset, g.lr0, g.method): g for g in groups}
    rows = []
    for ds, lr0 in keys:
        row = [ds, f"{lr0:g}"]
        for m in methods:
            row.append(accuracy_cell(by.get((ds, lr0, m))))
        rows.append(row)
    return markdown(["dataset", "lr0"] + methods, rows)


def table3(groups: Sequence[Group]) -> str:
    """Imbalanced CIFAR (data reweighting): our test accuracy beside the paper's."""
    by = {(g.dataset, g.extra[0] if g.extra else math.nan, g.method): g for g in groups}
    rows = []
    for (ds, factor), ref in paper.TABLE3.items():
        row = [ds, f"{factor:g}"]
        for m in ("local", "glocal"):
            g = by.get((ds, float(factor), m))
            ours = accuracy_cell(g)
            row += [ours, fmt(ref[m])]
        rows.append(row)
    return markdown(["dataset", "imbalance factor", "local (ours)", "local (paper)", "glocal (ours)", "glocal (paper)"], rows)


def _cell(g, key: str = "test_balanced_accuracy") -> str:
    """``mean ± std (n)`` of the finished seeds, with failures (diverged / collapsed) counted beside."""
    if g is None:
        return "not run"
    cell = fmt_stat(*g.stat(key))
    fails = [f"{g.n_status(s)} {s}" for s in sorted({r.status for r in g.runs} - {"complete"})]
    return cell + (", " + ", ".join(fails) if fails else "")


LT_METHODS = ("none", "local", "glocal", "sgld")


def table3b(groups: Sequence[Group]) -> str:
    """Long-tailed MNIST / Fashion-MNIST (LeNet + meta MLP): balanced test accuracy per method."""
    if not groups:
        return ""
    by = {(g.dataset, g.extra[0] if g.extra else math.nan, g.method): g for g in groups}
    keys = sorted({(g.dataset, g.extra[0] if g.extra else math.nan) for g in groups})
    rows = [[ds, f"{f:g}"] + [_cell(by.get((ds, f, m))) for m in LT_METHODS] for ds, f in keys]
    return markdown(["dataset", "imbalance factor"] + [f"{m}" + (" (plain CE)" if m == "none" else "") for m in LT_METHODS], rows)


def table3b_wd(groups: Sequence[Group]) -> str:
    """Weight-decay-only tuning (LeNet, fixed lr0): test accuracy and the final weight decay per method."""
    if not groups:
        return ""
    rows = []
    for g in sorted(groups, key=lambda g: (g.dataset, LT_METHODS.index(g.method) if g.method in LT_METHODS else 9)):
        wds = [float(r.metrics.get("hyperparams", {}).get("weight_decay", math.nan)) for r in g.runs]
        wds = [w for w in wds if math.isfinite(w)]
        wd = f"{sum(wds) / len(wds):.3g}" if wds else "–"
        rows.append([g.dataset, f"{g.lr0:g}", g.method, _cell(g, "test_accuracy"), wd])
    return markdown(["dataset", "lr0", "method", "test accuracy", "final weight decay (mean)"], rows)


def _mean_inner_steps(g: Group) -> float:
    """Inner steps actually computed per run (global: every outer step retrains all T steps)."""
    vals = []
    for r in g.runs:
        if r.method == "global":
            vals.append(r.value("outer_steps") * float(r.config.get("steps", math.nan)))
        else:
            vals.append(r.value("inner_steps"))
    vals = [v for v in vals if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def runtime_rows(by_method: Dict[str, Group]) -> Tuple[List[List[str]], Dict[str, float]]:
    """Rows of Table 4 and the numbers for summary.json."""
    rows = []
    numbers: Dict[str, float] = {}
    base_wall = by_method["none"].stat("wall_s")[0] if "none" in by_method else math.nan
    base_ref = paper.TABLE4_SECONDS["none"]
    for m in METHOD_ORDER:
        ref = paper.TABLE4_SECONDS[m]
        g = by_method.get(m)
        if g is None:
            rows.append([m, "not run", "–", "–", "–", "–", fmt(ref, 1), fmt(ref / base_ref, 1)])
            continue
        wall = g.stat("wall_s")
        train = g.stat("train_s")
        inner = _mean_inner_steps(g)
        ratio = wall[0] / base_wall if math.isfinite(base_wall) and base_wall > 0 else math.nan
        rows.append([
            m,
            fmt_stat(*wall, digits=1),
            fmt_stat(*train, digits=1),
            fmt(inner, 0),
            fmt(wall[0] / inner * 1000, 1) if inner and math.isfinite(inner) else "–",
            fmt(ratio, 1),
            fmt(ref, 1),
            fmt(ref / base_ref, 1),
        ])
        numbers[f"runtime/{m}/wall_s_mean"] = wall[0]
        numbers[f"runtime/{m}/train_s_mean"] = train[0]
    return rows, numbers


def table4(by_method: Dict[str, Group], device: str) -> Tuple[str, Dict[str, float]]:
    rows, numbers = runtime_rows(by_method)
    header = ["method", f"wall s (ours, {device})", "train s (ours)", "inner steps computed", "ms / inner step",
              "× none (ours)", f"paper s ({paper.TABLE4_DEVICE}, T=20000)", "× none (paper)"]
    return markdown(header, rows), numbers


def ablation_table(groups: Sequence[Group]) -> Tuple[str, Dict[Tuple[int, int], float]]:
    cells = {}
    rows = []
    for g in sorted(groups, key=lambda g: g.extra):
        sigma, m = g.extra
        mean, std, n = g.stat("test_accuracy")
        if n:
            cells[(sigma, m)] = mean
        fallbacks = g.stat("dmd_fallbacks")[0]
        rows.append([str(sigma), str(m), fmt_stat(mean, std, n), fmt(fallbacks, 1)])
    if not rows:
        return "", {}
    return markdown(["σ", "m", "test accuracy", "DMD fallbacks (mean)"], rows), cells


EVIDENCE_ORDER = ("none", "local", "glocal", "glocal-mean", "glocal-strict", "glocal-horizon", "glocal-robust")
EVIDENCE_PAIRS = (("glocal", "local"), ("glocal", "glocal-mean"), ("glocal-mean", "local"),
                  ("glocal-strict", "local"), ("glocal", "glocal-strict"), ("local", "none"))


def paired_difference(a: Group, b: Group, key: str = "test_accuracy") -> Tuple[float, float, int]:
    """Mean of ``a − b`` over the seeds both have finite, its standard error (std ddof 1 / √n), and n
    (:func:`glocal_cli.report.records.paired` over the groups' per-seed values)."""
    return records.paired({r.seed: r.value(key) for r in a.runs}, {r.seed: r.value(key) for r in b.runs})


def evidence_tables(groups: Sequence[Group]) -> Tuple[str, Dict[str, float]]:
    """Does glocal beat local? Final test accuracy per variant and paired differences (same seeds).

    ``groups``: the evidence family's groups of one dataset and lr0 (one per variant).
    Returns the Markdown and the numbers (``{variant}/...`` and ``{a}-{b}/...`` keys).
    """
    by = {g.method: g for g in groups}
    order = [v for v in EVIDENCE_ORDER if v in by] + sorted(set(by) - set(EVIDENCE_ORDER))
    numbers: Dict[str, float] = {}
    rows = []
    for v in order:
        g = by[v]
        mean, std, n = g.stat("test_accuracy")
        fb = sum(r.value("dmd_fallbacks") for r in g.runs if math.isfinite(r.value("dmd_fallbacks")))
        win = sum(r.value("outer_steps") for r in g.runs if math.isfinite(r.value("outer_steps")))
        is_dmd = v.startswith("glocal")
        rows.append([v, fmt_stat(mean, std, n, 4), f"{int(fb)} / {int(win)}" if is_dmd else "–",
                     str(g.n_diverged()), fmt(g.stat("wall_s")[0], 0)])
        numbers[f"{v}/test_accuracy_mean"] = mean
        numbers[f"{v}/test_accuracy_std"] = std
        numbers[f"{v}/n"] = n
        if is_dmd and win:
            numbers[f"{v}/fallback_fraction"] = fb / win
    text = markdown(["variant", "test accuracy, mean ± std", "windows not from the estimator (fallbacks)",
                     "diverged", "wall s (mean)"], rows)
    prow = []
    for a, b in EVIDENCE_PAIRS:
        if a in by and b in by:
            d, se, n = paired_difference(by[a], by[b])
            ratio = d / se if math.isfinite(se) and se > 0 else math.nan
            verdict = "–" if not math.isfinite(ratio) else ("yes" if ratio > 2 else ("no (worse)" if ratio < -2 else "no"))
            prow.append([f"{a} − {b}", f"{d:+.5f}" if math.isfinite(d) else "–", fmt(se, 5), str(n),
                         fmt(ratio, 2), verdict])
            numbers[f"{a}-{b}/diff_mean"] = d
            numbers[f"{a}-{b}/diff_se"] = se
            numbers[f"{a}-{b}/n_pairs"] = n
    text += "\n" + markdown(["paired difference (same seeds)", "mean", "standard error", "n pairs",
                             "mean / SE", "more than 2 SE above 0?"], prow)
    return text, numbers


def evidence_record(groups: Sequence[Group], command: str = "") -> dict:
    """The record (``glocal_cli.report.records``) of one evidence table: every variant's seeds and the pairs shown."""
    by = {g.method: g for g in groups}
    order = [v for v in EVIDENCE_ORDER if v in by] + sorted(set(by) - set(EVIDENCE_ORDER))
    runs = [r for g in groups for r in g.runs]
    rec = records.new_record("evidence", "Does glocal beat local? Paired seeds of none, local and glocal's "
                             "estimators (docs/evidence_cpu.md)", runs, command)
    rec["variants"] = {v: records.variant_values(by[v].runs) for v in order}
    rec["pairs"] = [[a, b] for a, b in EVIDENCE_PAIRS if a in by and b in by]
    return rec
