"""Paper-scale results as one JSON record and its table (``docs/paper_scale.json``, ``docs/paper_scale.md``).

A device job (``scripts/gpu/paper.py``) or a long CPU run trains the evidence variants at
the paper's settings; :func:`collect` turns the run folders into one record::

    {"device": "NVIDIA H200", "date": "2026-12-01", "versions": {"jax": ..., "commit": ...},
     "settings": {"steps": 20000, "tau": 50, "sigma": 20, "m": 10, "batch_size": 128,
                  "val_fraction": 0.1, "lr0": 0.001, "dataset": "fashion_mnist"},
     "variants": {"local": {"seeds": [0, 1, ...], "test_accuracy": [...], "final_lr": [...],
                            "status": [...], "wall_s": [...], "dmd_fallbacks": [...]}, ...},
     "paired": [{"a": "glocal", "b": "local", "mean": ..., "se": ..., "n": 5}, ...],
     "other_lr0s": [{"settings": {... "lr0": 0.1}, "variants": {...}, "paired": {...}}]}

The main entry is the initial learning rate 1e-3 (Fig. 2's setting) where present,
else the smallest; the other learning rates follow in ``other_lr0s``. :func:`markdown`
renders the record (paired differences glocal − local with their standard errors).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path
from typing import Dict, List, Optional

from glocal_cli.report.collect import Group, collect_runs, group_runs
from glocal_cli.report.tables import EVIDENCE_ORDER, EVIDENCE_PAIRS, fmt, paired_difference
from glocal_cli.report.tables import markdown as md_table

SETTING_KEYS = ("steps", "tau", "sigma", "m", "batch_size", "val_fraction", "lr0", "dataset")
MAIN_LR0 = 1e-3


def _num(x) -> Optional[float]:
    """A JSON number, or None for a missing / non-finite value."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _variant(g: Group) -> Dict[str, list]:
    runs = sorted(g.runs, key=lambda r: r.seed)
    return {
        "seeds": [r.seed for r in runs],
        "status": [r.status for r in runs],
        "test_accuracy": [_num(r.metrics.get("test_accuracy")) for r in runs],
        "test_loss": [_num(r.metrics.get("test_loss")) for r in runs],
        "final_lr": [_num((r.metrics.get("hyperparams") or {}).get("lr")) for r in runs],
        "wall_s": [_num(r.metrics.get("wall_s")) for r in runs],
        "window_s": [_num(r.metrics.get("window_s")) for r in runs],
        "dmd_fallbacks": [r.metrics.get("dmd_fallbacks") for r in runs],
        "outer_steps": [r.metrics.get("outer_steps") for r in runs],
        "seeds_in_program": [r.metrics.get("seeds_in_program") for r in runs],
        "commit": [(r.metrics.get("provenance") or {}).get("commit") for r in runs],
    }


def _entry(groups: List[Group]) -> dict:
    by = {g.method: g for g in groups}
    order = [v for v in EVIDENCE_ORDER if v in by] + sorted(set(by) - set(EVIDENCE_ORDER))
    cfg = groups[0].runs[0].config
    paired = []
    for a, b in EVIDENCE_PAIRS:
        if a in by and b in by:
            d, se, n = paired_difference(by[a], by[b])
            paired.append({"a": a, "b": b, "mean": _num(d), "se": _num(se), "n": n})
    return {"settings": {k: cfg.get(k) for k in SETTING_KEYS},
            "variants": {v: _variant(by[v]) for v in order}, "paired": paired}


def collect(runs_dir: str | Path, device: Optional[str] = None, date: Optional[str] = None,
            note: str = "") -> dict:
    """The record of every run under ``runs_dir`` (grouped by learning rate and variant).

    ``device`` / ``date``: what ran them (default: the first run's provenance and today).
    Runs of different T, τ, σ, m, batch size or validation fraction are refused (one
    record describes one setting). Raises ``ValueError`` when there is no run.
    """
    runs, _ = collect_runs(runs_dir)
    runs = [r for r in runs if r.status != "not run"]
    if not runs:
        raise ValueError(f"no finished runs under {runs_dir}")
    shapes = {tuple(r.config.get(k) for k in SETTING_KEYS[:6]) for r in runs}
    if len(shapes) > 1:
        raise ValueError(f"runs of different settings under {runs_dir}: {sorted(shapes)}")
    by_lr: Dict[float, List[Group]] = {}
    for g in group_runs(runs).values():
        by_lr.setdefault(g.lr0, []).append(g)
    lrs = sorted(by_lr, key=lambda lr: (abs(lr - MAIN_LR0) > 1e-12, lr))
    prov = next((r.metrics["provenance"] for r in runs if r.metrics.get("provenance")), {})
    record = {
        "device": device or prov.get("device_kind") or runs[0].metrics.get("device"),
        "date": date or datetime.date.today().isoformat(),
        "versions": prov,
        "note": note,
        **_entry(by_lr[lrs[0]]),
        "other_lr0s": [_entry(by_lr[lr]) for lr in lrs[1:]],
    }
    return record


def _stat(values) -> str:
    xs = [x for x in values if x is not None]
    if not xs:
        return "–"
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return f"{mean:.4f} (1 seed)"
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
    return f"{mean:.4f} ± {std:.4f} (n={len(xs)})"


def _entry_markdown(entry: dict) -> str:
    s = entry["settings"]
    head = (f"**{s.get('dataset')}, lr0 {s.get('lr0')}**: T = {s.get('steps')}, τ = {s.get('tau')}, σ = {s.get('sigma')}, "
            f"m = {s.get('m')}, batch {s.get('batch_size')}, validation fraction {s.get('val_fraction')}\n\n")
    rows = []
    for name, v in entry["variants"].items():
        fb = [x for x in v["dmd_fallbacks"] if x is not None]
        win = [x for x in v["outer_steps"] if x is not None]
        rows.append([name, _stat(v["test_accuracy"]), _stat(v["final_lr"]),
                     f"{sum(fb)} / {sum(win)}" if name.startswith("glocal") else "–",
                     ", ".join(str(x) for x in v["status"]),
                     fmt(sum(x for x in v["wall_s"] if x is not None) / max(1, len(v["seeds"])), 0)])
    text = head + md_table(["variant", "test accuracy (mean ± std over seeds)", "final lr",
                            "windows not from the estimator", "status", "wall s per seed"], rows)
    prow = []
    for p in entry["paired"]:
        d, se, n = p["mean"], p["se"], p["n"]
        ratio = d / se if d is not None and se else math.nan
        prow.append([f"{p['a']} − {p['b']}", f"{d:+.5f}" if d is not None else "–",
                     fmt(se if se is not None else math.nan, 5), str(n), fmt(ratio, 2)])
    if prow:
        text += "\n" + md_table(["paired difference (same seeds)", "mean", "standard error", "n pairs", "mean / SE"],
                                prow)
    return text


def markdown(record: dict) -> str:
    """The record as Markdown: a header naming the device, date and versions, then a table per learning rate."""
    v = record.get("versions") or {}
    s = record.get("settings") or {}
    lines = [f"# {s.get('dataset')} at T = {s.get('steps')}: {', '.join(record.get('variants', {}))} "
             f"({record.get('device')})", "", f"Device: {record.get('device')}; date: {record.get('date')}; jax {v.get('jax')}, jaxlib {v.get('jaxlib')}, "
             f"flax {v.get('flax')}, optax {v.get('optax')}; commit {str(v.get('commit'))[:12]}"
             + (" (dirty)" if v.get("dirty") else "") + ".", ""]
    if record.get("note"):
        lines += [record["note"], ""]
    lines.append(_entry_markdown(record))
    for other in record.get("other_lr0s", []):
        lines += ["", _entry_markdown(other)]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m glocal_cli.report.paper_scale RUNS OUT.json [--device D] [--note N]``: the record and OUT.md."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description="paper-scale record (JSON) and table (Markdown) from run folders")
    ap.add_argument("runs", help="folder of run folders (searched recursively for metrics.json)")
    ap.add_argument("out", help="the JSON file to write; the table goes beside it as .md")
    ap.add_argument("--device", default=None, help="what ran them (default: the runs' provenance)")
    ap.add_argument("--note", default="", help="a sentence on how they were run")
    args = ap.parse_args(argv)
    record = collect(args.runs, device=args.device, note=args.note)
    out = Path(args.out)
    out.write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record) + "\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
