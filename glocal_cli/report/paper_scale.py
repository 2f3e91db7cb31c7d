"""The paper-scale verdict: one record built from committed run folders, its figure and its page.

``python -m glocal_cli.report.paper_scale`` reads the run folders under ``--records``
(default ``docs/records/paper_scale_cpu``; any folder below it that holds a ``metrics.json``
written by ``glocal train``, e.g. ``<variant>/seed<k>/`` with ``history.csv`` and, for
glocal, ``dmd.npz``) and writes three files to ``--out`` (default ``docs/``):

* ``paper_scale_cpu.json``: the record (:func:`build`);
* ``paper_scale_cpu.png``: Fig. 2 from the committed histories (:func:`curves`,
  :func:`glocal_cli.report.figures.seed_band_plot`: mean line, min–max band over seeds);
* ``paper_scale_cpu.md``: the page, generated from the record alone
  (:func:`glocal_cli.report.paper_scale_page.markdown`).

Any number of seeds per variant works (1, 3, 5, ...), and so does a missing variant: the
page says how many seeds are in so far. Two optional files beside the runs add context:
``campaign.json`` (the campaign's plan: pinned commit, command, units, their wall time and
load; ``scripts/campaign.py``) and ``earlier_seed0.json`` (the superseded one-seed record's
values, :func:`earlier_summary`).

The record (keys in order; ``...`` elided)::

    {"convention": "...", "device": "cpu", "note": "", "records": "docs/records/paper_scale_cpu",
     "settings": {"dataset": "fashion_mnist", "steps": 20000, "tau": 50, "lr0": 0.001, ...},
     "variants": {"none": {"seeds": [0, 1], "runs": [{"seed": 0, "status": "complete",
                  "test_accuracy": 0.80, "test_loss": 0.54, "final": {"lr": ..., "momentum": ...,
                  "weight_decay": ...}, "wall_s": ..., "windows": null | {"tol": 322, "nearest": 78,
                  "fallback": 0, "total": 400}, "provenance": {"commit": ..., "dirty": false, "jax": ...}}, ...],
                  "summary": {"test_accuracy": {"mean": ..., "std": ..., "n": 2}, ...}, "windows": ...}, ...},
     "paired": [{"a": "glocal", "b": "local", "n": 3, "mean": ..., "se": ..., "seeds": [0, 1, 2],
                 "differences": [...]}, ...],
     "commits": {"<sha>": ["glocal/seed0", ...]}, "one_commit": true, "pinned_commit": "<sha>" | null,
     "at_pinned_commit": true | null, "versions": {"jax": "0.10.2", ...},
     "test_accuracy_by_step": {"step": [...], "variants": {"glocal": {"mean": [...], "min": [...],
                               "max": [...], "n": [...]}}},
     "figure": {"line": ..., "band": ..., "panels": [...]},
     "plan": null | {"what": ..., "command": ..., "variants": {"glocal": [0, ..., 4]}, "units": [...]},
     "earlier": null | {...}, "skipped": [...], "other_lr0s": [{"settings": ..., "variants": ..., "paired": ...}]}

Convention (:data:`CONVENTION`): ± over seeds is the sample standard deviation (ddof 1); a
paired difference is the mean of the per-seed differences ± its standard error (their ddof-1
standard deviation / √n); with one seed there is no standard deviation or standard error (null).

The README's one-line answer: :func:`summary_line` (``glocal − local = −0.0021 ± 0.0019 (n = 3 paired
seeds)``), a function of the record: ``summary_line(json.loads(Path("docs/paper_scale_cpu.json").read_text()))``.

Runs of several initial learning rates (the device job, ``scripts/gpu/paper.py``) give one
entry each: the main one at lr0 1e-3 (Fig. 2's), the others in ``other_lr0s``. Reading
(:func:`load`) is the only step that touches files; the rest are pure functions of what it read.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from glocal_cli.report import records
from glocal_cli.report.collect import read_metrics
from glocal_cli.report.paper_scale_page import summary_line  # noqa: F401 (the README's one-line answer)
from glocal_cli.report.tables import EVIDENCE_ORDER, EVIDENCE_PAIRS
from glocal_cli.windows import estimate_counts

RECORDS = Path("docs/records/paper_scale_cpu")
OUT = Path("docs")
NAME = "paper_scale_cpu"
PLAN_FILE = "campaign.json"
EARLIER_FILE = "earlier_seed0.json"
MAIN_LR0 = 1e-3

CONVENTION = ("± over seeds: the sample standard deviation (ddof 1); a paired difference: the mean of the "
              "per-seed differences ± its standard error (the ddof-1 standard deviation of the differences / √n); "
              "with one seed: no standard deviation, no standard error (null)")

#: Config fields the record names as its settings; runs of one record must agree on all but :data:`VARIANT_KEYS`.
SETTING_KEYS = ("dataset", "model", "task", "steps", "tau", "sigma", "m", "batch_size", "val_fraction", "lr0",
                "momentum0", "weight_decay0", "learn", "outer_optimizer", "outer_lr", "inner_optimizer", "schedule",
                "eval_every")
#: Settings that make a variant rather than a setting: a fixed optimizer the campaign runs beside the paper's
#: variants (``prodigy``: ``--method none --inner-optimizer prodigy``) differs in them; the record's settings take
#: them from the paper's variants (none / local / glocal). lr0 also splits the runs into entries (``other_lr0s``).
VARIANT_KEYS = ("lr0", "inner_optimizer", "schedule")
#: The hyperparameters whose final values the record keeps (``metrics.json``'s ``hyperparams``).
HYPERPARAMS = ("lr", "momentum", "weight_decay")
#: Per-seed scalars summarized over seeds (mean, ddof-1 std, n).
#: The statuses of a run that ended (its record is a result; a diverged run is one).
ENDED = ("complete", "diverged", "collapsed")
SUMMARIZED = ("test_accuracy", "test_loss", "final.lr", "final.momentum", "final.weight_decay", "wall_s")
#: How glocal's windows are split, in display order (others follow by name).
#: The figure's panels: (history column, label, log scale), and what its line and band show.
FIGURE_PANELS = (("lr", "learning rate", True), ("momentum", "momentum", False), ("weight_decay", "weight decay", True),
                 ("test_accuracy", "test accuracy", False))
FIGURE_BAND = "minmax"
FIGURE_TEXT = {"line": "the mean over seeds", "band": "the lowest to the highest seed (min–max over seeds)",
               "panels": [c for c, _, _ in FIGURE_PANELS]}
#: The pairs reported first (the verdict), then the device job's others where present.
PAIRS = (("glocal", "local"), ("local", "none")) + tuple(p for p in EVIDENCE_PAIRS
                                                         if p not in (("glocal", "local"), ("local", "none")))


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """One run folder as read from disk: ``where`` (relative to the records folder, ``glocal/seed0``),
    its ``metrics.json`` and its ``history.csv`` as columns of strings (cells as written)."""

    where: str
    metrics: dict
    history: Dict[str, List[str]]

    @property
    def config(self) -> dict:
        return self.metrics.get("config") or {}

    @property
    def variant(self) -> str:
        """``none`` / ``local`` / ``glocal`` (or ``glocal-mean`` etc.: :func:`glocal_cli.config.variant_name`)."""
        from glocal_cli.config import variant_name

        c = self.config
        return variant_name(str(c.get("method", "unknown")), str(c.get("estimator") or "glocal"),
                            str(c.get("inner_optimizer") or "learnable_sgd"), str(c.get("schedule") or "constant"))

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def lr0(self) -> float:
        return float(self.config.get("lr0", math.nan))


@dataclasses.dataclass(frozen=True)
class Inputs:
    """Everything :func:`build` reads: the run folders, the campaign plan and the earlier record (or None),
    the records folder's name and notes on folders that could not be read."""

    runs: Tuple[RunFolder, ...]
    plan: Optional[dict] = None
    earlier: Optional[dict] = None
    records: str = str(RECORDS)
    skipped: Tuple[str, ...] = ()
    planned: Optional[dict] = None  # the plan's settings (its command parsed) while no run is in yet


# ----------------------------------------------------------------------------------------------- reading


def read_history(path: Path) -> Dict[str, List[str]]:
    """``history.csv`` as ``{column: [cell, ...]}`` (strings as written; ``{}`` for a missing or empty file)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    return {k: [r.get(k) or "" for r in rows] for k in rows[0]}


def read_run(folder: Path, root: Path) -> RunFolder:
    """The run in ``folder``; raises ``ValueError`` when its ``metrics.json`` is unreadable."""
    metrics = read_metrics(folder)
    try:
        history = read_history(folder / "history.csv")
    except (OSError, csv.Error) as e:
        raise ValueError(f"history.csv unreadable ({type(e).__name__})") from None
    return RunFolder(folder.relative_to(root).as_posix(), metrics, history)


def load(records: str | Path) -> Inputs:
    """Read every run folder below ``records`` (any depth), and ``campaign.json`` / ``earlier_seed0.json``
    where they are. Unreadable run folders are noted in ``skipped``, not raised."""
    root = Path(records)
    runs, skipped = [], []
    for metrics in sorted(root.rglob("metrics.json")):
        try:
            runs.append(read_run(metrics.parent, root))
        except ValueError as e:
            skipped.append(f"{metrics.parent.relative_to(root).as_posix()}: {e}")

    def optional(name: str) -> Optional[dict]:
        p = root / name
        return json.loads(p.read_text()) if p.is_file() else None

    plan = optional(PLAN_FILE)
    planned = planned_settings(plan) if plan is not None and not runs else None
    return Inputs(tuple(runs), plan, optional(EARLIER_FILE), str(records), tuple(skipped), planned)


def planned_settings(plan: dict) -> dict:
    """The :data:`SETTING_KEYS` of the campaign's command (``plan["args"]``, parsed as ``glocal train`` parses it,
    params file included, from the current folder: the repository)."""
    from glocal_cli import cli

    method = (plan.get("units") or [{}])[0].get("method", "glocal")
    cfg = cli.parse_train([*plan["args"], "--method", method])[0]
    flat = cfg.to_dict()
    return {k: flat.get(k) for k in SETTING_KEYS}


# ----------------------------------------------------------------------------------------- pure helpers


def number(x) -> Optional[float]:
    """A JSON number: a finite float, else None (missing, blank, NaN, not a number)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def column(run: RunFolder, name: str) -> np.ndarray:
    """A history column as floats (blank or non-numeric cells are NaN; a missing column is empty)."""
    values = [number(c) for c in run.history.get(name, [])]
    return np.array([np.nan if x is None else x for x in values], float)


def window_split(history: Dict[str, List[str]]) -> Optional[Dict[str, int]]:
    """How each window's hypergradient was made (:func:`glocal_cli.windows.estimate_counts` over the history's
    rows): ``{"tol": .., "nearest": .., "fallback": .., other kinds that occur, "total": windows}``; None when
    no window ran an estimator (``none``, ``local``)."""
    rows = [dict(zip(history, cells)) for cells in zip(*history.values())]
    if not any(str(r.get("estimator") or "").strip() for r in rows):
        return None
    counts = estimate_counts(rows)
    split = {k: v for k, v in counts.items() if v or k in ("tol", "nearest", "fallback")}
    split["total"] = sum(counts.values())
    return split


def add_splits(splits: Iterable[Optional[Dict[str, int]]]) -> Optional[Dict[str, int]]:
    """The sum of per-seed window splits (keys in the first one's order), None when none has one."""
    present = [s for s in splits if s is not None]
    if not present:
        return None
    total: Dict[str, int] = {}
    for s in present:
        for k, v in s.items():
            total[k] = total.get(k, 0) + v
    total["total"] = total.pop("total")
    return total


def _none_if_nan(x: float) -> Optional[float]:
    return None if math.isnan(x) else x


def spread(values: Sequence[Optional[float]]) -> Dict[str, Optional[float]]:
    """``{"mean", "std" (ddof 1; None below two values), "n"}`` of the values that are numbers
    (:func:`glocal_cli.report.records.mean_std`, the one convention)."""
    mean, std, n = records.mean_std(values)
    return {"mean": _none_if_nan(mean), "std": _none_if_nan(std), "n": n}


def paired_difference(a: Dict[int, Optional[float]], b: Dict[int, Optional[float]]) -> dict:
    """``a − b`` over the seeds where both are numbers: ``{"n", "mean", "se", "seeds", "differences"}``.

    ``se``: the ddof-1 standard deviation of the differences / √n (None for n < 2); ``mean``
    None for n = 0 (:func:`glocal_cli.report.records.paired`, the one convention).
    """
    seeds, diffs = records.paired_differences(a, b)
    mean, se, n = records.paired(a, b)
    return {"n": n, "mean": _none_if_nan(mean), "se": _none_if_nan(se), "seeds": seeds, "differences": diffs}


def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = (d or {}).get(part)
    return d


# ------------------------------------------------------------------------------------------- the record


def seed_entry(run: RunFolder) -> dict:
    """One seed's row of the record: status, test accuracy / loss, final hyperparameters, times, windows,
    provenance (``metrics.json``'s ``provenance``: commit, dirty, package versions)."""
    m = run.metrics
    hp = m.get("hyperparams") or {}
    return {
        "seed": run.seed,
        "where": run.where,
        "status": m.get("status"),
        "failure": m.get("failure") or None,
        "test_accuracy": number(m.get("test_accuracy")),
        "test_loss": number(m.get("test_loss")),
        "val_loss": number(m.get("val_loss")),
        "final": {k: number(hp.get(k)) for k in HYPERPARAMS},
        "wall_s": number(m.get("wall_s")),
        "window_s": number(m.get("window_s")),
        "outer_steps": m.get("outer_steps"),
        "seeds_in_program": m.get("seeds_in_program"),
        "windows": window_split(run.history),
        "dmd_fallback_reasons": m.get("dmd_fallback_reasons") or {},
        "provenance": m.get("provenance") or {},
    }


def variant_entry(runs: Sequence[RunFolder]) -> dict:
    """A variant's seeds (sorted), their rows, the summary over seeds and the windows split summed."""
    rows = [seed_entry(r) for r in sorted(runs, key=lambda r: r.seed)]
    return {"seeds": [r["seed"] for r in rows], "runs": rows,
            "summary": {k: spread([_get(r, k) for r in rows]) for k in SUMMARIZED},
            "windows": add_splits(r["windows"] for r in rows)}


def _order(names: Iterable[str]) -> List[str]:
    names = set(names)
    return [v for v in EVIDENCE_ORDER if v in names] + sorted(names - set(EVIDENCE_ORDER))


def settings_of(runs: Sequence[RunFolder]) -> dict:
    """The :data:`SETTING_KEYS` of the runs' configs, :data:`VARIANT_KEYS` from the paper's variants (the first
    run's when none is there); ``ValueError`` when runs differ in any other."""
    paper = [r for r in runs if r.variant in EVIDENCE_ORDER] or list(runs)
    out = {}
    for k in SETTING_KEYS:
        values = {json.dumps(r.config.get(k)) for r in runs}
        if len(values) > 1 and k not in VARIANT_KEYS:
            raise ValueError(f"runs of different settings: {k} = {sorted(values)}")
        out[k] = paper[0].config.get(k)
    return out


def pairs_of(variants: Iterable[str]) -> List[Tuple[str, str]]:
    """The paired differences an entry reports: :data:`PAIRS` among its variants, then each variant beyond the
    paper's (a fixed optimizer run beside them, ``prodigy``) minus glocal."""
    names = list(variants)
    out = [(a, b) for a, b in PAIRS if a in names and b in names]
    return out + [(v, "glocal") for v in names if v not in EVIDENCE_ORDER and "glocal" in names]


def curves(runs: Sequence[RunFolder], name: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per variant, a history column over seeds aligned by inner step: ``(steps [k], values [seeds, k])``.

    ``steps``: every step where some seed has a finite value (sorted); ``values``: NaN where a
    seed has none (test accuracy is only measured every ``eval_every`` windows).
    """
    by: Dict[str, List[RunFolder]] = {}
    for r in runs:
        by.setdefault(r.variant, []).append(r)
    out = {}
    for v in _order(by):
        series = []
        for r in sorted(by[v], key=lambda r: r.seed):
            steps, vals = column(r, "step"), column(r, name)
            ok = np.isfinite(steps) & np.isfinite(vals) if vals.size == steps.size else np.zeros(0, bool)
            series.append(dict(zip(steps[ok].tolist(), vals[ok].tolist())))
        steps = np.array(sorted({s for d in series for s in d}), float)
        if steps.size:
            out[v] = (steps, np.array([[d.get(s, np.nan) for s in steps] for d in series], float))
    return out


def by_step(curve: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> dict:
    """``{"step": [...], "variants": {v: {"mean", "min", "max", "n"}}}`` at the steps every variant has,
    over the seeds with a value there."""
    if not curve:
        return {"step": [], "variants": {}}
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curve.values())))
    out: dict = {"step": [int(s) for s in common], "variants": {}}
    for v, (steps, values) in curve.items():
        cols = values[:, np.searchsorted(steps, common)] if common else values[:, :0]
        n = np.isfinite(cols).sum(axis=0)
        with np.errstate(all="ignore"):
            stats = {"mean": np.nanmean(cols, axis=0), "min": np.nanmin(cols, axis=0), "max": np.nanmax(cols, axis=0)}
        out["variants"][v] = {k: [number(x) for x in a] for k, a in stats.items()}
        out["variants"][v]["n"] = [int(x) for x in n]
    return out


def entry(runs: Sequence[RunFolder], planned: Optional[dict] = None) -> dict:
    """One setting's part of the record: settings (no run yet: ``planned``), variants, paired differences,
    test accuracy by step."""
    by: Dict[str, List[RunFolder]] = {}
    for r in runs:
        by.setdefault(r.variant, []).append(r)
    for v, rs in by.items():
        seeds = [r.seed for r in rs]
        if len(set(seeds)) < len(seeds):
            dup = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"{v}: seed(s) {dup} twice ({', '.join(r.where for r in rs if r.seed in dup)})")
    variants = {v: variant_entry(by[v]) for v in _order(by)}
    acc = {v: {r["seed"]: r["test_accuracy"] for r in e["runs"]} for v, e in variants.items()}
    paired = [{"a": a, "b": b, **paired_difference(acc[a], acc[b])} for a, b in pairs_of(acc)]
    return {"settings": settings_of(runs) if runs else dict(planned or {}), "variants": variants, "paired": paired,
            "test_accuracy_by_step": by_step(curves(runs, "test_accuracy"))}


def check_layout(run: RunFolder, variants: Iterable[str]) -> None:
    """A folder named ``seed<k>`` holds seed k, and one below a variant's name (``glocal/seed0``) that variant."""
    parts = run.where.split("/")
    m = re.fullmatch(r"seed(\d+)", parts[-1])
    if m and int(m.group(1)) != run.seed:
        raise ValueError(f"{run.where} holds seed {run.seed}")
    if len(parts) >= 2 and parts[-2] in set(variants) and parts[-2] != run.variant:
        raise ValueError(f"{run.where} holds a {run.variant} run")


def unit_variant(unit: dict) -> str:
    """The variant a plan's unit runs: its ``"variant"`` (``prodigy`` for ``--method none --inner-optimizer
    prodigy``), else its method."""
    return unit.get("variant") or unit["method"]


def unit_folders(unit: dict) -> List[str]:
    """Where a plan's unit puts its seeds, relative to the records folder (``glocal/seed3``; a unit of another
    setting, with ``"records": "lr0.1"``, ``lr0.1/glocal/seed0``): as ``scripts/campaign.py`` copies them."""
    prefix = f"{unit['records']}/" if unit.get("records") else ""
    return [f"{prefix}{unit_variant(unit)}/seed{s}" for s in unit["seeds"]]


def plan_summary(plan: Optional[dict], ended: Iterable[str]) -> Optional[dict]:
    """The campaign plan's command, planned seeds per variant of its own setting (units without a ``"records"``
    subfolder), and units (done when every folder of the unit is among ``ended``, the run folders that ended; wall
    time and load where the plan recorded them; ``set``: the options the unit replaces)."""
    if not plan:
        return None
    ended = set(ended)
    planned: Dict[str, List[int]] = {}
    units = []
    for u in plan.get("units", []):
        if not u.get("records"):
            planned[unit_variant(u)] = sorted(set(planned.get(unit_variant(u), [])) | set(u["seeds"]))
        info = (plan.get("finished") or {}).get(u["name"], {})
        units.append({"name": u["name"], "method": unit_variant(u), "seeds": list(u["seeds"]),
                      "set": dict(u.get("set") or {}), "done": all(f in ended for f in unit_folders(u)),
                      "wall_s": number(info.get("wall_s")), "load_mean": number(info.get("load_mean")),
                      "load_max": number(info.get("load_max")), "cpus": info.get("cpus"),
                      "finished": info.get("finished")})
    args = plan.get("args")
    command = None if args is None else "glocal train " + " ".join(args) + " --method METHOD --seeds SEEDS"
    return {"what": plan.get("what"), "pinned_commit": plan.get("pinned_commit"), "command": command,
            "variants": {v: planned[v] for v in _order(planned)}, "units": units}


def provenance_summary(variants: dict, pinned: Optional[str]) -> dict:
    """Which commits the runs used (``{commit: ["glocal/seed0", ...]}``), whether they share one, whether it is
    the pinned one, whether any was dirty, and the package versions (one value, or a list where runs differ)."""
    rows = [(v, r) for v, e in variants.items() for r in e["runs"]]
    commits: Dict[str, List[str]] = {}
    versions: Dict[str, List] = {}
    for v, r in rows:
        p = r["provenance"]
        commits.setdefault(str(p.get("commit")), []).append(f"{v}/seed{r['seed']}")
        for k in ("python", "glocal-cli", "jax", "jaxlib", "flax", "optax", "numpy", "backend", "device_kind"):
            if p.get(k) is not None and p.get(k) not in versions.setdefault(k, []):
                versions[k].append(p.get(k))
    return {"commits": commits, "one_commit": len(commits) == 1 and "None" not in commits,
            "pinned_commit": pinned,
            "at_pinned_commit": None if pinned is None or not rows else set(commits) == {pinned},
            "dirty": sorted(f"{v}/seed{r['seed']}" for v, r in rows if r["provenance"].get("dirty")),
            "versions": {k: vs[0] if len(vs) == 1 else vs for k, vs in versions.items()}}


def device_of(kinds, plan: Optional[dict]) -> Optional[str]:
    """The runs' device kind(s), with the core count where every finished unit of the plan recorded the same."""
    text = ", ".join(kinds) if isinstance(kinds, list) else kinds
    cpus = {u["cpus"] for u in (plan or {}).get("units", []) if u.get("cpus")}
    return f"{text} ({cpus.pop()} cores)" if text and len(cpus) == 1 else text


def build(inputs: Inputs, device: Optional[str] = None, date: Optional[str] = None, note: str = "") -> dict:
    """The record of ``inputs`` (see the module docstring); a pure function of its arguments.

    ``device`` / ``date``: stated as given (default: the runs' device kinds, no date). Raises
    ``ValueError`` when there is no finished run, when runs of one lr0 differ in a setting, or
    when a folder's name disagrees with its run (``glocal/seed1`` holding a local run).
    """
    runs = [r for r in inputs.runs if r.metrics.get("status") != "not run"]
    if not runs and inputs.plan is None:
        raise ValueError(f"no finished runs under {inputs.records}")
    names = {r.variant for r in runs} | set(EVIDENCE_ORDER) | {u["method"] for u in (inputs.plan or {}).get("units", [])}
    for r in runs:
        check_layout(r, names)
    by_lr: Dict[float, List[RunFolder]] = {}
    for r in runs:
        by_lr.setdefault(r.lr0, []).append(r)
    lrs = sorted(by_lr, key=lambda lr: (abs(lr - MAIN_LR0) > 1e-12, lr)) or [MAIN_LR0]
    main = entry(by_lr.get(lrs[0], []), inputs.planned)  # a campaign's plan before its first unit: no run yet
    pinned = (inputs.plan or {}).get("pinned_commit")
    prov = provenance_summary(main["variants"], pinned)
    plan = plan_summary(inputs.plan, (r.where for r in runs if r.metrics.get("status") in ENDED))
    return {
        "convention": CONVENTION,
        "device": device or device_of(prov["versions"].get("device_kind"), plan),
        **({"date": date} if date else {}),
        "note": note,
        "records": inputs.records,
        **main,
        **prov,
        "figure": FIGURE_TEXT,
        "plan": plan,
        "earlier": inputs.earlier,
        "skipped": list(inputs.skipped),
        "other_lr0s": [entry(by_lr[lr]) for lr in lrs[1:]],
    }


def collect(records: str | Path, device: Optional[str] = None, date: Optional[str] = None, note: str = "") -> dict:
    """:func:`build` of :func:`load` (``records``: a folder of run folders)."""
    return build(load(records), device=device, date=date, note=note)


def earlier_summary(old: dict, source: str) -> dict:
    """The values worth keeping from a superseded record (the one-seed run before the campaign):
    its device, date, settings, note and per variant the seed-0 test accuracy, test loss, final lr,
    wall time and commit. ``old``: a record of the former builder (``variants.<v>.test_accuracy`` lists)."""
    variants = {}
    for v, e in (old.get("variants") or {}).items():
        i = e["seeds"].index(0) if 0 in e.get("seeds", []) else None
        if i is None:
            continue
        variants[v] = {"seed": 0, **{k: (e.get(k) or [None] * (i + 1))[i] for k in
                                     ("test_accuracy", "test_loss", "final_lr", "wall_s", "commit", "status")}}
    return {"source": source, "device": old.get("device"), "date": old.get("date"), "settings": old.get("settings"),
            "note": old.get("note"), "variants": variants}


# ----------------------------------------------------------------------------------------------- writing


def to_json(record: dict) -> str:
    """The record as JSON text in its own key order (variants none, local, glocal), ± and − as they are."""
    return json.dumps(record, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def write(inputs: Inputs, out: str | Path, name: str = NAME, device: Optional[str] = None, note: str = "") -> dict:
    """Write ``<name>.json``, ``<name>.png`` and ``<name>.md`` to ``out`` from ``inputs``; returns the record."""
    import matplotlib.pyplot as plt

    from glocal_cli import atomic
    from glocal_cli.report import figures
    from glocal_cli.report.paper_scale_page import markdown

    record = build(inputs, device=device, note=note)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    main = [r for r in inputs.runs if r.metrics.get("status") != "not run" and abs(r.lr0 - record["settings"]["lr0"]) < 1e-12]
    fig = figures.seed_band_plot({col: curves(main, col) for col, _, _ in FIGURE_PANELS}, FIGURE_PANELS,
                                 steps=record["settings"].get("steps"), band=FIGURE_BAND)
    try:
        figures.save(fig, out / f"{name}.png")
    finally:
        plt.close(fig)
    atomic.write_text(out / f"{name}.json", to_json(record))
    atomic.write_text(out / f"{name}.md", markdown(record, figure=f"{name}.png"))
    return record


def main(argv=None) -> int:
    """``python -m glocal_cli.report.paper_scale [--records DIR] [--out DIR]``: the record, figure and page.

    ``--keep-earlier OLD.json --earlier-source TEXT`` instead writes ``earlier_seed0.json`` into the
    records folder from a superseded record (:func:`earlier_summary`).
    """
    import argparse

    from glocal_cli import atomic

    ap = argparse.ArgumentParser(description="paper-scale record (JSON), figure (PNG) and page (Markdown) "
                                             "from committed run folders")
    ap.add_argument("--records", default=str(RECORDS), help="folder of run folders (default %(default)s)")
    ap.add_argument("--out", default=str(OUT), help="where <name>.json / .png / .md go (default %(default)s)")
    ap.add_argument("--name", default=NAME, help="file name stem (default %(default)s)")
    ap.add_argument("--device", default=None, help="what ran them (default: the runs' provenance)")
    ap.add_argument("--note", default="", help="a sentence for the page")
    ap.add_argument("--keep-earlier", metavar="OLD_JSON", default=None,
                    help=f"write {EARLIER_FILE} into --records from this superseded record, and nothing else")
    ap.add_argument("--earlier-source", default="", help="where OLD_JSON came from (stated on the page)")
    args = ap.parse_args(argv)
    if args.keep_earlier:
        old = json.loads(Path(args.keep_earlier).read_text())
        atomic.write_text(Path(args.records) / EARLIER_FILE, to_json(earlier_summary(old, args.earlier_source)))
        print(Path(args.records) / EARLIER_FILE)
        return 0
    try:
        record = write(load(args.records), args.out, args.name, device=args.device, note=args.note)
    except ValueError as e:  # nothing committed yet, or runs that cannot be one record
        print(f"error: {e} (nothing written)", file=sys.stderr)
        return 1
    print(summary_line(record))
    print(summary_line(record, "local", "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
