"""Assemble the report: figures, Markdown tables, ``summary.json`` and ``README.md``.

Layout of ``out_dir``::

    figures/   PNGs (trajectories per family / dataset / lr0, DMD eigenvalues, ablation, divergence)
    tables/    accuracy.md, table3_imbalanced.md, table4_runtime.md, ablation.md, evidence.md, baselines.md
    plots/     the runs' curves per setting and the baselines table as CSV, drawn by `dvc plots` (plots.py)
    records/   one JSON record per evidence / baselines table, every seed's values (glocal_cli.report.records;
               a published result is its record copied under docs/)
    summary.json   flat {"lenet/fashion_mnist/lr0.001/glocal/test_accuracy_mean": 0.71, ...}
    metrics.json   the few headline numbers `dvc metrics show` prints (see :func:`headline`)
    README.md      the tables and links to the figures

Missing groups are skipped with a note; a figure that fails is noted, never fatal.
"""

from __future__ import annotations

import dataclasses
import json
import math
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

from glocal_cli import atomic
from glocal_cli.errors import UserError
from glocal_cli.report import baselines, figures, paper, plots, tables
from glocal_cli.report.collect import Group, Run, collect_runs, group_runs

FIG_NAMES = {
    "lenet": "Fig. 2/6/7/8 (LeNet, optimizer hyperparameters)",
    "cifar": "Fig. 3 (WRN-28-2, CIFAR)",
}


@dataclasses.dataclass
class Report:
    out_dir: Path
    runs: int
    figures: List[Path]
    tables: Dict[str, Path]
    summary: Dict[str, float]
    notes: List[str]


def _lr_tag(lr0: float) -> str:
    return f"lr{lr0:g}"


def _command(runs_dir: Path, out_dir: Path) -> str:
    return f"glocal report --runs {runs_dir} --out {out_dir}"


def _record(out_dir: Path, name: str, record: dict) -> None:
    """Write a table's record (``records/<name>``: every seed's values; ``glocal_cli.report.records``), its keys
    in the table's order."""
    atomic.write_text(out_dir / "records" / name,
                      json.dumps(atomic.plain(record, nan_as_none=True), indent=1, ensure_ascii=False) + "\n")


def _put_all(summary: dict, prefix: str, numbers: dict) -> None:
    """``_put`` every number of a table under ``prefix/`` (no prefix: the keys as they are)."""
    for k, v in numbers.items():
        _put(summary, f"{prefix}/{k}" if prefix else k, v)


def _put(summary: Dict[str, float], key: str, value) -> None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        summary[key] = float(value) if isinstance(value, float) else int(value)


def _group_summary(summary: Dict[str, float], prefix: str, g: Group) -> None:
    mean, std, n = g.stat("test_accuracy")
    _put(summary, f"{prefix}/test_accuracy_mean", mean)
    _put(summary, f"{prefix}/test_accuracy_std", std)
    _put(summary, f"{prefix}/n_seeds", n)
    _put(summary, f"{prefix}/n_diverged", g.n_diverged())
    if g.n_not_run():
        _put(summary, f"{prefix}/n_not_run", g.n_not_run())
    _put(summary, f"{prefix}/wall_s_mean", g.stat("wall_s")[0])
    if g.method.startswith("glocal"):
        _put(summary, f"{prefix}/dmd_fallbacks_mean", g.stat("dmd_fallbacks")[0])


def _timing_note(timing: Optional[dict]) -> str:
    if not timing:
        return "not measured"
    seeds = timing.get("seeds", [])
    return (f"{timing.get('rounds', '?')} windows per variant, {len(seeds)} seed(s) per program, "
            f"{timing.get('device', '?')}")


def headline(runs: List[Run]) -> Dict[str, float]:
    """The few numbers ``dvc metrics show`` prints (``metrics.json``; the full set is ``summary.json``).

    ``acc_<method>``: mean final test accuracy of the completed LeNet runs of that
    method, pooled over datasets, initial learning rates and seeds;
    ``glocal_fallback_frac``: DMD fallbacks per glocal window; run counts.
    """
    out: Dict[str, float] = {}
    for m in tables.METHOD_ORDER[:3]:
        vals = [r.value("test_accuracy") for r in runs if r.family == "lenet" and r.method == m and r.status == "complete"]
        vals = [v for v in vals if math.isfinite(v)]
        if vals:
            out[f"acc_{m}"] = round(sum(vals) / len(vals), 4)
    glocal = [r for r in runs if r.method == "glocal" and r.status == "complete"]
    windows = sum(r.value("outer_steps") for r in glocal if math.isfinite(r.value("outer_steps")))
    if windows:
        fb = sum(r.value("dmd_fallbacks") for r in glocal if math.isfinite(r.value("dmd_fallbacks")))
        out["glocal_fallback_frac"] = round(fb / windows, 3)
    out["runs"] = len(runs)
    out["not_run"] = sum(r.status == "not run" for r in runs)
    out["diverged"] = sum(r.status == "diverged" for r in runs)
    return out


def _merge(groups: List[Group], family: str, dataset: str, method: str) -> Optional[Group]:
    runs = [r for g in groups for r in g.runs if g.method == method]
    if not runs:
        return None
    return Group(family, dataset, math.nan, method, (), runs)


@dataclasses.dataclass
class _Build:
    """What the report's sections share: the runs, the output folders, and what each section adds."""

    runs_dir: Path
    out_dir: Path
    runs: List[Run]
    groups: Dict
    notes: List[str]
    log: Callable[[str], None]
    by_family: Dict[str, List[Group]] = dataclasses.field(default_factory=dict)
    figs: List[Path] = dataclasses.field(default_factory=list)
    fig_md: List[str] = dataclasses.field(default_factory=list)
    summary: Dict[str, float] = dataclasses.field(default_factory=dict)
    tabs: Dict[str, Path] = dataclasses.field(default_factory=dict)
    sections: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        for g in self.groups.values():
            self.by_family.setdefault(g.family, []).append(g)

    @property
    def fig_dir(self) -> Path:
        return self.out_dir / "figures"

    @property
    def tab_dir(self) -> Path:
        return self.out_dir / "tables"

    def attempt(self, what: str, fn):
        """``fn()``, or None with a note: a figure must never take the report down."""
        try:
            return fn()
        except Exception as e:
            self.notes.append(f"{what} failed: {e.__class__.__name__}: {e}")
            self.log(traceback.format_exc())
            return None

    def figure(self, path: Optional[Path], markdown: str) -> bool:
        """List a figure that was drawn (``path`` not None) with its README text."""
        if path:
            self.figs.append(path)
            self.fig_md.append(markdown)
        return bool(path)

    def table(self, name: str, heading: str, text: str) -> None:
        """Write ``tables/<name>`` and add it as a README section under ``heading``."""
        atomic.write_text(self.tab_dir / name, text)
        self.tabs[name] = self.tab_dir / name
        self.sections.append(f"{heading}\n\n{text}")

    def command(self) -> str:
        return _command(self.runs_dir, self.out_dir)


def _trajectories(b: _Build) -> None:
    """Fig. 2/6/7/8 and Fig. 3 (one figure per dataset and lr0) and the accuracy tables."""
    for family in ("lenet", "cifar"):
        fam = b.by_family.get(family, [])
        if not fam:
            b.notes.append(f"no {family} runs: {FIG_NAMES[family]} and its accuracy table skipped")
            continue
        for ds, lr0 in sorted({(g.dataset, g.lr0) for g in fam}):
            same = [g for g in fam if g.dataset == ds and g.lr0 == lr0]
            same += [g for g in b.by_family.get("global", []) if family == "lenet" and g.dataset == ds and g.lr0 == lr0]
            name = f"{family}_{ds}_{_lr_tag(lr0)}.png"
            title = f"{FIG_NAMES[family].split(' (')[0]}: {ds}, initial lr {lr0:g}"
            same = [g for g in same if g.n_not_run() < len(g.runs)]
            p = b.attempt(f"figure {name}", lambda: figures.trajectory_figure(same, title, b.fig_dir / name)) if same else None
            b.figure(p, f"### {title}\n\n![{name}](figures/{name})\n")
            for g in fam:
                if g.dataset == ds and g.lr0 == lr0:
                    _group_summary(b.summary, f"{family}/{ds}/{_lr_tag(lr0)}/{g.method}", g)
        b.table(f"accuracy_{family}.md", f"## Final test accuracy, {FIG_NAMES[family].split('(')[1].rstrip(')')}",
                "mean ± std over seeds (n = seeds with a finite result)\n\n" + tables.accuracy_table(fam))
    not_run = sorted({str(r.metrics.get("failure", "")) for r in b.runs if r.status == "not run"})
    if not_run:
        n = sum(r.status == "not run" for r in b.runs)
        b.notes.append(f"{n} run(s) not run (their cells say so): " + " | ".join(not_run))


def _table3(b: _Build) -> None:
    """Table 3 (reweighting on long-tailed CIFAR) and Table 3b (long-tailed MNIST / Fashion-MNIST, weight decay)."""
    rw = b.by_family.get("reweight", [])
    b.table("table3_imbalanced.md", "## Table 3: imbalanced CIFAR, data reweighting (WRN-16-2), test accuracy",
            tables.table3(rw))
    if not rw:
        b.notes.append("no reweight runs: Table 3 shows the paper's numbers only (`dvc repro train_reweight` needs the "
                       "CIFAR files)")
    for g in rw:
        _group_summary(b.summary, f"reweight/{g.dataset}/lt{g.extra[0]:g}/{g.method}", g)
    lt, lt_wd = b.by_family.get("lt", []), b.by_family.get("lt_wd", [])
    if not (lt or lt_wd):
        b.notes.append("no lt / lt_wd runs: Table 3b skipped (`dvc repro train_lt train_lt_wd`)")
        return
    steps = sorted({int(r.config.get("steps", 0)) for g in lt + lt_wd for r in g.runs})
    text = ("Balanced test accuracy (mean per-class recall on the official test set), mean ± std over seeds "
            f"(n = seeds that completed); LeNet + the 385-parameter meta MLP, T = {', '.join(map(str, steps))}. "
            "`none` is plain cross entropy; runs whose meta MLP collapsed or diverged are counted, not averaged. "
            "Compare with the paper's Table 3 above (WRN-16-2 on CIFAR; no `none` or `sgld` column there). "
            "`sgld` is derived from the Kim & Hospedales abstract (docs/sgld.md).\n\n" + tables.table3b(lt))
    if lt_wd:
        text += "\nWeight-decay-only tuning (optimizer task, `--learn weight_decay`):\n\n" + tables.table3b_wd(lt_wd)
    b.table("table3b_long_tailed.md", "## Table 3b: long-tailed MNIST / Fashion-MNIST, data reweighting (LeNet)", text)
    for g in lt:
        key = f"lt/{g.dataset}/lt{g.extra[0]:g}/{g.method}"
        _group_summary(b.summary, key, g)
        _put(b.summary, f"{key}/test_balanced_accuracy_mean", g.stat("test_balanced_accuracy")[0])
        _put(b.summary, f"{key}/n_collapsed", g.n_status("collapsed"))
    for g in lt_wd:
        _group_summary(b.summary, f"lt_wd/{g.dataset}/{_lr_tag(g.lr0)}/{g.method}", g)


def _table4(b: _Build) -> None:
    """Table 4 (runtime) from the LeNet runs of the global family's dataset."""
    glob = b.by_family.get("global", [])
    ref_ds = glob[0].dataset if glob else "fashion_mnist"
    lenet_ds = [g for g in b.by_family.get("lenet", []) if g.dataset == ref_ds]
    by_method = {m: g for m in ("none", "local", "glocal") if (g := _merge(lenet_ds, "lenet", ref_ds, m))}
    if glob:
        by_method["global"] = _merge(glob, "global", ref_ds, "global")
    if not by_method:
        b.notes.append("no LeNet or global runs: Table 4 skipped")
        return
    devices = sorted({str(r.metrics.get("device", "?")) for g in by_method.values() for r in g.runs})
    text, numbers = tables.table4(by_method, ", ".join(devices))
    _put_all(b.summary, "", numbers)
    steps = sorted({int(r.config.get("steps", 0)) for g in by_method.values() for r in g.runs})
    text += (f"\nOurs: LeNet on {ref_ds}, T = {', '.join(map(str, steps))} inner steps, all lr0s and seeds pooled; "
             "wall includes data loading, compilation and test evaluations. The global baseline ran only "
             "the outer steps in `grid.global.outer_steps` (each retrains all T steps with tangents), so "
             "compare ms / inner step, not totals.\n")
    b.table("table4_runtime.md", "## Table 4: runtime", text)


def _fig4_dmd(b: _Build) -> None:
    """Fig. 4: the DMD eigenvalues of one glocal window; the fallback fraction of every glocal window."""
    cands = [r for r in b.runs if r.method == "glocal" and r.dmd is not None and "hypergrads" in r.dmd]
    cands.sort(key=lambda r: (r.family != "lenet", r.dataset != "fashion_mnist", r.lr0, r.seed, str(r.path)))
    for r in cands:
        res = b.attempt("figure dmd_eigenvalues.png", lambda: figures.dmd_figure(r, b.fig_dir / "dmd_eigenvalues.png"))
        if res:
            p, info = res
            how = f"fell back ({info['reason']})" if info["fallback"] else f"summed {info['n_unit']} mode(s) near 1"
            b.figure(p, f"### Fig. 4: DMD eigenvalues of one window\n\n{info['run']}, window {info['window']}: "
                        f"spectral radius {info['spectral_radius']:.3f}; the paper's estimator (`glocal`) {how}.\n\n"
                        "![dmd_eigenvalues.png](figures/dmd_eigenvalues.png)\n")
            _put(b.summary, "dmd_window/spectral_radius", info["spectral_radius"])
            _put(b.summary, "dmd_window/n_unit", info["n_unit"])
            break
    else:
        b.notes.append("no glocal run with stored window hypergradients (dmd.npz): Fig. 4 skipped")
    glocal = [r for r in b.runs if r.method == "glocal"]
    n_fb = sum(r.value("dmd_fallbacks") for r in glocal if math.isfinite(r.value("dmd_fallbacks")))
    n_win = sum(r.value("outer_steps") for r in glocal if math.isfinite(r.value("outer_steps")))
    if n_win:
        _put(b.summary, "glocal/dmd_fallback_fraction", n_fb / n_win)


def _fig5_ablation(b: _Build) -> None:
    """Fig. 5: the σ × m ablation (table and heat map)."""
    abl = b.by_family.get("ablation", [])
    if not abl:
        b.notes.append("no ablation runs: Fig. 5 skipped")
        return
    text, cells = tables.ablation_table(abl)
    g0 = abl[0]
    b.table("ablation.md", f"## Fig. 5: σ × m ablation (glocal, {g0.dataset}, lr0 {g0.lr0:g}); paper best σ = "
            f"{paper.BEST_SIGMA_M[0]}, m = {paper.BEST_SIGMA_M[1]}", text)
    for g in abl:
        _put(b.summary, f"ablation/{g.dataset}/{_lr_tag(g.lr0)}/sigma{g.extra[0]}_m{g.extra[1]}/test_accuracy_mean",
             g.stat("test_accuracy")[0])
    p = b.attempt("figure ablation.png", lambda: figures.ablation_figure(
        cells, f"glocal σ × m ablation: {g0.dataset}, lr0 {g0.lr0:g}", b.fig_dir / "ablation_sigma_m.png"))
    b.figure(p, "### Fig. 5: σ × m ablation\n\n![ablation_sigma_m.png](figures/ablation_sigma_m.png)\n")


def _evidence(b: _Build) -> None:
    """Does glocal beat local? Paired seeds of the estimator variants, a table and a record per setting."""
    ev = b.by_family.get("evidence", [])
    if not ev:
        b.notes.append("no evidence runs: the glocal-vs-local table is skipped")
    for ds, lr0 in sorted({(g.dataset, g.lr0) for g in ev}):
        same = [g for g in ev if g.dataset == ds and g.lr0 == lr0]
        text, numbers = tables.evidence_tables(same)
        steps = sorted({int(r.config.get("steps", 0)) for g in same for r in g.runs})
        fname = "evidence.md" if len({(g.dataset, g.lr0) for g in ev}) == 1 else f"evidence_{ds}_{_lr_tag(lr0)}.md"
        head = (f"LeNet / {ds}, initial lr {lr0:g}, T = {', '.join(map(str, steps))} inner steps; final test accuracy "
                "over paired seeds (each seed: same split, initialization and batches for every variant)\n\n")
        b.table(fname, "## Does glocal beat local?", head + text)
        _put_all(b.summary, f"evidence/{ds}/{_lr_tag(lr0)}", numbers)
        _record(b.out_dir, f"evidence_{ds}_{_lr_tag(lr0)}.json", tables.evidence_record(same, b.command()))


def _baselines_timing(b: _Build) -> Optional[dict]:
    """``baselines/cost.json`` (``scripts/baselines_cost.py``), or None with a note."""
    path = b.runs_dir / "baselines" / "cost.json"
    if not path.is_file():
        b.notes.append("no baselines/cost.json (`dvc repro baselines_cost`): the timed cost column is empty")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        b.notes.append(f"baselines/cost.json unreadable ({e.__class__.__name__}): the timed cost column is empty")
        return None


def _baselines(b: _Build) -> None:
    """What should I use? The baselines family per dataset: its table, record and chart; and (issue 29) the
    optimizers people use tuned by hypergradients, beside each optimizer alone."""
    bl = b.by_family.get("baselines", [])
    if not bl:
        b.notes.append("no baselines runs: the what-should-I-use table is skipped (`dvc repro baselines "
                       "baselines_cost && dvc repro -f report`)")
        return
    timing = _baselines_timing(b)
    one = len({g.dataset for g in bl}) == 1
    for ds in sorted({g.dataset for g in bl}):
        same = [g for g in bl if g.dataset == ds]
        text, numbers = baselines.baselines_table(same, timing)
        cfgs = [r.config for g in same for r in g.runs]
        setting = ", ".join(f"{k} {'/'.join(sorted({str(c.get(k)) for c in cfgs}))}"
                            for k in ("steps", "tau", "sigma", "m", "batch_size", "val_fraction"))
        devices = ", ".join(sorted({str(r.metrics.get("device", "?")) for g in same for r in g.runs}))
        head = (f"LeNet / {ds} ({setting}); final test accuracy over paired seeds (same split, initialization "
                f"and batches for every variant); device {devices}. Cost in inner steps of `none` (so none costs T; "
                "a grid: the sum of its runs): timed round-robin in one process (`scripts/baselines_cost.py`, "
                f"{_timing_note(timing)}), and from each run's own steady windows (hours apart on a shared machine: "
                "it moves with the load).\n\n")
        b.table("baselines.md" if one else f"baselines_{ds}.md", "## What should I use?", head + text)
        _put_all(b.summary, f"baselines/{ds}", numbers)
        _record(b.out_dir, f"baselines_{ds}.json", baselines.baselines_record(same, timing, b.command()))
        plots.write_baselines_chart(b.out_dir / "plots", ds, numbers)
        if not baselines.tuning_pairs(same):
            continue
        t_text, t_numbers = baselines.tuning_table(same, timing)
        t_head = (f"LeNet / {ds} ({setting}); each row: a hypergradient method tuning the named hyperparameters "
                  "of an optimizer, beside that optimizer alone at the same lr0, paired by seed. Cost in inner "
                  "steps of the optimizer alone (so it costs T), from each run's own steady windows.\n\n")
        b.table("optimizer_tuning.md" if one else f"optimizer_tuning_{ds}.md",
                "## Does hypergradient tuning add anything on top of the optimizer?", t_head + t_text)
        _put_all(b.summary, f"optimizer_tuning/{ds}", t_numbers)
        _record(b.out_dir, f"optimizer_tuning_{ds}.json", baselines.tuning_record(same, b.command()))


def _fig9_divergence(b: _Build) -> int:
    """Fig. 9: the runs that diverged (a tuning grid's lr0 too high is not Fig. 9), or the global runs; their number."""
    diverged = [r for r in b.runs if r.status == "diverged" and r.family != "baselines"]
    shown = diverged or [r for r in b.runs if r.family == "global"]
    if not shown:
        b.notes.append("no diverged and no global runs: Fig. 9 skipped")
        return 0
    title = "Fig. 9: runs that diverged" if diverged else "Fig. 9 material: global runs (none diverged at this scale)"
    p = b.attempt("figure divergence.png", lambda: figures.divergence_figure(shown[:8], title, b.fig_dir / "divergence.png"))
    b.figure(p, f"### {title}\n\n![divergence.png](figures/divergence.png)\n")
    if not diverged:
        b.notes.append("no run diverged: Fig. 9 shows the global run(s) instead")
    return len(diverged)


def _plots(b: _Build) -> None:
    """The curves `dvc plots` draws (dvc.yaml's top-level plots): per quantity and setting, over its seeds."""
    if not b.attempt("plots/ (dvc plots data)", lambda: plots.write_curves(list(b.groups.values()), b.out_dir / "plots")):
        b.notes.append("no run with a history: nothing for `dvc plots` under plots/")


def _write_readme(b: _Build) -> None:
    readme = ["# glocal report\n", f"Generated by `{b.command()}` from {len(b.runs)} run(s).\n"]
    readme += b.sections
    readme.append("## Figures\n")
    readme += b.fig_md or ["(no figures: no runs with history)\n"]
    if b.notes:
        readme.append("## Notes\n\n" + "\n".join(f"- {n}" for n in b.notes) + "\n")
    atomic.write_text(b.out_dir / "README.md", "\n".join(readme))


def build_report(runs_dir: str | Path, out_dir: str | Path, log: Callable[[str], None] = lambda s: None) -> Report:
    """Read every run under ``runs_dir`` and write the report to ``out_dir``, section by section."""
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    if not runs_dir.is_dir():
        raise UserError(f"--runs {runs_dir}: no such folder (run `dvc repro report` or `glocal train --out {runs_dir}/...` first)")
    runs, notes = collect_runs(runs_dir)
    b = _Build(runs_dir, out_dir, runs, group_runs(runs), notes, log)
    b.fig_dir.mkdir(parents=True, exist_ok=True)
    b.tab_dir.mkdir(parents=True, exist_ok=True)
    for section in (_trajectories, _table3, _table4, _fig4_dmd, _fig5_ablation, _evidence, _baselines):
        section(b)
    diverged = _fig9_divergence(b)
    _plots(b)
    _put(b.summary, "runs/total", len(runs))
    _put(b.summary, "runs/diverged", diverged)
    atomic.write_json(out_dir / "summary.json", b.summary)
    atomic.write_json(out_dir / "metrics.json", headline(runs))
    _write_readme(b)
    return Report(out_dir, len(runs), b.figs, b.tabs, b.summary, b.notes)
