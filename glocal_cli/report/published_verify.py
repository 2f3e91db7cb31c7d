"""The generated blocks of docs/verify_cpu.md (and the README's verify sentences): ``glocal verify``'s record
as tables of estimators against the true and the expected global hypergradient."""

from __future__ import annotations

from pathlib import Path
from typing import List

from glocal_cli.report import records
from glocal_cli.report.published_text import g3, out, table
from glocal_cli.windows import KINDS


def _verify_closer(rec: dict, problem: str, ref: str) -> List[str]:
    """Window-based estimators (no look-ahead) with a lower median relative error than local against ``ref``."""
    return [n for n in rec["summary"][problem]["beats_local"][ref]["rel_err_median"] if not n.startswith("truncated")]


def _verify_key(ref: str) -> str:
    return "estimators" if ref == "truth" else "estimators_vs_expected_global"


def _verify_words(rec: dict) -> dict:
    """The verify numbers the README quotes, from verify_cpu.json's summary."""
    s = rec["summary"]
    low, high = (f"mlp/{rec['settings']['dataset']}/lr0={lr:g}" for lr in (0.001, 0.1))
    est = lambda p, ref, name: s[p][_verify_key(ref)][name]  # noqa: E731
    positive = [n for n, v in s[high]["estimators_vs_expected_global"].items()
                if not n.startswith("truncated") and v["cosine_mean"] > 0]
    quad = sorted({n for ref in ("truth", "expected_global") for n in _verify_closer(rec, "quadratic", ref)})
    closer_high = [n for n in _verify_closer(rec, high, "truth") if n in _verify_closer(rec, high, "expected_global")]
    return {
        "low": low, "high": high, "est": est, "positive": positive, "quadratic": quad, "closer_high": closer_high,
        "closer_low": sorted(set(_verify_closer(rec, low, "truth")) | set(_verify_closer(rec, low, "expected_global"))),
        "steps": rec["settings"]["steps"],
    }


def _closer_sentence(rec: dict, w: dict) -> str:
    """Which window-based estimators came closer than local at lr0 0.1 (to both references), with their medians."""
    parts = []
    for n in w["closer_high"]:
        t, e = w["est"](w["high"], "truth", n), w["est"](w["high"], "expected_global", n)
        lt, le = w["est"](w["high"], "truth", "local"), w["est"](w["high"], "expected_global", "local")
        parts.append(f"{n} (median relative error {g3(t['rel_err_median'])} against local's "
                     f"{g3(lt['rel_err_median'])} to the truth, {g3(e['rel_err_median'])} against "
                     f"{g3(le['rel_err_median'])} to the expected global; {t['fallbacks']} of {t['n']} windows fell "
                     "back to local)")
    return " and ".join(parts)


def _verify_order(rec: dict, stats: dict) -> list:
    """``stats``' items in the record's estimator order (its JSON keys are sorted), the if_empty variants after
    glocal as ``glocal verify`` prints its selection table."""
    order = list(rec.get("estimators") or [])
    key = {n: (0 if n == "glocal" else 1 if n.startswith("glocal(") else 2, order.index(n) if n in order else len(order))
           for n in stats}
    if "glocal-strict" in stats:  # the estimator tables: the record's order as it stands
        key = {n: (order.index(n) if n in order else len(order),) for n in stats}
    return sorted(stats.items(), key=lambda kv: key[kv[0]])


def verify_table(cog, verify: str, problem: str, ref: str = "truth") -> None:
    """One estimator table of ``glocal verify``'s record (``ref``: ``truth`` or ``expected_global``)."""
    rec = records.load(Path(cog.inFile).parent / verify)
    stats = rec["summary"][problem][_verify_key(ref)]
    lines = []
    for name, v in _verify_order(rec, stats):
        reasons = ", ".join(f"{k} {n}" for k, n in v["fallback_reasons"].items())
        per = ", ".join(f"{x:.2f}" for x in v["sign_agreement_per_component"])
        lines.append([name, g3(v["cosine_mean"]), g3(v["rel_err_median"]), f"{v['sign_agreement']:.2f} ({per})",
                      f"{v['closer_than_local']}/{v['n']}", f"{v['fallbacks']}" + (f" ({reasons})" if reasons else ""),
                      str(v["cost_tangent_steps"]), g3(v["cost_seconds_mean"])])
    out(cog, table(["estimator", "mean cosine", "median rel. error", "sign agreement (per component)",
                     "closer than local", "fallbacks (reasons)", "cost: tangent steps", "cost: s / window"], lines,
                    ["---", "---:", "---:", "---", "---:", "---", "---:", "---:"]))


def verify_selection_table(cog, verify: str, problem: str) -> None:
    """glocal by mode selection (``tol`` / ``nearest``) and its if_empty alternatives on the same windows."""
    rec = records.load(Path(cog.inFile).parent / verify)
    lines = []
    sels = rec["summary"][problem]["glocal_by_selection"]
    for sel in sorted(sels, key=lambda k: KINDS.index(k) if k in KINDS else len(KINDS)):
        g = sels[sel]
        for name, v in _verify_order(rec, g["truth"]):
            e = g["expected_global"].get(name)
            lines.append([sel, str(g["windows"]), g3(g["min_dist_to_1_median"]), name, g3(v["cosine_mean"]),
                          g3(v["rel_err_median"]), f"{v['sign_agreement']:.2f}"]
                         + ([g3(e["cosine_mean"]), g3(e["rel_err_median"]), f"{e['sign_agreement']:.2f}"] if e
                            else ["–"] * 3))
    out(cog, table(["glocal's selection", "windows", "median min \\|λ − 1\\|", "estimator", "truth: cosine",
                     "truth: median rel. error", "truth: signs", "expected: cosine", "expected: median rel. error",
                     "expected: signs"], lines, ["---", "---:", "---:", "---"] + ["---:"] * 6))


def verify_beats_local(cog, verify: str) -> None:
    """Which estimators beat local, per classifier setting and reference (``summary[setting].beats_local``)."""
    rec = records.load(Path(cog.inFile).parent / verify)
    lines = []
    for problem, sm in rec["summary"].items():
        if not problem.startswith("mlp/"):
            continue
        lr = problem.rsplit("=", 1)[1]
        for ref, words in (("truth", "truth"), ("expected_global", "expected global")):
            b, stats = sm["beats_local"][ref], sm[_verify_key(ref)]
            local = stats["local"]

            def names(metric: str, fmt) -> str:
                out = [f"{n} ({fmt(stats[n][metric])} vs {fmt(local[metric])})" for n in b[metric]]
                return ", ".join(out) or "none"

            lines.append([f"lr0 {lr}", words, names("rel_err_median", g3), names("cosine_mean", lambda x: f"{x:.6g}"),
                          names("sign_agreement", lambda x: f"{x:.2f}")])
    out(cog, table(["setting", "reference", "lower median rel. error", "higher mean cosine", "higher sign agreement"],
                    lines))
