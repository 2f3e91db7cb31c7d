"""The published answer to "does hypergradient tuning add anything on top of the optimizer I use?" (issue 29):
the templates of the ``optimizer_tuning`` record (``glocal report``'s results/records/optimizer_tuning_*.json,
committed as docs/optimizer_tuning_cpu.json). The pages call them as ``P.optimizer_tuning`` through
:mod:`glocal_cli.report.published`; the ± follow :data:`glocal_cli.report.records.CONVENTION`."""

from __future__ import annotations

from typing import Dict, List

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


def _from_worst_lr0(pairs: List[dict]) -> List[str]:
    """Per (method, optimizer) tuned from several lr0: the tuned run from the worst lr0 (by the optimizer alone's
    mean accuracy) against the optimizer alone at the best lr0, paired by seed. Does tuning replace the grid?"""
    groups: Dict[tuple, List[dict]] = {}
    for p in pairs:
        if p["tuned"].get("uses_lr0"):
            groups.setdefault((p["tuned"]["method"], p["tuned"]["optimizer"]), []).append(p)
    lines = []
    for (method, optimizer), ps in sorted(groups.items()):
        if len({p["tuned"]["lr0"] for p in ps}) < 2:
            continue
        worst, best = min(ps, key=lambda p: p["a"][0]), max(ps, key=lambda p: p["a"][0])
        d, se, n = paired(records.by_seed(worst["tuned"]), records.by_seed(best["alone"]))
        lines.append(f"{method} over `{optimizer}` from the worst lr0 ({worst['tuned']['lr0']:g}) reaches "
                     f"{num(worst['t'][0], 3)}, against {num(best['a'][0], 3)} for `{optimizer}` alone at the best "
                     f"({best['alone']['lr0']:g}): {pm(d, se, 3, sign=True)} over {n} paired seeds")
    return lines


def optimizer_tuning(cog, record: str) -> None:
    """The table of the tuned optimizers beside the optimizer alone, and the plain answer under it."""
    rec = _load(cog, record, "optimizer_tuning")
    pairs = _tuning_pairs(rec)
    lines = [[_tuned_name(p["tuned"]), pm(p["a"][0], p["a"][1], 3), pm(p["t"][0], p["t"][1], 3),
              pm(p["d"], p["se"], 3, sign=True), str(p["n"]), thousands(p["alone"].get("cost_from_runs")),
              thousands(p["tuned"].get("cost_from_runs"))] for p in pairs]
    verdict = {name: [p for p in pairs if test(p)] for name, test in (
        ("helps", lambda p: p["d"] > 2 * p["se"]), ("hurts", lambda p: p["d"] < -2 * p["se"]),
        ("same", lambda p: abs(p["d"]) <= 2 * p["se"]))}
    names = lambda ps: "; ".join(f"{_tuned_name(p['tuned'])} {pm(p['d'], p['se'], 3, sign=True)}" for p in ps)  # noqa
    if not verdict["helps"]:
        head = ("**No: at this setting, hypergradient tuning adds nothing measurable on top of these optimizers"
                + (" and takes something away from some.**" if verdict["hurts"] else ".**"))
    elif not verdict["hurts"] and not verdict["same"]:
        head = "**Yes: at this setting, hypergradient tuning improves on each of these optimizers.**"
    else:
        head = "**It depends on the optimizer:**"
    parts = [f"{k} ({names(v)})" for k, v in (("better than the optimizer alone by more than twice the standard error",
                                                verdict["helps"]),
                                               ("worse by more than twice it", verdict["hurts"]),
                                               ("within twice it", verdict["same"])) if v]
    n = max((p["n"] for p in pairs), default=0)
    text = (f"{head} Over {n} paired seeds at T = {rec['setting']['steps']} (tuned − alone, test accuracy): "
            + "; ".join(parts) + ".")
    worst = _from_worst_lr0(pairs)
    if worst:
        text += " Against the grid it would spare: " + "; ".join(worst) + "."
    odd = [f"{_tuned_name(p['tuned'])}: {_not_complete(p)}" for p in pairs if _not_complete(p)]
    if odd:
        text += (" Seeds that did not complete are left out of their pair (the n column): " + "; ".join(odd) + ".")
    _out(cog, table(["tuned", "optimizer alone", "tuned", "tuned − alone (paired)", "n", "cost alone", "cost tuned"],
                    lines) + "\n\n" + prose(text))
