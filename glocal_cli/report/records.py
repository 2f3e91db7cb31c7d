"""Records: one JSON file per published result, with every seed's values, and the statistics over them.

``glocal report`` writes a record beside each table it makes from runs
(``results/records/evidence_<dataset>_lr<lr0>.json``, ``results/records/baselines_<dataset>.json``);
a published result is such a file copied under ``docs/`` and committed, and the README's and
docs' tables are generated from it (:mod:`glocal_cli.report.published`). A record holds::

    {"record": "evidence",                      # which kind of result (the template that renders it)
     "what": "...", "command": "glocal report --runs data/runs --out results",
     "date": "2026-12-06", "provenance": {...},  # the report's stack; every run's own commit is per seed
     "setting": {"dataset": ..., "steps": 200, "tau": 20, ...},
     "pm": CONVENTION,                          # what ± means wherever this record is printed
     "variants": {"glocal": {"seeds": [0, 1, ...], "status": [...], "test_accuracy": [...],
                             "val_loss": [...], "final_lr": [...], "wall_s": [...], "outer_steps": [...],
                             "dmd_fallbacks": [...], "dmd_fallback_reasons": [{"diverging": 9, ...}, ...],
                             "dmd_windows": {"tol": [...], "nearest": [...], ...},
                             "commit": [...], "dirty": [...]}, ...}}

(the per-variant keys are ``glocal_cli.report.paper_scale``'s, plus ``val_loss``,
``dmd_fallback_reasons``, ``dmd_windows`` and ``dirty``). Only the seeds' values are stored: every mean, ± and paired
difference is computed from them when printed, by the functions below, with one convention
(:data:`CONVENTION`).
"""

from __future__ import annotations

import csv
import datetime
import json
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from glocal_cli.errors import UserError

#: What ± means, in every table (README.md states it once).
CONVENTION = {
    "over_seeds": "mean ± sample standard deviation over seeds (ddof 1)",
    "paired": "paired difference over the same seeds: mean ± its standard error "
              "(ddof-1 standard deviation of the per-seed differences / √n)",
}

#: The keys of the setting a record states (read from the runs' configs).
SETTING_KEYS = ("dataset", "model", "lr0", "steps", "tau", "sigma", "m", "batch_size", "val_fraction", "outer_lr")


# --- statistics (the convention) -------------------------------------------------------------------------------


def finite(values: Sequence) -> List[float]:
    """The values that are finite numbers (None, NaN and non-numbers dropped)."""
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append(x)
    return out


def mean_std(values: Sequence) -> Tuple[float, float, int]:
    """(mean, sample std with ddof 1, n) of the finite values; std is NaN for n < 2, both NaN for n = 0."""
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def paired_differences(a: Dict[int, float], b: Dict[int, float]) -> Tuple[List[int], List[float]]:
    """The seeds where both ``a`` and ``b`` are finite (sorted) and ``a[s] − b[s]`` for each."""
    seeds, diffs = [], []
    for s in sorted(set(a) & set(b)):
        fa, fb = finite([a[s]]), finite([b[s]])
        if fa and fb:
            seeds.append(s)
            diffs.append(fa[0] - fb[0])
    return seeds, diffs


def paired(a: Dict[int, float], b: Dict[int, float]) -> Tuple[float, float, int]:
    """(mean, standard error, n) of ``a[s] − b[s]`` over the seeds where both are finite (SE: ddof-1 std / √n)."""
    mean, std, n = mean_std(paired_differences(a, b)[1])
    return mean, (std / math.sqrt(n) if n > 1 else math.nan), n


def by_seed(variant: dict, key: str = "test_accuracy") -> Dict[int, float]:
    """``{seed: value}`` of one per-seed list of a record's variant."""
    return dict(zip(variant["seeds"], variant[key]))


# --- building records from runs ----------------------------------------------------------------------------------


def _num(x) -> Optional[float]:
    xs = finite([x])
    return xs[0] if xs else None


def window_split(run) -> Optional[Dict[str, int]]:
    """A run's windows by how the estimate was made: ``metrics.json``'s ``dmd_windows``, or counted from its
    ``history.csv`` (runs written before metrics.json carried it); None for a run without estimates."""
    from glocal_cli.windows import estimate_counts

    split = run.metrics.get("dmd_windows")
    if split is None and (run.path / "history.csv").is_file():
        with open(run.path / "history.csv", newline="") as f:
            split = estimate_counts(csv.DictReader(f))
    if not split or not any(split.values()):
        return None
    return {k: int(v) for k, v in split.items()}


def variant_values(runs: Sequence) -> dict:
    """The per-seed lists of a record's variant from its runs (``glocal_cli.report.collect.Run``), by seed."""
    from glocal_cli.windows import KINDS

    runs = sorted(runs, key=lambda r: r.seed)
    prov = [r.metrics.get("provenance") or {} for r in runs]
    out = {
        "seeds": [r.seed for r in runs],
        "status": [r.status for r in runs],
        "test_accuracy": [_num(r.metrics.get("test_accuracy")) for r in runs],
        "val_loss": [_num(r.metrics.get("val_loss")) for r in runs],
        "final_lr": [_num((r.metrics.get("hyperparams") or {}).get("lr")) for r in runs],
        "wall_s": [_num(r.metrics.get("wall_s")) for r in runs],
        "outer_steps": [r.metrics.get("outer_steps") for r in runs],
        "dmd_fallbacks": [r.metrics.get("dmd_fallbacks") for r in runs],
        "dmd_fallback_reasons": [r.metrics.get("dmd_fallback_reasons") or {} for r in runs],
        "commit": [p.get("commit") for p in prov],
        "dirty": [p.get("dirty") for p in prov],
    }
    splits = [window_split(r) for r in runs]
    if any(s is not None for s in splits):
        out["dmd_windows"] = {k: [(s or {}).get(k, 0) for s in splits] for k in KINDS}
    return out


def setting_of(runs: Sequence, keys: Sequence[str] = SETTING_KEYS) -> dict:
    """The config values all ``runs`` share (a key they differ in is left out)."""
    out = {}
    for k in keys:
        vals = {json.dumps(r.config.get(k)) for r in runs}
        if len(vals) == 1:
            out[k] = runs[0].config.get(k)
    return out


def new_record(kind: str, what: str, runs: Sequence, command: str, date: Optional[str] = None) -> dict:
    """The common head of a record: kind, what, command, date, the report's provenance, setting, convention."""
    from glocal_cli import provenance

    return {
        "record": kind,
        "what": what,
        "command": command,
        "date": date or datetime.date.today().isoformat(),
        "provenance": provenance.collect(),
        "setting": setting_of(runs),
        "seeds": sorted({r.seed for r in runs}),
        "pm": dict(CONVENTION),
    }


# --- reading -----------------------------------------------------------------------------------------------------


def load(path: str | Path, kind: Optional[str] = None) -> dict:
    """A record file; one-line :class:`UserError` when it is missing, not JSON or not of ``kind``."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"record {path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"record {path}: not JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(rec, dict):
        raise UserError(f"record {path}: not a JSON object")
    if kind is not None and rec.get("record") != kind:
        raise UserError(f"record {path}: a {rec.get('record')!r} record, expected {kind!r}")
    return rec
