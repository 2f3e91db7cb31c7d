"""Per-estimator statistics over the checked windows, and the conclusions they support."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence

import numpy as np

from glocal_cli.verify.settings import IF_EMPTY_VARIANTS, REFERENCES, if_empty_name, lookahead_name
from glocal_cli.verify.references import compare, sign_agreement


def _finite_median(xs) -> float:
    xs = np.asarray(xs, np.float64)
    xs = xs[np.isfinite(xs)]
    return float(np.median(xs)) if xs.size else float("nan")


def _finite_mean(xs) -> float:
    xs = np.asarray(xs, np.float64)
    xs = xs[np.isfinite(xs)]
    return float(xs.mean()) if xs.size else float("nan")


def estimator_stats(rows: List[Dict], name: str, ref: str = "truth") -> Dict:
    """Statistics of estimator ``name`` over ``rows`` (each with ``estimates`` and the reference ``row[ref]``).

    ``ref``: ``"truth"`` (the single-order true global hypergradient) or ``"expected_global"``.
    Returns ``{"n", "cosine_mean", "cosine_median", "rel_err_median", "rel_err_mean",
    "sign_agreement", "sign_agreement_per_component", "fallbacks", "fallback_reasons",
    "closer_than_local" (windows with a smaller relative error than local's, same
    reference), "cost_tangent_steps", "cost_seconds_mean"}``.
    """
    if ref not in REFERENCES:
        raise ValueError(f"ref must be one of {', '.join(REFERENCES)}, got {ref!r}")
    v = [r["estimates"][name] for r in rows]
    values = np.array([x["value"] for x in v], np.float64)
    refs = np.array([r[ref] for r in rows], np.float64)
    cmp = [compare(e, t) for e, t in zip(values, refs)]
    rel = np.array([c["rel_err"] for c in cmp])
    loc = np.array([compare(r["estimates"]["local"]["value"], r[ref])["rel_err"] for r in rows])
    signs = sign_agreement(values, refs)
    reasons: Dict[str, int] = {}
    for x in v:
        if x["fallback"]:
            reasons[x["reason"]] = reasons.get(x["reason"], 0) + 1
    return {
        "n": len(v),
        "cosine_mean": float(np.nanmean([c["cosine"] for c in cmp])),
        "cosine_median": float(np.nanmedian([c["cosine"] for c in cmp])),
        "rel_err_median": float(np.nanmedian(rel)),
        "rel_err_mean": float(np.nanmean(rel)),
        "sign_agreement": signs["overall"],
        "sign_agreement_per_component": signs["per_component"],
        "fallbacks": int(sum(x["fallback"] for x in v)),
        "fallback_reasons": reasons,
        "closer_than_local": int(np.sum(rel < loc)),
        "cost_tangent_steps": int(v[0]["cost_tangent_steps"]),
        "cost_seconds_mean": _finite_mean([x["cost_seconds"] for x in v]),
    }


def _table(rows: List[Dict], names: Sequence[str], ref: str) -> Dict[str, Dict]:
    return {name: estimator_stats(rows, name, ref) for name in names} if rows else {}


def beats_local(stats: Dict[str, Dict]) -> Dict[str, List[str]]:
    """The estimators better than ``local`` in a table of :func:`estimator_stats`, by each criterion.

    ``{"rel_err_median": lower median relative error, "cosine_mean": higher mean
    cosine, "sign_agreement": higher sign agreement}`` (names, table order).
    """
    loc = stats.get("local")
    if not loc:
        return {"rel_err_median": [], "cosine_mean": [], "sign_agreement": []}
    others = [n for n in stats if n != "local"]
    return {"rel_err_median": [n for n in others if stats[n]["rel_err_median"] < loc["rel_err_median"]],
            "cosine_mean": [n for n in others if stats[n]["cosine_mean"] > loc["cosine_mean"]],
            "sign_agreement": [n for n in others if stats[n]["sign_agreement"] > loc["sign_agreement"]]}


def by_selection(rows: List[Dict]) -> Dict[str, Dict]:
    """``glocal``'s windows split by how they selected DMD modes, with the ``if_empty`` variants on the same windows.

    ``{selection: {"windows", "min_dist_to_1_median" (min |λ - 1| of glocal's DMD),
    "truth": {name: stats}, "expected_global": {name: stats}}}`` for selection ``tol``
    (eigenvalues within dmd_tol of 1; every if_empty gives the same estimate there) and
    ``nearest`` (none within tol: the default summed the nearest, ``zero`` gives 0,
    ``local`` falls back to ``h_τ``), over ``glocal``, its if_empty variants, ``mean``
    and ``local`` (those present). A window whose glocal fell back is counted under
    ``fallback``. Statistics against the expected global use the windows where it is finite.
    """
    if not rows or "glocal" not in rows[0]["estimates"]:
        return {}
    names = [n for n in ["glocal"] + [if_empty_name(x) for x in IF_EMPTY_VARIANTS] + ["mean", "local"]
             if n in rows[0]["estimates"]]
    out = {}
    for sel in ("tol", "nearest", "fallback"):
        rs = [r for r in rows if (r["estimates"]["glocal"]["selection"] or "fallback") == sel]
        if not rs and sel == "fallback":
            continue
        ex = [r for r in rs if r.get("expected_global_finite")]
        out[sel] = {"windows": len(rs), "windows_expected_global": len(ex),
                    "min_dist_to_1_median": float(np.nanmedian([r["estimates"]["glocal"].get("min_dist_to_1", np.nan)
                                                                for r in rs])) if rs else float("nan"),
                    "truth": _table(rs, names, "truth"), "expected_global": _table(ex, names, "expected_global")}
    return out


def summarize(rows: List[Dict]) -> Dict[str, Dict]:
    """Per problem: every estimator against both references, the references' spread, and glocal by mode selection.

    ``{problem: {"estimators": {name: stats vs the single-order truth}
    (:func:`estimator_stats`), "estimators_vs_expected_global": {name: stats vs the
    expected global}, "windows", "non_finite_windows", "seeds", "expected_global":
    {"orders", "windows", "non_finite_windows", "truth_rel_dev_median" (median ‖truth −
    expected‖ / ‖expected‖), "truth_cosine_mean", "truth_sign_agreement",
    "order_rel_std_median"}, "beats_local": {"truth": ..., "expected_global": ...}
    (:func:`beats_local`), "glocal_by_selection": (:func:`by_selection`)}}``.
    """
    out = {}
    for problem in dict.fromkeys(r["problem"] for r in rows):
        rs = [r for r in rows if r["problem"] == problem and r["finite"]]
        failed = sum(1 for r in rows if r["problem"] == problem and not r["finite"])
        ex = [r for r in rs if r.get("expected_global_finite")]
        names = list(rs[0]["estimates"]) if rs else []
        est, est_ex = _table(rs, names, "truth"), _table(ex, names, "expected_global")
        dev = [r["truth_vs_expected_global"] for r in ex]
        orders = [r.get("expected_global_orders") for r in rs]
        out[problem] = {
            "estimators": est, "estimators_vs_expected_global": est_ex,
            "windows": len(rs), "non_finite_windows": failed, "seeds": sorted({r["seed"] for r in rs}),
            "expected_global": {
                "orders": len(orders[0]) if orders and orders[0] is not None else 0,
                "windows": len(ex), "non_finite_windows": len(rs) - len(ex),
                "truth_rel_dev_median": float(np.nanmedian([d["rel_err"] for d in dev])) if dev else float("nan"),
                "truth_cosine_mean": float(np.nanmean([d["cosine"] for d in dev])) if dev else float("nan"),
                "truth_sign_agreement": (sign_agreement(np.array([r["truth"] for r in ex]),
                                                        np.array([r["expected_global"] for r in ex]))["overall"]
                                         if ex else float("nan")),
                "order_rel_std_median": _finite_median([r.get("expected_global_order_rel_std", np.nan) for r in ex]),
            },
            "beats_local": {"truth": beats_local(est), "expected_global": beats_local(est_ex)},
            "glocal_by_selection": by_selection(rs),
        }
    return out


def _closest_sentence(est: Dict[str, Dict], ref_words: str) -> str:
    best = min(est, key=lambda e: est[e]["rel_err_median"])
    g, loc = est.get("glocal"), est["local"]
    verdict = ""
    if g is not None:
        closer = g["rel_err_median"] < loc["rel_err_median"]
        verdict = (f" glocal is {'closer to' if closer else 'NOT closer to'} {ref_words} than "
                   f"local (median relative error {g['rel_err_median']:.3g} vs {loc['rel_err_median']:.3g}; "
                   f"closer in {g['closer_than_local']}/{g['n']} windows; {g['fallbacks']} fallbacks).")
    return (f"the closest estimator is {best} (median relative error "
            f"{est[best]['rel_err_median']:.3g}, cosine {est[best]['cosine_mean']:.3f}).{verdict}")


def conclusions(summary: Dict) -> List[str]:
    """Plain sentences per problem, from the numbers: the closest estimator and glocal vs local against each
    reference, which estimators beat local against which, and glocal's if_empty alternatives."""
    lines = []
    for problem, sm in summary.items():
        est = sm["estimators"]
        if not est:
            lines.append(f"{problem}: no finite window.")
            continue
        lines.append(f"{problem}: {_closest_sentence(est, 'the true global hypergradient')}")
        eg, ex = sm["expected_global"], sm["estimators_vs_expected_global"]
        if eg["orders"] and ex:
            lines.append(f"{problem}, against the expected global hypergradient (mean over {eg['orders']} minibatch "
                         f"orders; the single-order truth is {fmt(eg['truth_rel_dev_median'])} off it, median): "
                         f"{_closest_sentence(ex, 'the expected global hypergradient')}")
        bl = sm["beats_local"]
        parts = []
        for ref, words in (("truth", "the single-order truth"), ("expected_global", "the expected global")):
            if ref == "expected_global" and not (eg["orders"] and ex):
                continue
            b = bl[ref]
            parts.append(f"against {words}: lower median relative error {', '.join(b['rel_err_median']) or 'none'}; "
                         f"higher mean cosine {', '.join(b['cosine_mean']) or 'none'}; higher sign agreement "
                         f"{', '.join(b['sign_agreement']) or 'none'}")
        lines.append(f"{problem}: better than local " + "; ".join(parts) + ".")
        sel = sm["glocal_by_selection"]
        if sel:
            near = sel.get("nearest", {})
            counts = ", ".join(f"{k} {v['windows']}" for k, v in sel.items())
            text = f"{problem}: glocal's mode selection per window: {counts}"
            ref = "expected_global" if near.get("expected_global") else "truth"
            if near.get(ref):
                t = near[ref]
                vals = ", ".join(f"{n} {fmt(t[n]['rel_err_median'])}" for n in t)
                text += (f"; on the {near['windows']} windows with none within dmd_tol (median min |λ − 1| "
                         f"{fmt(near['min_dist_to_1_median'])}), median relative error against the "
                         f"{'expected global' if ref == 'expected_global' else 'single-order truth'}: {vals}")
            lines.append(text + ".")
    return lines


@dataclasses.dataclass
class VerifyResult:
    """Everything ``glocal verify`` measured (JSON-ready via :meth:`to_json`)."""

    settings: Dict
    rows: List[Dict]
    summary: Dict
    noise: List[Dict]
    seconds: Dict
    device: str
    complete: bool = True

    def conclusions(self) -> List[str]:
        return conclusions(self.summary)

    def estimator_names(self) -> List[str]:
        """The settings' estimators, glocal's if_empty variants (when glocal runs) and the look-aheads."""
        est = list(self.settings["estimators"])
        variants = [if_empty_name(x) for x in IF_EMPTY_VARIANTS] if "glocal" in est else []
        return est + variants + [lookahead_name(k) for k in self.settings["lookaheads"]]

    def to_json(self) -> Dict:
        return {"settings": self.settings, "device": self.device, "complete": self.complete, "seconds": self.seconds,
                "estimators": self.estimator_names(), "references": list(REFERENCES),
                "summary": self.summary, "conclusions": self.conclusions(), "noise": self.noise, "rows": self.rows}

def fmt(x, nd=3):
    return "nan" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{nd}g}"
