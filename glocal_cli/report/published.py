"""The published tables and numbers of README.md and docs/*.md, generated from the committed records.

Every table or sentence with a measured number sits in a cog block (cogapp) that calls one
function of this module with the record it comes from, a path relative to the Markdown file::

    <!-- [[[cog import glocal_cli.report.published as P; P.what_to_use(cog, "docs/baselines_cpu.json") ]]] -->
    | method | test accuracy | ...        <- generated: do not edit, edit the record or the template
    <!-- [[[end]]] -->

One command regenerates them all, another fails when a file differs from what its records give
(the default test suite runs the second, ``tests/test_published.py``)::

    python -m glocal_cli.report.published           # cog -r over FILES
    python -m glocal_cli.report.published --check   # cog --check over FILES: exit 5 on drift

A new published result is a record (a JSON file under docs/, written by the command that produced
it) and a template: a function here ``name(cog, record_path, ...)`` that loads it with
:func:`glocal_cli.report.records.load` and writes Markdown with :func:`_out`; then a cog block
in the page, and the page in :data:`FILES` if it is new.

Every ± follows :data:`glocal_cli.report.records.CONVENTION` (README.md states it once): over
seeds the sample standard deviation (ddof 1); a paired difference is its mean ± standard error.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from glocal_cli.errors import UserError
from glocal_cli.report import records
from glocal_cli.report.published_text import g3, num, pm, prose, signed, table, thousands, windows
from glocal_cli.report.published_text import load as _load
from glocal_cli.report.published_text import out as _out
from glocal_cli.report.published_verify import (  # noqa: F401  (the pages' blocks call them as P.<name>)
    _closer_sentence, _verify_closer, _verify_key, _verify_words, verify_beats_local, verify_selection_table,
    verify_table,
)
from glocal_cli.report.published_tuning import optimizer_tuning, tuning_answer, tuning_commits  # noqa: F401
from glocal_cli.report.published_docs import (  # noqa: F401  (docs/sgld.md's and docs/method.md's blocks)
    collapse_measured, lt_rerun_sentence, lt_rerun_table, near_one_reading, near_one_table, selected_above_one,
    sgld_z_reading, sgld_z_table, dmd_use_table,
)
from glocal_cli.report.records import mean_std, paired

ROOT = Path(__file__).resolve().parents[2]

#: The pages with generated blocks, relative to the repository root.
FILES = ("README.md", "docs/evidence_cpu.md", "docs/baselines.md", "docs/verify_cpu.md", "docs/method.md",
         "docs/results.md", "docs/sgld.md", "docs/library.md")


# --- the paired-seed results (evidence records; the baselines record) -------------------------------------------


@dataclasses.dataclass
class Row:
    """One variant of a paired-seed result, with the statistics every template prints."""

    name: str
    mean: float
    std: float
    n: int
    diff: float = math.nan  # minus the reference, paired
    se: float = math.nan
    n_pairs: int = 0
    cost: float = math.nan
    cost_from_runs: float = math.nan
    wall: float = math.nan
    not_complete: int = 0
    values: Optional[dict] = None  # the record's per-seed lists, where it has them


def _legacy_rows(rec: dict) -> Dict[str, Row]:
    """Rows of a record that kept the report's summary numbers, not its seeds (``numbers``; the CPU baselines
    table of issue 19). ``pm.stored_std_ddof`` says which std it stored; ddof 0 is rescaled to the convention's
    sample std by √(n / (n − 1)), which is exact. Its paired standard errors already are the convention's."""
    ddof = int((rec.get("pm") or {}).get("stored_std_ddof", 1))
    prefix = f"baselines/{rec['setting']['dataset']}/"
    names: List[str] = []
    for key in rec["numbers"]:
        if key.startswith(prefix):
            name = key[len(prefix):].rsplit("/", 1)[0]
            if name not in names:
                names.append(name)
    out = {}
    for name in names:
        def get(field: str) -> float:
            v = rec["numbers"].get(f"{prefix}{name}/{field}")
            return math.nan if v is None else float(v)

        n = int(get("n"))
        std = get("test_accuracy_std")
        if ddof == 0 and n > 1:
            std *= math.sqrt(n / (n - 1))
        out[name] = Row(name, get("test_accuracy_mean"), std, n, get("diff_vs_glocal_mean"), get("diff_vs_glocal_se"),
                        n if math.isfinite(get("diff_vs_glocal_mean")) else 0, get("cost_inner_steps"),
                        get("cost_inner_steps_from_runs"), get("wall_s"))
    return out


def _ordered(r: Dict[str, Row]) -> Dict[str, Row]:
    """Baselines rows in the report's order (``glocal_cli.report.baselines.ROW_ORDER``; others after, sorted)."""
    from glocal_cli.report.baselines import ROW_ORDER

    def key(name: str):
        base = name.replace(" (tuned)", "")
        return (ROW_ORDER.index(base), name) if base in ROW_ORDER else (len(ROW_ORDER), name)

    return {k: r[k] for k in sorted(r, key=key)}


def rows(rec: dict, reference: Optional[str] = None) -> Dict[str, Row]:
    """``{variant: Row}`` of a paired-seed record, differences against ``reference`` (default: the record's)."""
    reference = reference or rec.get("reference")
    if "variants" not in rec:
        if "numbers" not in rec:
            raise UserError(f"a {rec.get('record')!r} record without variants or numbers")
        return _ordered(_legacy_rows(rec))
    ref = rec["variants"].get(reference) if reference else None
    out = {}
    for name, v in rec["variants"].items():
        mean, std, n = mean_std(v["test_accuracy"])
        d, se, n_pairs = (paired(records.by_seed(v), records.by_seed(ref)) if ref is not None and name != reference
                          else (math.nan, math.nan, 0))
        walls = records.finite(v.get("wall_s", []))
        out[name] = Row(name, mean, std, n, d, se, n_pairs, v.get("cost_timed", math.nan) or math.nan,
                        v.get("cost_from_runs", math.nan) or math.nan,
                        v.get("wall_s_total") or (sum(walls) / len(walls) if walls else math.nan),
                        v.get("runs_not_complete", sum(s != "complete" for s in v["status"])), v)
    return out


def pair(rec: dict, a: str, b: str) -> tuple:
    """(mean, SE, n) of ``a − b`` over the record's paired seeds (a legacy record: through its reference)."""
    if "variants" in rec:
        return paired(records.by_seed(rec["variants"][a]), records.by_seed(rec["variants"][b]))
    r = _legacy_rows(rec)
    ref = rec.get("reference", "glocal")
    if b == ref:
        return r[a].diff, r[a].se, r[a].n_pairs
    if a == ref:
        return -r[b].diff, r[b].se, r[b].n_pairs
    if r[a].n_pairs != r[b].n_pairs or r[a].n != r[a].n_pairs or r[b].n != r[b].n_pairs:
        return math.nan, math.nan, 0  # the pairs differ: not derivable from the two differences
    # (a − ref) − (b − ref) over the same complete seeds is the paired mean of a − b; its SE needs the seeds
    return r[a].diff - r[b].diff, math.nan, r[a].n_pairs


def windows_words(split: Dict[str, int]) -> str:
    from glocal_cli.windows import describe

    return describe(split)


def _setting_words(rec: dict) -> str:
    s = rec["setting"]
    model = {"lenet": "LeNet"}.get(s.get("model", "lenet"), s.get("model"))
    data = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}.get(s.get("dataset"), s.get("dataset"))
    return (f"{model}, {data}, T = {s['steps']}, "
            f"τ = {s['tau']}, σ = {s['sigma']}, m = {s['m']}, batch {s['batch_size']}, "
            f"{s['val_fraction'] * 100:g} % validation")


def n_seeds(rec: dict) -> int:
    return len(rec.get("seeds") or rec["setting"].get("seeds") or [])


# --- README -----------------------------------------------------------------------------------------------------

WHAT_TO_USE = (  # (record row, the README's label)
    ("glocal", "glocal (the paper's SGD from lr0 1e-3, tuned online)"),
    ("local", "local"),
    ("prodigy", "`optax.contrib.prodigy` (learning-rate free)"),
    ("dadapt_adamw", "`optax.contrib.dadapt_adamw` (learning-rate free)"),
    ("adam", "`optax.adam` at 1e-3"),
    ("sgd-cosine (tuned)", "SGD + cosine, best of {k} lr0 by validation loss"),
    ("schedule_free_sgd (tuned)", "schedule-free SGD, best of {k} lr0 by validation loss"),
)


def what_to_use(cog, baselines: str) -> None:
    """The README's "What should I use?" table from the T = 600 baselines record."""
    rec = _load(cog, baselines, "baselines")
    r = rows(rec, "glocal")
    out = []
    for name, label in WHAT_TO_USE:
        row = r[name]
        k = len(row.values["grid"]) if row.values and "grid" in row.values else len(rec.get("grids", {}).get(name, []))
        out.append([label.format(k=k), pm(row.mean, row.std, 3),
                    "(reference)" if name == "glocal" else pm(row.diff, row.se, 3, sign=True), thousands(row.cost)])
    _out(cog, table(["method", "test accuracy", "minus glocal (paired)", "cost"], out))


def plainly(cog, baselines: str, paper_scale: Optional[str] = None) -> None:
    """The README's plain answer below that table: how much better the learning-rate-free optimizer is, at what cost;
    with ``paper_scale`` (the CPU campaign's record), what it says at T = 20 000 (prodigy − glocal, paired) once the
    campaign has prodigy's seeds, or that they are planned."""
    rec = _load(cog, baselines, "baselines")
    r = rows(rec, "glocal")
    best = r["prodigy"]
    ratio = r["glocal"].cost / best.cost
    scale = ("This comparison at the paper's scale (T = 20 000, with the learning-rate-free\noptimizers) is part d of "
             "the GPU job, not yet run.")
    if paper_scale is not None:
        from glocal_cli.report.paper_scale_page import pair_of, summary_line

        ps = records.load(Path(cog.inFile).parent / paper_scale)
        pair = pair_of(ps, "prodigy", "glocal")
        page = "[docs/paper_scale_cpu.md](docs/paper_scale_cpu.md)"
        if pair is not None and pair["n"]:
            scale = (f"At the paper's scale (T = 20 000) the CPU campaign measures {summary_line(ps, 'prodigy', 'glocal')}"
                     f" ({page}); the other optimizers there are part d of the GPU job, not yet run.")
        elif "prodigy" in ((ps.get("plan") or {}).get("variants") or {}):
            scale = ("At the paper's scale (T = 20 000) the CPU campaign has prodigy's seeds planned, not yet run "
                     f"({page}); the other optimizers there are part d of the GPU job, not yet run.")
    _out(cog, prose(f"**Plainly: at this setting, do not use glocal (or local) to avoid tuning a learning rate.** A\n"
              f"learning-rate-free optimizer (`glocal train --method none --inner-optimizer prodigy`) is "
              f"{num(best.diff, 2)}\nbetter at about 1/{round(ratio)} of the cost, with nothing to tune. glocal is for "
              f"studying hypergradient\nestimation. {scale}"))










def found(cog, baselines: str, verify: str, paper_scale: Optional[str] = None) -> None:
    """The README's opening finding, from the T = 600 and the verify records, and (``paper_scale``) the sentence
    on the paper's scale from the campaign's record (:func:`glocal_cli.report.paper_scale_page.readme_sentence`)."""
    rec = _load(cog, baselines, "baselines")
    d, se, n = pair(rec, "glocal", "local")
    over_none = [pair(rec, v, "none")[0] for v in ("glocal", "local")]
    ver = records.load(Path(cog.inFile).parent / verify)
    w = _verify_words(ver)
    glocal_closer = "glocal" in set(w["closer_low"]) | set(_verify_closer(ver, w["high"], "truth")) | set(
        _verify_closer(ver, w["high"], "expected_global"))
    others = (f"the one other window-based estimator that is, at lr0 0.1 only, is {_closer_sentence(ver, w)}"
              if w["closer_high"] and not w["closer_low"] else
              f"closer at lr0 1e-3: {', '.join(w['closer_low']) or 'none'}; at lr0 0.1: "
              f"{_closer_sentence(ver, w) or 'none'}")
    text = (f"**What we found so far: glocal does not beat local.** Over {n} paired seeds at T = "
            f"{rec['setting']['steps']} on the CPU,\nglocal − local is {pm(d, se, 4, sign=True)} test accuracy "
            f"(both about {signed(sum(over_none) / 2, 2)} over fixed hyperparameters;\n"
            "[docs/baselines.md](docs/baselines.md)). Against the true and the expected global hypergradient\n"
            f"([docs/verify_cpu.md](docs/verify_cpu.md)), the paper's estimator is {'' if glocal_closer else 'not '}"
            "closer than the local one (median\nrelative error) at either learning rate; "
            f"{others}; on the quadratic,\n{' and '.join(w['quadratic'])} are far closer than local.")
    if paper_scale is not None:
        from glocal_cli.report.paper_scale_page import readme_sentence

        text += " " + readme_sentence(records.load(Path(cog.inFile).parent / paper_scale))
    _out(cog, prose(text))


def does_it_work(cog, baselines: str, evidence: str, verify: str, paper_scale: Optional[str] = None,
                 tuning: Optional[str] = None) -> None:
    """The README's "Does it work?" table; its paper-scale row from the campaign's record (``paper_scale``;
    :func:`glocal_cli.report.paper_scale_page.readme_answer`), its row on other optimizers from the
    ``optimizer_tuning`` record (``tuning``; :func:`glocal_cli.report.published_tuning.tuning_answer`)."""
    t600 = _load(cog, baselines, "baselines")
    t200 = _load(cog, evidence, "evidence")
    ver = records.load(Path(cog.inFile).parent / verify)
    s600, s200 = t600["setting"], t200["setting"]
    g_none = pair(t600, "glocal", "none")
    l_none = pair(t600, "local", "none")
    d600, d200 = pair(t600, "glocal", "local"), pair(t200, "glocal", "local")
    split = windows(t200["variants"]["glocal"])
    w = _verify_words(ver)
    est = w["est"]
    eg = ver["summary"][w["high"]]["expected_global"]
    lookaheads = sorted(n for n in ver["summary"][w["high"]]["beats_local"]["expected_global"]["rel_err_median"]
                        if n.startswith("truncated"))
    rows_ = [
        ["Does hyperparameter optimization help?",
         f"yes: glocal − none = {pm(g_none[0], g_none[1], 3, sign=True)} test accuracy, local − none "
         f"{signed(l_none[0], 3)} (LeNet, Fashion-MNIST, lr0 1e-3, T = {s600['steps']}, "
         f"{g_none[2]} paired seeds, CPU)", "[docs/baselines.md](docs/baselines.md)"],
        ["Does glocal beat local?",
         f"no: glocal − local = {pm(d600[0], d600[1], 4, sign=True)} at T = {s600['steps']} and "
         f"{pm(d200[0], d200[1], 5, sign=True)} at T = {s200['steps']} ("
         + (f"{d600[2]} paired seeds each" if d600[2] == d200[2] else f"{d600[2]} and {d200[2]} paired seeds")
         + "); "
         f"glocal's {sum(split.values())} windows at T = {s200['steps']}: {windows_words(split)}",
         "[docs/evidence_cpu.md](docs/evidence_cpu.md)"],
        ["Is glocal closer to the global hypergradient?",
         f"no: median relative error to the true global {g3(est(w['low'], 'truth', 'glocal')['rel_err_median'])} "
         f"(glocal) against {g3(est(w['low'], 'truth', 'local')['rel_err_median'])} (local) at lr0 1e-3, "
         + ("where no window-based estimator is closer; " if not w["closer_low"]
            else f"where {', '.join(w['closer_low'])} are closer; ")
         + f"at lr0 0.1 a single minibatch order's truth is "
         f"{eg['truth_rel_dev_median'] * 100:.0f} % away from the expected global, "
         + ("no window-based estimator has a positive mean cosine with it" if not w["positive"]
            else f"{', '.join(w['positive'])} have a positive mean cosine with it")
         + f", and only {_closer_sentence(ver, w) or 'none'} and the "
         f"{' / '.join(x.split('-')[1].replace('tau', 'τ') for x in lookaheads)} look-aheads (at "
         + " / ".join(f"{est(w['high'], 'truth', x)['cost_tangent_steps'] / est(w['high'], 'truth', 'local')['cost_tangent_steps']:g}×"
                      for x in lookaheads)
         + f" the cost) come closer than local (MLP, T = {thousands(w['steps'])})",
         "[docs/verify_cpu.md](docs/verify_cpu.md)"],
    ]
    if paper_scale is not None:
        from glocal_cli.report.paper_scale_page import readme_answer

        rows_.append(["At the paper's scale (T = 20 000)?",
                      readme_answer(records.load(Path(cog.inFile).parent / paper_scale)),
                      "[docs/paper_scale_cpu.md](docs/paper_scale_cpu.md), [docs/gpu.md](docs/gpu.md)"])
    if tuning is not None:
        rows_.append(["Does it help the optimizer I already use?",
                      tuning_answer(_load(cog, tuning, "optimizer_tuning")),
                      "[docs/baselines.md](docs/baselines.md#hypergradients-on-top-of-the-optimizer-you-use)"])
    _out(cog, table(["question", "answer", "source"], rows_))


def library_example(cog, record: str) -> None:
    """What the library example (docs/library.md) measured (its test writes the record, tests/test_readme.py)."""
    rec = _load(cog, record, "library_example")
    m = rec["measured"]
    split = m["windows"]
    _out(cog, prose(f"Measured by its test ({rec['date']}): the learning rate goes from {num(m['lr_first'], 2)} to "
              f"{num(m['lr_last'], 2)} over {m['n_windows']} windows and\nthe validation loss from "
              f"{num(m['val_loss_first'], 2)} to {num(m['val_loss_last'], 2)}; the windows' hypergradients, by how "
              f"the DMD estimate was made:\n{windows_words(split)}. The script, with the three-seed group below, "
              f"took {m['wall_s']:.0f} s on {rec['device']}\n(load average {rec['load_average_1min']:g}). `HPOState` is a pytree, so "
              "you can checkpoint it between windows. Several seeds\ntrain together as one `jax.vmap`-ed, jitted "
              "program with `SeedGroupRunner` (split over the local devices\nwhen there are several):"))


# --- docs/evidence_cpu.md ---------------------------------------------------------------------------------------


def evidence_tables(cog, evidence: str) -> None:
    """The evidence page's tables: every variant's mean ± std and window split, the paired differences, final lrs."""
    rec = _load(cog, evidence, "evidence")
    r = rows(rec)
    lines = []
    for name, row in r.items():
        v = row.values
        split = windows(v)
        lines.append([name, f"{pm(row.mean, row.std, 4)} (n={row.n})",
                      windows_words(split) if split else "–",
                      str(sum(s not in ("complete",) for s in v["status"])), num(row.wall, 0)])
    text = prose(f"{_setting_words(rec)}, lr0 {rec['setting']['lr0']:g}; final test accuracy over {n_seeds(rec)} "
                 "paired seeds (each seed: the same split, initialization and batches for every variant).") + "\n\n"
    text += table(["variant", "test accuracy, mean ± std", "windows by how the estimate was made (all seeds)",
                   "not complete", "wall s (mean)"], lines)
    prow = []
    for a, b in rec["pairs"]:
        d, se, n = pair(rec, a, b)
        ratio = d / se if math.isfinite(se) and se > 0 else math.nan
        verdict = "–" if not math.isfinite(ratio) else ("yes" if ratio > 2 else ("no (worse)" if ratio < -2 else "no"))
        prow.append([f"{a} − {b}", signed(d, 5), num(se, 5), str(n), num(ratio, 2), verdict])
    text += "\n\n" + table(["paired difference (same seeds)", "mean", "standard error", "n pairs", "mean / SE",
                            "more than 2 SE above 0?"], prow)
    lrs = "; ".join(f"{name} " + " ".join(num(x, 5) for x in row.values["final_lr"])
                    for name, row in r.items() if name != "none")
    para = (f"Final learned learning rate, seeds {', '.join(map(str, rec['variants']['local']['seeds']))}: "
            f"{lrs} (from {rec['setting']['lr0']:g}).")
    fb = {name: sum(records.finite(row.values.get("dmd_fallbacks", []))) for name, row in r.items()
          if name.startswith("glocal")}
    full = [name for name, k in fb.items() if k and k == sum(windows(r[name].values).values())]
    for name in full:
        reasons: Dict[str, int] = {}
        for per in r[name].values.get("dmd_fallback_reasons", []):
            for k, c in (per or {}).items():
                reasons[k] = reasons.get(k, 0) + c
        why = ", ".join(f"{c} {k}" for k, c in sorted(reasons.items(), key=lambda kv: -kv[1]))
        same = pair(rec, name, "local")
        para += (f" {name} fell back to the local hypergradient in all {fb[name]:.0f} windows" + (f" ({why})" if why else "")
                 + (" and is identical to local." if same[0] == 0 and same[1] == 0 else "."))
    _out(cog, text + "\n\n" + prose(para))


def evidence_conclusion(cog, evidence: str) -> None:
    """docs/method.md's reading of the evidence record: the verdict, glocal's windows, the final learning rates."""
    rec = _load(cog, evidence, "evidence")
    d, se, n = pair(rec, "glocal", "local")
    beats = math.isfinite(se) and se > 0 and d / se > 2
    split = windows(rec["variants"]["glocal"])
    lrs = {name: records.finite(v["final_lr"]) for name, v in rec["variants"].items() if name != "none"}
    spans = "; ".join(f"{name} {num(min(x), 5)}–{num(max(x), 5)}" for name, x in lrs.items() if x)
    _out(cog, prose(
        f"**Conclusion: glocal {'beats' if beats else 'does not beat'} local here** (glocal − local = "
        f"{pm(d, se, 5, sign=True)} over {n} paired seeds). Of glocal's {sum(split.values())} windows, "
        f"{windows_words(split)}. The variants end at nearly the same learning rate (final lr over the seeds: "
        f"{spans}; from {rec['setting']['lr0']:g}). The horizon is short (T = {rec['setting']['steps']} against the "
        "paper's 20 000) and the runs are one setting."))


def t600_tables(cog, baselines: str) -> None:
    """The evidence page's T = 600 section: none / local / glocal of the baselines record."""
    rec = _load(cog, baselines, "baselines")
    r = rows(rec, "glocal")
    lines = [[name, f"{pm(r[name].mean, r[name].std, 4)} (n={r[name].n})"] for name in ("none", "local", "glocal")]
    text = table(["variant", "test accuracy, mean ± std"], lines)
    prow = []
    for a, b in (("glocal", "local"), ("glocal", "none"), ("local", "none")):
        d, se, n = pair(rec, a, b)
        prow.append([f"{a} − {b}", signed(d, 4), num(se, 4) if math.isfinite(se) else "not recorded", str(n)])
    text += "\n\n" + table(["paired difference (same seeds)", "mean", "standard error", "n pairs"], prow)
    _out(cog, text)


def seed_table(cog, record: str) -> None:
    """A per-seed table of test accuracy (and glocal's fallbacks where recorded) with its mean ± std row."""
    rec = _load(cog, record, "seed_table")
    v = rec["variants"]
    names = list(v)
    seeds = v[names[0]]["seeds"]
    fb = next((name for name in names if "dmd_fallbacks" in v[name]), None)
    lines = []
    for i, seed in enumerate(seeds):
        cells = [num(v[name]["test_accuracy"][i], 4) for name in names]
        if fb:
            cells.append(f"{v[fb]['dmd_fallbacks'][i]} / {v[fb]['outer_steps'][i]}")
        lines.append([str(seed)] + cells)
    stats = [mean_std(v[name]["test_accuracy"]) for name in names]
    lines.append(["**mean ± std**"] + [f"**{pm(m, s, 4)}**" for m, s, _ in stats] + ([""] if fb else []))
    _out(cog, table(["seed"] + names + ([f"{fb} fallbacks"] if fb else []), lines))


# --- docs/baselines.md --------------------------------------------------------------------------------------------


def baselines_table(cog, baselines: str) -> None:
    """The full "What should I use?" table of the baselines record."""
    from glocal_cli.report.baselines import DESCRIPTIONS

    rec = _load(cog, baselines, "baselines")
    lines = []
    for name, row in rows(rec, "glocal").items():
        desc = DESCRIPTIONS.get(name.replace(" (tuned)", ""), "")
        lines.append([name, desc, f"{pm(row.mean, row.std, 4)} (n={row.n})",
                      "(reference)" if name == "glocal" else f"{pm(row.diff, row.se, 4, sign=True)} (n={row.n_pairs})",
                      thousands(row.cost), thousands(row.cost_from_runs), num(row.wall, 0)])
    _out(cog, table(["variant", "what", "test accuracy, mean ± std", "minus glocal, paired mean ± SE",
                     "cost, timed (inner-step equivalents)", "cost from the runs' windows", "wall s"], lines))


def baselines_findings(cog, baselines: str) -> None:
    """The "What it says" bullets' numbers."""
    rec = _load(cog, baselines, "baselines")
    r = rows(rec, "glocal")
    lf = [n for n in ("prodigy", "dadapt_adamw", "mechanize_sgd", "dog")]
    diffs = [r[n].diff for n in lf]
    lf_cost = sum(r[n].cost for n in lf) / len(lf)
    g = r["glocal"]
    hd = r["hd"]
    grid = {n: (len(r[n].values["grid"]) if r[n].values and "grid" in r[n].values
                else len(rec.get("grids", {}).get(n, []))) for n in ("sgd-cosine (tuned)", "schedule_free_sgd (tuned)")}
    _out(cog, "\n".join([
        f"- **glocal = local here**: local − glocal = {pm(r['local'].diff, r['local'].se, 4, sign=True)} "
        f"({r['local'].n_pairs} paired seeds), and glocal\n  costs {g.cost / r['local'].cost:.1f}× local "
        f"({thousands(g.cost)} against {thousands(r['local'].cost)} inner-step equivalents, timed side by side).",
        f"- **Both lose clearly to what a practitioner would pick instead.** Every learning-rate-free\n"
        f"  optimizer beats glocal by {num(min(diffs), 2)}–{num(max(diffs), 2)} test accuracy at about 1/"
        f"{round(g.cost / lf_cost)} of its cost:\n"
        f"  `prodigy` {pm(r['prodigy'].diff, r['prodigy'].se, 3, sign=True)} and `dadapt_adamw` "
        f"{pm(r['dadapt_adamw'].diff, r['dadapt_adamw'].se, 3, sign=True)} at ~{thousands(lf_cost)} inner-step\n"
        f"  equivalents (glocal: {thousands(g.cost)}); plain `adam` at its default 1e-3 "
        f"{pm(r['adam'].diff, r['adam'].se, 3, sign=True)}. The tuned\n"
        f"  baselines win too, at glocal's cost or less: schedule-free SGD tuned over "
        f"{grid['schedule_free_sgd (tuned)']} learning\n"
        f"  rates {pm(r['schedule_free_sgd (tuned)'].diff, r['schedule_free_sgd (tuned)'].se, 3, sign=True)} "
        f"({thousands(r['schedule_free_sgd (tuned)'].cost)}), SGD + cosine tuned over "
        f"{grid['sgd-cosine (tuned)']} "
        f"{pm(r['sgd-cosine (tuned)'].diff, r['sgd-cosine (tuned)'].se, 3, sign=True)} "
        f"({thousands(r['sgd-cosine (tuned)'].cost)}).",
        f"- Hypergradient descent (β = 1e-3, Baydin's SGD-HD rule) is unstable at this setting: "
        f"{n_seeds(rec) - hd.n} of\n  {n_seeds(rec)} seeds did not finish; the {hd.n} that did are "
        f"{pm(hd.diff, hd.se, 3, sign=True)} over glocal.",
        f"- Local and glocal start from the paper's lr0 1e-3, which `none` shows to be a bad fixed\n"
        f"  rate ({num(r['none'].mean, 3)}). They recover {signed(-r['none'].diff, 2)} of it in "
        f"{rec['setting']['steps'] // rec['setting']['tau']} windows, but the adaptation is slow at\n"
        f"  T = {rec['setting']['steps']}.",
    ]))


# --- the command ------------------------------------------------------------------------------------------------


def run_cog(files: Sequence[str], check: bool = False, root: Path = ROOT) -> int:
    """``cog -r`` (or ``cog --check --diff``) over ``files`` relative to ``root``; cog's exit status."""
    try:
        from cogapp import Cog
        from cogapp.cogapp import CogCheckFailed, CogUserException
    except ImportError:
        raise UserError("cogapp is not installed (pip install cogapp, or uv sync --extra test)") from None
    paths = [str(root / f) for f in files]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise UserError(f"no such file: {missing[0]}")
    args = ["cog", "--check", "--diff", "--check-fail-msg", "run `python -m glocal_cli.report.published`"] if check \
        else ["cog", "-r"]
    cog = Cog()
    try:
        cog.callable_main(args + ["--verbosity", "1", *paths])
    except CogCheckFailed as e:
        print(e, file=sys.stderr)
        return 5
    except CogUserException as e:  # a template failed on its record: the traceback's last line, as one line
        lines = [ln.strip() for ln in str(e.args[0]).splitlines() if ln.strip()]
        page = next((ln for ln in lines if ln.startswith('File "') and not ln.endswith(tuple(
            f"in {f}" for f in dir(sys.modules[__name__])))), "")  # the page's frame, not this module's
        where = re.sub(r'^File "(.*)", line (\d+).*$', r"\1:\2", page) if page else "a page"
        last = lines[-1].replace("glocal_cli.errors.UserError: ", "")
        raise UserError(f"the generated block at {where} failed: {last}") from None
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m glocal_cli.report.published [--check] [FILE ...]``: regenerate (or check) the published pages."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m glocal_cli.report.published",
                                 description="regenerate the tables and numbers of README.md and docs/*.md from the "
                                             "records under docs/ (cog -r); --check fails on drift instead")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 5 when a page differs from its records")
    ap.add_argument("files", nargs="*", help=f"pages, relative to the repository root (default: {' '.join(FILES)})")
    args = ap.parse_args(argv)
    try:
        return run_cog(args.files or FILES, check=args.check)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
