"""The published answer to "does hypergradient tuning add anything on top of the optimizer I use?" (issue 29):
the templates of the ``optimizer_tuning`` record (``glocal report``'s results/records/optimizer_tuning_*.json,
committed as docs/optimizer_tuning_cpu.json). The pages call them as ``P.optimizer_tuning`` through
:mod:`glocal_cli.report.published`; the ± follow :data:`glocal_cli.report.records.CONVENTION`."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

from glocal_cli.report import records
from glocal_cli.report.published_text import load as _load
from glocal_cli.report.published_text import num, pm, prose, table, thousands
from glocal_cli.report.published_text import out as _out
from glocal_cli.report.records import mean_std, paired


def _tuning_pairs(rec: dict) -> List[dict]:
    """Per pair of the optimizer_tuning record: the tuned and alone variants and their paired statistics."""
    out = []
    for p in rec["pairs"]:
        t, a = rec["variants"][p["tuned"]], rec["variants"][p["alone"]]
        d, se, n = paired(records.by_seed(t), records.by_seed(a))
        out.append({"tuned": t, "alone": a, "d": d, "se": se, "n": n, "t": mean_std(t["test_accuracy"]),
                    "a": mean_std(a["test_accuracy"])})
    return out


def _tuned_name(t: dict) -> str:
    lr = f"; lr0 {t['lr0']:g}" if t.get("uses_lr0") else ""
    learned = ", ".join(x.strip() for x in t["learn"].split(","))
    return f"{t['method']} over `{t['optimizer']}` (learns {learned}{lr})"


def _not_complete(p: dict) -> str:
    """Which seeds of a pair ended other than complete, and on which side: ``""`` when none did."""
    bad = {}
    for side in ("alone", "tuned"):
        for seed, status in zip(p[side]["seeds"], p[side]["status"]):
            if status != "complete":
                bad.setdefault((seed, status), []).append(side)
    return "; ".join(f"seed {seed} {status} ({' and '.join(sides)})" for (seed, status), sides in sorted(bad.items()))


def _word(p: dict) -> str:
    """The pair's verdict: better / worse by more than twice its standard error, else no difference."""
    return "better" if p["d"] > 2 * p["se"] else "worse" if p["d"] < -2 * p["se"] else "no difference"


def _times(p: dict) -> str:
    """The tuned run's cost as a multiple of the optimizer alone's ("" when either is missing)."""
    t, a = p["tuned"].get("cost_from_runs"), p["alone"].get("cost_from_runs")
    return f", {t / a:.1f}× the cost" if t and a and math.isfinite(t / a) else ""


def _by_optimizer(pairs: List[dict]) -> Dict[str, Dict[Optional[float], List[dict]]]:
    """``{optimizer: {lr0 or None (no lr0 used): [pairs, local before glocal]}}``, optimizers and lr0 sorted."""
    out: Dict[str, Dict[Optional[float], List[dict]]] = {}
    for p in sorted(pairs, key=lambda p: (p["tuned"]["optimizer"], p["tuned"]["lr0"] if p["tuned"].get("uses_lr0")
                                          else -1.0, _METHODS.index(p["tuned"]["method"])
                                          if p["tuned"]["method"] in _METHODS else len(_METHODS))):
        lr0 = p["tuned"]["lr0"] if p["tuned"].get("uses_lr0") else None
        out.setdefault(p["tuned"]["optimizer"], {}).setdefault(lr0, []).append(p)
    return out


_METHODS = ("local", "glocal", "global")


def _clauses(groups: Dict[str, Dict[Optional[float], List[dict]]]) -> str:
    """``adam` from lr0 0.001: local +0.010 ± 0.003 (better, 4.6× the cost), glocal …; `prodigy`: …``."""
    out = []
    for optimizer, by_lr0 in groups.items():
        parts = [(f" from lr0 {lr0:g}" if lr0 is not None else "") + ": " + ", ".join(
            f"{p['tuned']['method']} {pm(p['d'], p['se'], 3, sign=True)} ({_word(p)}{_times(p)})" for p in ps)
            for lr0, ps in by_lr0.items()]
        out.append(f"`{optimizer}`" + ";".join(parts))
    return "; ".join(out)


def _from_worst_lr0(groups: Dict[str, Dict[Optional[float], List[dict]]]) -> List[str]:
    """Per optimizer tuned from several lr0: each method's tuned run from the worst lr0 (by the optimizer alone's
    mean accuracy) against the optimizer alone at the best lr0, paired by seed. Does tuning spare the grid?"""
    lines = []
    for optimizer, by_lr0 in groups.items():
        alone = {lr0: ps[0] for lr0, ps in by_lr0.items() if lr0 is not None}
        if len(alone) < 2:
            continue
        worst = min(alone, key=lambda lr0: alone[lr0]["a"][0])
        best = max(alone, key=lambda lr0: alone[lr0]["a"][0])
        reached = []
        for p in by_lr0[worst]:
            d, se, n = paired(records.by_seed(p["tuned"]), records.by_seed(alone[best]["alone"]))
            reached.append(f"{p['tuned']['method']} reaches {num(p['t'][0], 3)} ({pm(d, se, 3, sign=True)}, "
                           f"{n} paired seeds)")
        lines.append(f"from `{optimizer}`'s worst lr0 ({worst:g}), " + ", ".join(reached)
                     + f", against {num(alone[best]['a'][0], 3)} for `{optimizer}` alone at its best ({best:g})")
    return lines


def _pairs(rec: dict) -> tuple:
    groups = _by_optimizer(_tuning_pairs(rec))
    return groups, [p for by_lr0 in groups.values() for ps in by_lr0.values() for p in ps]


def _verdict(pairs: List[dict]) -> str:
    """``yes`` (every pair better), ``no`` (none better; ``, and worse on some`` when some are worse), or
    ``it depends on the optimizer``."""
    words = {_word(p) for p in pairs}
    if "better" not in words:
        return "no" + (", and worse on some" if "worse" in words else "")
    return "yes" if words == {"better"} else "it depends on the optimizer"


def tuning_answer(rec: dict) -> str:
    """The README's one-cell answer from the ``optimizer_tuning`` record: the verdict, then each pair's."""
    groups, pairs = _pairs(rec)
    n = max((p["n"] for p in pairs), default=0)
    return (f"{_verdict(pairs)} (tuned − alone, test accuracy, T = {rec['setting']['steps']}, {n} paired seeds): "
            f"{_clauses(groups)}")


def optimizer_tuning(cog, record: str) -> None:
    """The table of the tuned optimizers beside the optimizer alone, and the plain answer under it."""
    rec = _load(cog, record, "optimizer_tuning")
    groups, pairs = _pairs(rec)
    lines = [[_tuned_name(p["tuned"]), pm(p["a"][0], p["a"][1], 3), pm(p["t"][0], p["t"][1], 3),
              pm(p["d"], p["se"], 3, sign=True), str(p["n"]), thousands(p["alone"].get("cost_from_runs")),
              thousands(p["tuned"].get("cost_from_runs"))] for p in pairs]
    head = {"no": "**No: at this setting, hypergradient tuning adds nothing measurable on top of these optimizers.**",
            "no, and worse on some": "**No: at this setting, hypergradient tuning adds nothing measurable on top of "
                                     "these optimizers and takes something away from some.**",
            "yes": "**Yes: at this setting, hypergradient tuning improves on each of these optimizers.**",
            "it depends on the optimizer": "**It depends on the optimizer.**"}[_verdict(pairs)]
    n = max((p["n"] for p in pairs), default=0)
    text = (f"{head} Tuned − alone in test accuracy over {n} paired seeds at T = {rec['setting']['steps']} "
            f"(better / worse: by more than twice the standard error): {_clauses(groups)}.")
    worst = _from_worst_lr0(groups)
    if worst:
        text += " Against the grid search it would spare: " + "; ".join(worst) + "."
    odd = [f"{_tuned_name(p['tuned'])}: {_not_complete(p)}" for p in pairs if _not_complete(p)]
    if odd:
        text += (" Seeds that did not complete are left out of their pair (the n column): " + "; ".join(odd) + ".")
    _out(cog, table(["tuned", "optimizer alone", "tuned", "tuned − alone (paired)", "n", "cost alone", "cost tuned"],
                    lines) + "\n\n" + prose(text))


def tuning_commits(cog, record: str) -> None:
    """The commits the record's runs trained at (their own provenance), each with the variants that ran there."""
    rec = _load(cog, record, "optimizer_tuning")
    at: Dict[str, List[str]] = {}
    for name, v in rec["variants"].items():
        for c in sorted({str(c)[:7] for c in v.get("commit", []) if c}):
            at.setdefault(c, []).append(name)
    _out(cog, prose("The runs trained at " + "; ".join(f"{c} ({', '.join(sorted(ns))})" for c, ns in sorted(at.items()))
                    + " (each run's metrics.json records its commit)."))
