"""Reading run directories (``metrics.json``, ``history.csv``, ``dmd.npz``) and grouping them.

A run directory is any folder under the runs folder that holds a ``metrics.json``
written by ``glocal train``. Its *family* says which experiment it belongs to:

* ``lenet``: the optimizer task with LeNet (Fig. 2, 6, 7, 8; final-accuracy table);
* ``cifar``: the optimizer task with a WideResNet (Fig. 3);
* ``reweight``: the data-reweighting task (Table 3);
* ``global``: runs of the global baseline (Fig. 9, Table 4);
* ``ablation``: the σ × m ablation (Fig. 5);
* ``evidence``: paired seeds of none / local / glocal estimators ("Does glocal beat local?").
* ``lt``: data reweighting on long-tailed MNIST / Fashion-MNIST with LeNet (Table 3b);
* ``lt_wd``: weight-decay-only tuning on Fashion-MNIST (Table 3b, second part);
* ``baselines``: paired seeds of local / glocal against fixed inner optimizers, hypergradient
  descent and a tuned schedule ("What should I use?", docs/baselines.md).

The family is the first folder below the runs folder when it is one of those
names (the layout dvc.yaml writes), else it is inferred from the run's config.
Runs are grouped by (family, dataset, lr0, method) — plus (σ, m) for the
ablation and the imbalance factor for reweighting — and averaged over seeds.
Unreadable runs are skipped with a note, never an exception.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

FAMILIES = ("lenet", "cifar", "reweight", "global", "ablation", "evidence", "lt", "lt_wd", "baselines")


@dataclasses.dataclass
class Run:
    """One finished (or diverged) training run."""

    path: Path
    family: str
    metrics: dict
    history: Dict[str, np.ndarray]  # column -> float array (blank cells are NaN)
    dmd: Optional[Dict[str, np.ndarray]] = None

    @property
    def config(self) -> dict:
        return self.metrics.get("config") or {}

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset", "unknown"))

    @property
    def method(self) -> str:
        """The variant: the method, or for glocal with a non-default estimator e.g. ``glocal-strict``, ``glocal-mean``,
        or for none with a fixed inner optimizer that optimizer (``prodigy``, ``sgd-cosine``)."""
        from glocal_cli.config import variant_name

        c = self.config
        return variant_name(str(c.get("method", "unknown")), str(c.get("estimator") or "glocal"),
                            str(c.get("inner_optimizer") or "learnable_sgd"), str(c.get("schedule") or "constant"))

    @property
    def lr0(self) -> float:
        return float(self.config.get("lr0", math.nan))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def status(self) -> str:
        return str(self.metrics.get("status", "unknown"))

    def value(self, key: str) -> float:
        """A scalar metric as a float (NaN when missing or not a number)."""
        v = self.metrics.get(key)
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan


@dataclasses.dataclass
class Group:
    """Runs that differ only in their seed."""

    family: str
    dataset: str
    lr0: float
    method: str
    extra: Tuple = ()  # (sigma, m) for the ablation, (factor,) for reweighting
    runs: List[Run] = dataclasses.field(default_factory=list)

    @property
    def label(self) -> str:
        parts = [self.family, self.dataset, f"lr{self.lr0:g}", self.method]
        parts += [str(x) for x in self.extra]
        return "/".join(parts)

    def stat(self, key: str) -> Tuple[float, float, int]:
        """(mean, sample std (ddof 1; NaN for one seed), n) of a scalar metric over the seeds whose value is
        finite: the ± of every table (``glocal_cli.report.records.CONVENTION``)."""
        vals = np.array([r.value(key) for r in self.runs], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            return math.nan, math.nan, 0
        return float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else math.nan, int(vals.size)

    def n_diverged(self) -> int:
        """Runs that started but did not complete (diverged or failed)."""
        return sum(r.status not in ("complete", NOT_RUN) for r in self.runs)

    def n_not_run(self) -> int:
        """Runs recorded as "not run" (their dataset was unavailable)."""
        return sum(r.status == NOT_RUN for r in self.runs)


    def n_status(self, status: str) -> int:
        """Runs that ended with ``status`` (``diverged``, ``collapsed``, ...)."""
        return sum(r.status == status for r in self.runs)


NOT_RUN = "not run"  # status of a run whose dataset was unavailable (see glocal_cli.train.write_not_run)


def values_by_step(runs, column: str) -> Dict[float, List[float]]:
    """``{inner step: [finite values of column over runs]}``: runs aligned by step; a diverged run stops
    contributing where its values stop being finite."""
    by_step: Dict[float, List[float]] = {}
    for r in runs:
        steps, vals = r.history.get("step"), r.history.get(column)
        if steps is None or vals is None:
            continue
        for s, v in zip(steps, vals):
            if math.isfinite(s) and math.isfinite(v):
                by_step.setdefault(float(s), []).append(float(v))
    return by_step


def read_history(path: Path) -> Dict[str, np.ndarray]:
    """``history.csv`` as numeric columns (non-numeric columns are dropped, blanks are NaN)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out: Dict[str, np.ndarray] = {}
    for key in rows[0].keys():
        vals = []
        numeric = True
        for r in rows:
            cell = r.get(key, "")
            if cell in ("", None):
                vals.append(math.nan)
                continue
            try:
                vals.append(float(cell))
            except ValueError:
                numeric = False
                break
        if numeric:
            out[key] = np.asarray(vals, dtype=float)
    return out


def _family(run_dir: Path, runs_dir: Path, config: dict) -> str:
    rel = run_dir.relative_to(runs_dir).parts
    if len(rel) > 1 and rel[0] in FAMILIES:
        return rel[0]
    if config.get("method") == "global":
        return "global"
    if config.get("task") == "reweight":
        return "reweight"
    if str(config.get("model", "lenet")).startswith("wrn"):
        return "cifar"
    return "lenet"


def read_metrics(run_dir: Path) -> dict:
    """A run folder's ``metrics.json``; raises ``ValueError`` with a short reason when unreadable."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"metrics.json unreadable ({e.__class__.__name__})") from None
    if not isinstance(metrics, dict):
        raise ValueError("metrics.json is not a mapping")
    return metrics


def read_run(run_dir: Path, runs_dir: Path) -> Run:
    """One run directory; raises ``ValueError`` with a short reason when unreadable."""
    metrics = read_metrics(run_dir)
    history: Dict[str, np.ndarray] = {}
    if (run_dir / "history.csv").is_file():
        try:
            history = read_history(run_dir / "history.csv")
        except (OSError, csv.Error):
            history = {}
    dmd = None
    if (run_dir / "dmd.npz").is_file():
        try:
            with np.load(run_dir / "dmd.npz") as z:
                dmd = {k: z[k] for k in z.files}
        except Exception:  # a damaged dmd.npz only costs the eigenvalue figure
            dmd = None
    family = _family(run_dir, runs_dir, metrics.get("config") or {})
    return Run(run_dir, family, metrics, history, dmd)


def collect_runs(runs_dir: str | Path) -> Tuple[List[Run], List[str]]:
    """Every readable run below ``runs_dir`` (sorted by path) and notes on the skipped ones."""
    runs_dir = Path(runs_dir)
    runs: List[Run] = []
    notes: List[str] = []
    for metrics_path in sorted(runs_dir.rglob("metrics.json")):
        run_dir = metrics_path.parent
        try:
            runs.append(read_run(run_dir, runs_dir))
        except ValueError as e:
            notes.append(f"skipped {run_dir}: {e}")
    return runs, notes


def group_runs(runs: List[Run]) -> Dict[tuple, Group]:
    """Groups keyed by (family, dataset, lr0, method, *extra), in a stable order."""
    groups: Dict[tuple, Group] = {}
    for r in runs:
        extra: Tuple = ()
        if r.family == "ablation":
            extra = (int(r.config.get("sigma", 0)), int(r.config.get("m", 0)))
        elif r.family in ("reweight", "lt"):
            extra = (float(r.config.get("imbalance_factor", math.nan)),)
        key = (r.family, r.dataset, r.lr0, r.method) + extra
        if key not in groups:
            groups[key] = Group(r.family, r.dataset, r.lr0, r.method, extra)
        groups[key].runs.append(r)
    return dict(sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])))
