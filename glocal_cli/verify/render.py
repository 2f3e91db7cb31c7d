"""``verify.md`` and ``verify.png``: the report of a :class:`~glocal_cli.verify.summary.VerifyResult`."""

from __future__ import annotations

from typing import Dict, List


from glocal_cli.verify.settings import ORDER_SEED
from glocal_cli.verify.references import compare
from glocal_cli.verify.summary import VerifyResult, fmt




def settings_text(s: Dict) -> str:
    """One paragraph stating the protocol."""
    model = f"MLP 784-{s['mlp_hidden']}-10" if s["model"] == "mlp" else "LeNet"
    tol = "per estimator (glocal_cli.estimators defaults)" if s["dmd_tol"] is None else f"{s['dmd_tol']:g}"
    return (f"Protocol `{s['profile']}`: {model} on {s['dataset']}, SGD with learnable lr, momentum and weight decay "
            f"(outer Adam lr {s['outer_lr']:g}, the glocal run's φ trajectory), T = {s['steps']}, τ = {s['tau']}, "
            f"σ = {s['sigma']}, m = {s['m']}, batch {s['batch_size']}, validation fraction {s['val_fraction']:g}, "
            f"lr0 ∈ {list(s['lr0s'])}, seeds {list(s['seeds'])}, windows {list(s['checked_windows'])} "
            f"per seed; DMD tol {tol}, rank_rtol {s['dmd_rank_rtol']:g}. Quadratic: p = 2, q = 2, "
            f"T = {s['quad_steps']}, τ = {s['quad_tau']}, seeds {list(s['quad_seeds'])}, windows {list(s['quad_windows'])}. "
            "True global hypergradient of a window (`truth`): from the window's start, φ fixed, tangents zero there, "
            "trained to T with the run's own minibatch order. Expected global hypergradient (`expected_global`): the "
            f"mean of the same h_T over K = {s['expected_orders']} other minibatch orders from the same start (batch "
            f"seeds {ORDER_SEED} .. {ORDER_SEED + s['expected_orders'] - 1}; the quadratic has no minibatches, so "
            "there it is the truth). Truncated kτ look-ahead: the truth's run stopped after k windows.")


def _stats_table(stats: Dict[str, Dict]) -> List[str]:
    lines = ["| estimator | mean cosine | median rel. error | sign agreement (per component) | closer than local "
             "| fallbacks (reasons) | cost: tangent steps | cost: s / window |",
             "|---|---:|---:|---|---:|---|---:|---:|"]
    for name, v in stats.items():
        reasons = ", ".join(f"{k} {n}" for k, n in v["fallback_reasons"].items())
        per = ", ".join(f"{x:.2f}" for x in v["sign_agreement_per_component"])
        lines.append(f"| {name} | {fmt(v['cosine_mean'])} | {fmt(v['rel_err_median'])} | "
                     f"{v['sign_agreement']:.2f} ({per}) | {v['closer_than_local']}/{v['n']} | "
                     f"{v['fallbacks']}{' (' + reasons + ')' if reasons else ''} | {v['cost_tangent_steps']} | "
                     f"{fmt(v['cost_seconds_mean'])} |")
    return lines + [""]


def _selection_table(sel: Dict[str, Dict]) -> List[str]:
    lines = ["| glocal's selection | windows | median min \\|λ − 1\\| | estimator | truth: cosine | truth: median rel. "
             "error | truth: signs | expected: cosine | expected: median rel. error | expected: signs |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name_sel, g in sel.items():
        for name, v in g["truth"].items():
            e = g["expected_global"].get(name)
            ecol = (f"{fmt(e['cosine_mean'])} | {fmt(e['rel_err_median'])} | {e['sign_agreement']:.2f}"
                    if e else "– | – | –")
            lines.append(f"| {name_sel} | {g['windows']} | {fmt(g['min_dist_to_1_median'])} | {name} | "
                         f"{fmt(v['cosine_mean'])} | {fmt(v['rel_err_median'])} | {v['sign_agreement']:.2f} | {ecol} |")
    return lines + [""]


def markdown(res: VerifyResult) -> str:
    """``verify.md``: settings, per problem one table per reference and glocal by mode selection, the noise
    study and the conclusions."""
    s = res.settings
    lines = ["# glocal verify: estimators vs the true and the expected global hypergradient", "", settings_text(s), "",
             f"Device: {res.device}. Wall time: {res.seconds.get('total', float('nan')):.0f} s "
             f"({', '.join(f'{k} {v:.0f} s' for k, v in res.seconds.items() if k != 'total')})."
             + ("" if res.complete else " **Partial results: the run has not finished.**"), ""]
    for problem, sm in res.summary.items():
        eg = sm["expected_global"]
        lines += [f"## {problem}", "", f"{sm['windows']} windows over seeds {sm['seeds']}"
                  + (f"; {sm['non_finite_windows']} windows non-finite (left out)" if sm["non_finite_windows"] else "")
                  + ".", "", "### Against the single-order truth (`truth`)", ""]
        lines += _stats_table(sm["estimators"])
        lines += ["### Against the expected global hypergradient (`expected_global`, "
                  + (f"K = {eg['orders']} minibatch orders)" if eg["orders"] else "no minibatches: the truth)"), ""]
        if eg["orders"]:
            lines += [f"{eg['windows']} windows"
                      + (f" ({eg['non_finite_windows']} left out: an order diverged)" if eg["non_finite_windows"] else "")
                      + f". The single-order truth against this reference: median relative deviation "
                      f"{fmt(eg['truth_rel_dev_median'])}, mean cosine {fmt(eg['truth_cosine_mean'])}, sign "
                      f"agreement {fmt(eg['truth_sign_agreement'], 2)}; spread of h_T across the K orders (‖std‖ / "
                      f"‖mean‖, median over windows) {fmt(eg['order_rel_std_median'])}.", ""]
        else:
            lines += ["No minibatches: the expected global hypergradient is the truth.", ""]
        lines += _stats_table(sm["estimators_vs_expected_global"]) if eg["orders"] and sm["estimators_vs_expected_global"] else []
        if sm["glocal_by_selection"]:
            lines += ["### glocal by mode selection, and its if_empty alternatives on the same windows", "",
                      "`tol`: DMD eigenvalues within dmd_tol of 1 were summed (every if_empty gives the same "
                      "estimate there); `nearest`: none was within dmd_tol and the default (`if_empty = nearest`) "
                      "summed the eigenvalue(s) nearest 1; `glocal(if_empty=zero)` returns the paper's literal empty "
                      "sum 0 there, `glocal(if_empty=local)` falls back to h_τ.", ""]
            lines += _selection_table(sm["glocal_by_selection"])
    if res.noise:
        lines += ["## Noise of h_t against batch size", "",
                  f"One window (window {res.noise[0]['window']} of seed {s['seeds'][0]}'s run) from the same start "
                  f"state, {res.noise[0]['orders']} minibatch orders. rel. std = ‖std over orders‖ / ‖mean over "
                  "orders‖ of h_t; lag-1 = autocorrelation within the window of the deviations from the "
                  "across-order mean and of the increments h_t − h_{t−1}.", "",
                  "| setting | batch | rel. std at τ | rel. std (window mean) | rel. std per component at τ | "
                  "sign agreement at τ | lag-1 deviation | lag-1 increment |",
                  "|---|---:|---:|---:|---|---:|---:|---:|"]
        for n in res.noise:
            per = ", ".join(fmt(x, 2) for x in n["rel_std_component_end"])
            lines.append(f"| {n['problem']} | {n['batch_size']} | {fmt(n['rel_std_end'])} | "
                         f"{fmt(n['rel_std_mean'])} | {per} | {n['sign_agree_end']:.2f} | "
                         f"{fmt(n['lag1_deviation'])} | {fmt(n['lag1_increment'])} |")
        lines.append("")
    lines += ["## Conclusions (computed from the tables)", ""] + [f"* {c}" for c in res.conclusions()]
    lines += ["", "## Per window", "", "| problem | seed | window | steps left | estimator | cosine | rel. error "
              "| signs | expected: cosine | expected: rel. error | fallback / selection |",
              "|---|---:|---:|---:|---|---:|---:|---|---:|---:|---|"]
    for r in res.rows:
        for name, v in r.get("estimates", {}).items():
            e = v.get("vs_expected_global") or {}
            tag = v["reason"] if v["fallback"] else v.get("selection", "")
            lines.append(f"| {r['problem']} | {r['seed']} | {r['window']} | {r['steps_left']} | {name} | "
                         f"{fmt(v['cosine'])} | {fmt(v['rel_err'])} | {v['sign_agree']} | "
                         f"{fmt(e.get('cosine'))} | {fmt(e.get('rel_err'))} | {tag} |")
    return "\n".join(lines) + "\n"


def figure(res: VerifyResult):
    """A matplotlib figure: per problem (columns), the relative error of every estimator over the windows
    against the single-order truth (top row) and the expected global hypergradient (bottom row), log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [p for p, sm in res.summary.items() if sm["estimators"]]
    ncol = max(1, len(problems))
    fig, axes = plt.subplots(2, ncol, figsize=(5 * ncol, 8), squeeze=False)
    for col, problem in enumerate(problems):
        rs = [r for r in res.rows if r["problem"] == problem and r["finite"]]
        names = list(res.summary[problem]["estimators"])
        for row, (ref, label) in enumerate((("truth", "single-order truth"), ("expected_global", "expected global"))):
            ax = axes[row][col]
            use = [r for r in rs if ref == "truth" or r.get("expected_global_finite")]
            if not use:
                ax.set_axis_off()
                continue
            data = [[max(compare(r["estimates"][n]["value"], r[ref])["rel_err"], 1e-16) for r in use] for n in names]
            ax.boxplot(data)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=60, fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel(f"‖estimate − ref‖ / ‖ref‖ ({label})", fontsize=8)
            ax.set_title(f"{problem} vs {label}", fontsize=9)
    fig.tight_layout()
    return fig
