"""Data files for ``dvc plots``: the runs' curves per setting and the baselines table, for DVC's own templates.

``glocal report`` writes, from every run's ``history.csv``::

    plots/learning_rate/<family>/<setting>.csv   step, mean, min, max  (over the setting's seeds)
    plots/val_loss/<family>/<setting>.csv        step, mean, min, max
    plots/test_accuracy/<family>/<setting>.csv   step, mean, min, max  (the windows where the test set was evaluated)
    plots/baselines_<dataset>.csv                variant, test_accuracy, minus_glocal, cost  (the baselines table)

and dvc.yaml's top-level ``plots:`` draws them (``dvc plots show``; ``dvc plots diff REV ...`` and
``dvc exp show`` / ``dvc plots diff EXP ...`` overlay the same files across commits and experiments).
A folder per quantity, because DVC draws a folder file by file with one definition (x, y,
template) and a run folder also holds files that are not curves (metrics.json, dmd.npz); a file
per setting with fixed columns, because a definition names its y columns and the seeds vary.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from glocal_cli import atomic
from glocal_cli.report.collect import Group, values_by_step

#: quantity (folder) -> the history.csv column it comes from.
CURVES = {"learning_rate": "lr", "val_loss": "val_loss", "test_accuracy": "test_accuracy"}


def setting_name(g: Group) -> str:
    """``fashion_mnist-lr0.001-glocal`` (+ ``-sigma6-m3`` for the ablation, ``-lt50`` for reweighting)."""
    extra = ""
    if g.family == "ablation" and len(g.extra) == 2:
        extra = f"-sigma{g.extra[0]}-m{g.extra[1]}"
    elif g.extra:
        extra = f"-lt{g.extra[0]:g}"
    lr = "" if not math.isfinite(g.lr0) else f"-lr{g.lr0:g}"
    return f"{g.dataset}{lr}-{g.method.replace(' ', '_')}{extra}"


def curve_rows(g: Group, column: str) -> List[List[float]]:
    """``[step, mean, min, max]`` over the group's seeds at every step where at least one seed has a finite value."""
    by_step = values_by_step(g.runs, column)
    return [[s, float(np.mean(v)), float(np.min(v)), float(np.max(v))] for s, v in sorted(by_step.items())]


def _csv(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([f"{x:g}" if isinstance(x, float) and x.is_integer() else (f"{x:.8g}" if isinstance(x, float) else x)
                    for x in row])
    return buf.getvalue()


def write_curves(groups: Sequence[Group], out_dir: Path) -> List[Path]:
    """One CSV per quantity and setting (groups without that column or without finite values are skipped)."""
    written = []
    for quantity, column in CURVES.items():
        for g in groups:
            rows = curve_rows(g, column)
            if not rows:
                continue
            path = out_dir / quantity / g.family / f"{setting_name(g)}.csv"
            atomic.write_text(path, _csv(["step", "mean", "min", "max"], rows))
            written.append(path)
    return written


def write_baselines_chart(out_dir: Path, dataset: str, numbers: Dict[str, float]) -> Optional[Path]:
    """``baselines_<dataset>.csv`` from the baselines table's numbers (``{variant}/test_accuracy_mean`` ...)."""
    names = [k.rsplit("/", 1)[0] for k in numbers if k.endswith("/test_accuracy_mean")]
    rows = []
    for name in names:
        acc = numbers.get(f"{name}/test_accuracy_mean", math.nan)
        if not math.isfinite(acc):
            continue
        rows.append([name, acc, numbers.get(f"{name}/diff_vs_glocal_mean", 0.0 if name == "glocal" else math.nan),
                     numbers.get(f"{name}/cost_inner_steps", math.nan)])
    if not rows:
        return None
    path = out_dir / f"baselines_{dataset}.csv"
    atomic.write_text(path, _csv(["variant", "test_accuracy", "minus_glocal", "cost"], rows))
    return path
