"""The measured numbers of docs/sgld.md and docs/method.md: templates of the records ``scripts/docs_records.py``
writes (``lt_rerun``: the long-tailed Fashion-MNIST / 50 cell of Table 3b re-run, sgld's z reset against
persistent among its variants; ``collapse_probe``: the collapse detection's two runs; ``near_one``: the DMD
eigenvalues behind ``dmd_tol`` = 0.1, from ``dmd.npz`` files beside the record). The pages call them as
``P.<name>`` through :mod:`glocal_cli.report.published`; every ± follows
:data:`glocal_cli.report.records.CONVENTION` (README.md states it once)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Sequence

import numpy as np

from glocal_cli.report import records
from glocal_cli.report.published_text import load as _load
from glocal_cli.report.published_text import num, pm, prose, table, windows
from glocal_cli.report.published_text import out as _out
from glocal_cli.report.records import mean_std, paired
from glocal_cli.windows import describe


def _commit(v: dict) -> str:
    """The runs' commit(s), short, with ``+dirty`` when a run's tree was not clean."""
    commits = sorted({(c or "unknown")[:7] + ("+dirty" if d else "") for c, d in zip(v.get("commit", []),
                                                                                      v.get("dirty", []))})
    return ", ".join(commits) or "unknown"


def _seeds(v: dict) -> str:
    s = v["seeds"]
    return f"{s[0]}–{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 2 else ", ".join(map(str, s))


# --- lt_rerun: Table 3b's Fashion-MNIST / 50 cell, re-run -------------------------------------------------------

LT_ORDER = ("none", "local", "glocal", "glocal-strict", "sgld")
LT_LABEL = {"none": "none (plain CE)", "local": "local", "glocal": "glocal (the paper's estimator)",
            "glocal-strict": "glocal-strict (the earlier rules)", "sgld": "sgld (z reset)",
            "sgld-persist-z": "sgld, persistent z"}


def lt_rerun_table(cog, record: str) -> None:
    """docs/sgld.md: every variant of the re-run cell, per seed, mean ± std, minus local (paired), windows."""
    rec = _load(cog, record, "lt_rerun")
    v = rec["variants"]
    names = [n for n in LT_ORDER if n in v]
    local = records.by_seed(v["local"])
    lines = []
    for n in names:
        x = v[n]
        m, s, k = mean_std(x["test_accuracy"])
        d, se, npairs = paired(records.by_seed(x), local) if n != "local" else (math.nan, math.nan, 0)
        split = windows(x)
        lines.append([LT_LABEL[n], ", ".join(num(a, 3) for a in x["test_accuracy"]), f"{pm(m, s, 3)} (n={k})",
                      "(reference)" if n == "local" else f"{pm(d, se, 3, sign=True)} (n={npairs})",
                      describe(split) if split else "–"])
    s = rec["setting"]
    head = prose(f"Re-run on {rec['date']} (commit {_commit(v['glocal'])}; record "
                 f"[{record}]({record})): Fashion-MNIST / {s['imbalance_factor']}, the `train_lt` command "
                 f"(`-P {s['profile']}`: T = {s['steps']}, τ = {s['tau']}, σ = {s['sigma']}, m = {s['m']}), seeds "
                 f"{_seeds(v['local'])}, balanced test accuracy:")
    _out(cog, head + "\n\n" + table(
        ["variant", "per seed", "mean ± std", "minus local, paired mean ± SE", "windows by how the estimate was made"],
        lines))


def lt_rerun_sentence(cog, record: str) -> None:
    """docs/method.md's summary: glocal (paper estimator) against local on the re-run cell, and its windows."""
    rec = _load(cog, record, "lt_rerun")
    v = rec["variants"]
    g, lo = mean_std(v["glocal"]["test_accuracy"]), mean_std(v["local"]["test_accuracy"])
    d, se, n = paired(records.by_seed(v["glocal"]), records.by_seed(v["local"]))
    split = windows(v["glocal"])
    fb = sum(records.finite(v["glocal"].get("dmd_fallbacks", [])))
    _out(cog, prose(
        f"Re-run with the paper's estimator on Fashion-MNIST / {rec['setting']['imbalance_factor']} "
        f"([records/{Path(record).name}](records/{Path(record).name}), {rec['date']}), glocal gives "
        f"{pm(g[0], g[1], 3)} (local {pm(lo[0], lo[1], 3)}; mean ± std of {g[2]} seeds; glocal − local "
        f"{pm(d, se, 4, sign=True)}, paired), with {fb:.0f} fallbacks in its {sum(split.values())} windows "
        f"({describe(split)}).", width=98))


# --- sgld: z reset against persistent ------------------------------------------------------------------------------


def _steadiness(windows: Sequence[dict]) -> float:
    """Mean over seeds of the median |log(‖ĝ_{k+1}‖ / ‖ĝ_k‖)| over successive windows: how much the hypergradient's
    norm jumps from one window to the next (0: steady)."""
    per_seed = []
    for w in windows:
        h = np.asarray(w["h_used_norm"], float)
        h = h[np.isfinite(h) & (h > 0)]
        if h.size > 1:
            per_seed.append(float(np.median(np.abs(np.diff(np.log(h))))))
    return float(np.mean(per_seed)) if per_seed else math.nan


def sgld_z_table(cog, record: str) -> None:
    """docs/sgld.md "Measured: z reset vs persistent": both variants over the record's seeds, seed 0's windows."""
    rec = _load(cog, record, "lt_rerun")
    v = rec["variants"]
    lines = []
    for name, label in (("sgld", "reset (default)"), ("sgld-persist-z", "persistent")):
        x = v[name]
        acc, loss = mean_std(x["test_accuracy"]), mean_std(x["val_loss"])
        w0 = x["windows"][0]
        final = [mean_std([w[k][-1] for w in x["windows"]])[0] for k in ("w(L=0.1)", "w(L=1)", "w(L=3)")]
        lines.append([label, pm(acc[0], acc[1], 3), pm(loss[0], loss[1], 3),
                      ", ".join(f"{h:.2g}" for h in w0["h_used_norm"]), num(_steadiness(x["windows"]), 2),
                      ", ".join(num(f, 2) for f in final)])
    s = rec["setting"]
    k = len(v["sgld"]["seeds"])
    head = prose(f"{k} seeds ({_seeds(v['sgld'])}), long-tailed Fashion-MNIST (factor {s['imbalance_factor']}), "
                 f"reweighting, `{s['profile']}` profile (T = {s['steps']}, τ = {s['tau']}, batch {s['batch_size']}, "
                 f"outer Adam lr {s['outer_lr']:g}), 2-core CPU, {rec['date']} (commit {_commit(v['sgld'])}; record "
                 f"[{record}]({record})):")
    _out(cog, head + "\n\n" + table(
        ["z", "balanced test accuracy, mean ± std", "final full val loss, mean ± std",
         f"‖ĝ‖ over the {len(v['sgld']['windows'][0]['h_used_norm'])} windows (seed {v['sgld']['seeds'][0]})",
         "window-to-window jump of ‖ĝ‖ (median \\|log ratio\\|, mean over seeds)",
         "final w(L=0.1), w(L=1), w(L=3) (mean over seeds)"], lines))


def sgld_z_reading(cog, record: str) -> None:
    """The sentence under that table: did the persistent z help (paired, 2 SE), is its hypergradient steadier."""
    rec = _load(cog, record, "lt_rerun")
    v = rec["variants"]
    d, se, n = paired(records.by_seed(v["sgld-persist-z"]), records.by_seed(v["sgld"]))
    if math.isfinite(se) and se > 0 and d > 2 * se:
        verdict = "helped"
    elif math.isfinite(se) and se > 0 and d < -2 * se:
        verdict = "hurt"
    else:
        verdict = "neither helped nor hurt"
    jr, jp = _steadiness(v["sgld"]["windows"]), _steadiness(v["sgld-persist-z"]["windows"])
    _out(cog, prose(
        f"The persistent z {verdict} here (persistent − reset = {pm(d, se, 3, sign=True)} balanced test accuracy, "
        f"paired over {n} seeds; a verdict needs more than 2 SE); the window-to-window jump of its hypergradient's "
        f"norm is {num(jp, 2)} against the reset's {num(jr, 2)}."))


# --- collapse detection ------------------------------------------------------------------------------------------


def collapse_measured(cog, record: str) -> None:
    """docs/sgld.md "Collapse detection, measured": the issue's command stops as collapsed, the default completes."""
    rec = _load(cog, record, "collapse_probe")
    bad, ok = rec["runs"]["outer_lr_0.1"], rec["runs"]["default"]
    w = ok["hyperparams"]
    cmd = bad["command"].replace(" --data-dir ../shared/datasets", "")
    if bad["status"] == "collapsed":
        first = (f"now ends after outer step {bad['outer_steps']} with status `collapsed`: "
                 f"\"{(bad['failure'] or '').split('; try')[0]}\". Its metrics are NaN.")
    else:
        first = f"ended with status `{bad['status']}` after {bad['outer_steps']} outer steps (no collapse)."
    _out(cog, prose(
        f"The issue's command with the old outer lr, `{cmd}`, {first} The same command with the default outer "
        f"settings (lr {ok['outer_lr']:g}) ended with status `{ok['status']}`, with w(L=0.1) = "
        f"{num(w.get('w(L=0.1)'), 2)}, w(L=1) = {num(w.get('w(L=1)'), 2)}, w(L=3) = {num(w.get('w(L=3)'), 2)} and test "
        f"accuracy {num(ok['test_accuracy'], 2)} after {ok['steps']} steps ({rec['date']}, commit {(ok['commit'] or 'unknown')[:7]}{'+dirty' if ok['dirty'] else ''}; record "
        f"[{record}]({record}))."))


# --- docs/method.md: the eigenvalues near 1 -----------------------------------------------------------------------


def eigen_stats(eigenvalues: np.ndarray, tols: Sequence[float], quantiles: Sequence[float]) -> dict:
    """Per window (a row of ``eigenvalues`` [windows, modes], non-finite entries ignored): the distance of the
    eigenvalue nearest 1 and the spectral radius; their ``quantiles`` over the windows (numpy's linear rule), the
    share of windows with no eigenvalue within each of ``tols`` of 1, and the number of windows (with one)."""
    e = np.asarray(eigenvalues, complex)
    e = e.reshape(-1, e.shape[-1]) if e.ndim > 1 else e.reshape(1, -1)
    ok = np.isfinite(e)
    has = ok.any(axis=1)
    dist = np.where(ok, np.abs(e - 1), np.inf).min(axis=1)[has]
    rho = np.where(ok, np.abs(e), -np.inf).max(axis=1)[has]
    return {"n": int(has.sum()),
            "dist": [float(np.quantile(dist, q)) for q in quantiles] if dist.size else [math.nan] * len(quantiles),
            "rho": [float(np.quantile(rho, q)) for q in quantiles] if rho.size else [math.nan] * len(quantiles),
            "none_within": {t: float(np.mean(dist > t)) if dist.size else math.nan for t in tols}}


def _run_folders(base: Path, row: dict) -> List[Path]:
    """The row's run folders: each entry of ``runs`` a folder or a glob pattern relative to the record (the
    campaign's row is ``paper_scale_cpu/glocal/seed*``: every seed it has committed); a pattern matches folders
    only (not the ``seeds.json`` beside them)."""
    return [f for run in row["runs"] for f in (sorted(p for p in base.glob(run) if p.is_dir())
                                               if any(c in run for c in "*?[") else [base / run])]


def _row_eigenvalues(base: Path, row: dict) -> np.ndarray:
    arrays = []
    for folder in _run_folders(base, row):
        with np.load(folder / "dmd.npz") as z:
            arrays.append(np.asarray(z["eigenvalues"]))
    width = max(a.shape[1] for a in arrays)
    return np.concatenate([np.pad(a.astype(complex), ((0, 0), (0, width - a.shape[1])), constant_values=np.nan)
                           for a in arrays])


def _near_one(cog, record: str):
    rec = _load(cog, record, "near_one")
    base = (Path(cog.inFile).parent / record).parent
    stats = [eigen_stats(_row_eigenvalues(base, r), rec["tols"], rec["quantiles"]) for r in rec["rows"]]
    return rec, stats


def _pct(x: float) -> str:
    return "–" if not math.isfinite(x) else f"{x * 100:.0f} %"


def near_one_table(cog, record: str) -> None:
    """docs/method.md's table: per row of the record, the nearest eigenvalue's distance to 1, the windows with
    none within each tol, the spectral radius (quantiles over the row's windows)."""
    rec, stats = _near_one(cog, record)
    qs = " / ".join(f"{q * 100:g}" for q in rec["quantiles"]) + " %"
    lines = [[f"{r['label']}, {s['n']} windows", " / ".join(f"{x:.2g}" for x in s["dist"]),
              " / ".join(_pct(s["none_within"][t]) for t in rec["tols"]),
              " / ".join(num(x, 2) for x in s["rho"])] for r, s in zip(rec["rows"], stats)]
    _out(cog, table(["windows", f"distance of the nearest eigenvalue to 1, {qs}",
                     "windows with none within " + " / ".join(f"{t:g}" for t in rec["tols"]),
                     f"spectral radius, {qs}"], lines) + "\n\n" + prose(
        f"(Record [{record}]({record}), {rec['date']}: the eigenvalues of each run's `dmd.npz`; the first row's runs "
        "are the CPU campaign's, the others were run for this table at the commit its record names.)"))


def near_one_reading(cog, record: str) -> None:
    """The bullets' numbers under the rule: what tol 0.1 holds at the paper's setting (first row) and with fewer
    snapshots (last row)."""
    rec, stats = _near_one(cog, record)
    tol = 0.1 if 0.1 in rec["tols"] else rec["tols"][-1]
    paper, few = stats[0], stats[-1]
    q90 = paper["dist"][-1]
    share = paper["none_within"][tol]
    held = (f"{tol:g} holds the eigenvalue nearest 1 in {_pct(1 - share)} of the paper setting's windows "
            f"({paper['n']} windows of the first row; 90 % quantile of the distance {q90:.2g}"
            + (f", about {tol / q90:.0f}× margin)" if q90 < tol else f", beyond {tol:g}: the nearest-eigenvalue rule "
               f"decides {_pct(share)} of them)"))
    _out(cog, "\n".join([
        "* " + prose(f"{held}, and a noise-free system whose other modes have `|λ − 1| > 0.1` is still recovered "
                     "exactly (tests: 1e-8).").replace("\n", "\n  "),
        "* " + prose(f"With fewer snapshots (σ = 10, m = 4: 6 snapshot pairs for a rank-6 fit) the unit eigenvalue is "
                     f"displaced further: {_pct(few['none_within'][tol])} of the last row's windows have none within "
                     f"{tol:g}. Literally, Eq. 20 is then an **empty sum: a zero hypergradient** (the outer Adam step "
                     "would only replay its momentum). The code instead takes the mode nearest 1, which is the mode "
                     "the fit offers as the steady state. The literal empty sum is `hankel_dmd_estimate(..., "
                     "if_empty=\"zero\")` and the fallback `if_empty=\"local\"`.").replace("\n", "\n  "),
    ]))


def selected_above_one(cog, record: str) -> None:
    """The paragraph under the table: where the summed eigenvalues lie at lr0 1e-3 (the first row's history.csv
    ``dmd_selected``) and the used hypergradient's norm over the local one's (``h_used_norm / h_local_norm``)."""
    rec = _load(cog, record, "near_one")
    base = (Path(cog.inFile).parent / record).parent
    mags: List[float] = []
    ratios: List[float] = []
    complex_pairs = windows = 0
    import csv

    for folder in _run_folders(base, rec["rows"][0]):
        with open(folder / "history.csv", newline="") as f:
            for row in csv.DictReader(f):
                sel = [complex(x.replace(" ", "")) for x in (row.get("dmd_selected") or "").split(";") if x.strip()]
                if not sel:
                    continue
                windows += 1
                complex_pairs += any(abs(z.imag) > 0 for z in sel)
                mags.append(float(np.mean([z.real for z in sel])))
                hl, hu = float(row["h_local_norm"] or "nan"), float(row["h_used_norm"] or "nan")
                if math.isfinite(hl) and math.isfinite(hu) and hl > 0:
                    ratios.append(hu / hl)
    r = rows_quantiles(mags, (0.1, 0.5, 0.9))
    above = float(np.mean(np.asarray(mags) > 1)) if mags else math.nan
    rat = rows_quantiles(ratios, (0.1, 0.5, 0.9))
    _out(cog, prose(
        f"At lr0 1e-3 (the first row, {windows} windows) the summed eigenvalues' real part is above 1 in "
        f"{_pct(above)} of the windows (10 / 50 / 90 %: {' / '.join(num(x, 3) for x in r)}), a complex pair in "
        f"{_pct(complex_pairs / windows if windows else math.nan)}, and the estimate Eq. 20 returns is "
        f"{' / '.join(num(x, 2) for x in rat)} × the local hypergradient's norm (10 / 50 / 90 %)."))


def dmd_use_table(cog, record: str) -> None:
    """docs/method.md "DMD use, README quick start": per run of the record's ``dmd_use`` (its metrics.json beside the
    record), the windows whose hypergradient came from the DMD (not a fallback), split by how, and test accuracy."""
    import json

    rec = _load(cog, record, "near_one")
    base = (Path(cog.inFile).parent / record).parent
    lines = []
    for r in rec["dmd_use"]:
        m = json.loads((base / r["run"] / "metrics.json").read_text())
        split = {k: int(v) for k, v in (m.get("dmd_windows") or {}).items() if v}
        n = sum(split.values())
        fb = split.pop("fallback", 0)
        reasons = ", ".join(f"{c} `{k}`" for k, c in sorted((m.get("dmd_fallback_reasons") or {}).items(),
                                                             key=lambda kv: -kv[1]))
        how = describe(split) if split else ""
        detail = "; ".join(x for x in (how, reasons) if x)
        used = n - fb
        lines.append([r["label"], (f"**{used} / {n}**" if used == n else f"{used} / {n}") + (f" ({detail})" if detail
                                                                                              else ""),
                      num((records.finite([m.get("test_accuracy")]) or [math.nan])[0], 4)])
    _out(cog, table(["estimator", "windows whose hypergradient came from the DMD", "test accuracy"], lines))


def rows_quantiles(xs: Sequence[float], qs: Sequence[float]) -> List[float]:
    """``qs`` quantiles (numpy's linear rule) of the finite ``xs``; NaN each when there are none."""
    x = np.asarray(records.finite(xs), float)
    return [float(np.quantile(x, q)) for q in qs] if x.size else [math.nan] * len(qs)


__all__ = ["lt_rerun_table", "lt_rerun_sentence", "sgld_z_table", "sgld_z_reading", "collapse_measured",
           "near_one_table", "near_one_reading", "selected_above_one", "dmd_use_table", "eigen_stats", "rows_quantiles"]
