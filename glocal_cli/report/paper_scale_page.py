"""The paper-scale page (``docs/paper_scale_cpu.md``) and the README's one-line answer, from the record alone.

Every number on the page is read from the record that :mod:`glocal_cli.report.paper_scale`
builds (nothing is typed in by hand): the verdict (:func:`summary_line`), the paired
differences, a row per variant × seed, the summary over seeds, how glocal's windows were
estimated, the figure, test accuracy by step, the settings and command, the commits, and the
earlier one-seed run that the campaign superseded. Conventions: ± over seeds is the sample
standard deviation (ddof 1); a paired difference is its mean ± standard error; with one seed
the page says "one seed, no standard error".
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from glocal_cli.report.tables import EVIDENCE_ORDER
from glocal_cli.report.tables import markdown as md_table

MINUS = "−"


# ------------------------------------------------------------------------------------------ numbers


def signed(x: Optional[float], digits: int = 4) -> str:
    """``+0.0123`` / ``−0.0093`` (a typographic minus), ``–`` for None."""
    return "–" if x is None else f"{x:+.{digits}f}".replace("-", MINUS)


def plain(x: Optional[float], digits: int = 4) -> str:
    """``0.8347``, ``–`` for None."""
    return "–" if x is None else f"{x:.{digits}f}".replace("-", MINUS)


def sig(x: Optional[float], digits: int = 3) -> str:
    """Three significant digits (``0.000377``, ``0.9``), ``–`` for None."""
    return "–" if x is None else f"{x:.{digits}g}".replace("-", MINUS)


def diff_digits(se: Optional[float]) -> int:
    """Decimals for a paired difference: 4, or 5 when its standard error is below 0.0005."""
    return 5 if se is not None and se < 5e-4 else 4


def difference(mean: Optional[float], se: Optional[float]) -> str:
    """A paired difference: ``−0.0093`` (no standard error) or ``−0.0021 ± 0.0019`` (:func:`diff_digits`)."""
    digits = diff_digits(se)
    return signed(mean, digits) if se is None else f"{signed(mean, digits)} ± {se:.{digits}f}"


def steps_text(n) -> str:
    """``20 000`` (a space between thousands), ``–`` for None."""
    return "–" if n is None else f"{int(n):,}".replace(",", " ")


def stat(s: Dict, fmt=plain) -> str:
    """A summary over seeds: ``0.8347 ± 0.0040 (n = 3)``, ``0.8347 (one seed)``, ``–``."""
    if not s or not s.get("n"):
        return "–"
    if s["std"] is None:
        return f"{fmt(s['mean'])} (one seed)"
    return f"{fmt(s['mean'])} ± {fmt(s['std'])} (n = {s['n']})"


def seeds_text(seeds: Sequence[int]) -> str:
    """``0, 1, 2``; ``–`` when empty."""
    return ", ".join(str(s) for s in seeds) or "–"


def short(commit: Optional[str]) -> str:
    return "not recorded" if commit in (None, "None") else str(commit)[:7]


# ---------------------------------------------------------------------------------------- sentences


def pair_of(record: dict, a: str, b: str) -> Optional[dict]:
    return next((p for p in record.get("paired", []) if (p["a"], p["b"]) == (a, b)), None)


def summary_line(record: dict, a: str = "glocal", b: str = "local") -> str:
    """The README's one-line answer from a record: ``"glocal − local = −0.0093 (n = 1)"`` or
    ``"glocal − local = −0.0021 ± 0.0019 (n = 3 paired seeds)"`` (test accuracy, ± the standard error)."""
    pair = pair_of(record, a, b)
    if pair is None or not pair["n"]:
        return f"{a} − {b}: no paired seeds yet"
    if pair["n"] == 1:
        return f"{a} − {b} = {difference(pair['mean'], None)} (n = 1)"
    return f"{a} − {b} = {difference(pair['mean'], pair['se'])} (n = {pair['n']} paired seeds)"


def seeds_label(record: dict) -> str:
    """``3 seeds so far`` when every variant has the same seeds, else which seeds each has finished:
    ``seeds so far: glocal 0, 1, 2; local 1; not yet: none`` (``no seed finished yet`` before any)."""
    variants = record.get("variants", {})
    seeds = {v: sorted(e["seeds"]) for v, e in variants.items()}
    planned = list((record.get("plan") or {}).get("variants", {}))
    seeds.update({v: [] for v in planned if v not in seeds})
    if len({tuple(e["seeds"]) for e in variants.values()}) == 1 and all(seeds.values()):
        n = len(next(iter(seeds.values())))
        return f"{n} seed{'s' if n != 1 else ''} so far"
    have = [f"{v} {', '.join(map(str, ss))}" for v, ss in seeds.items() if ss]
    missing = [v for v, ss in seeds.items() if not ss]
    if not have:
        return "no seed finished yet"
    return "seeds so far: " + "; ".join(have) + (f"; not yet: {', '.join(missing)}" if missing else "")


def verdict(record: dict) -> str:
    """The page's first paragraph: the paired differences that answer the question, in words."""
    lines = []
    for a, b in (("glocal", "local"), ("local", "none")):
        pair = pair_of(record, a, b)
        if pair is None:
            continue
        text = summary_line(record, a, b)
        if pair["n"] == 1:
            text += ", one seed, no standard error"
        lines.append(f"**{text}**")
    if not lines:
        return "No pair of variants has a common seed yet."
    return "; ".join(lines) + " (test accuracy, paired by seed; mean ± standard error of the paired differences)."


def earlier_sentence(record: dict) -> Optional[str]:
    """What became of the one-seed run before the campaign (from ``earlier``), with today's seed 0 beside it."""
    old = record.get("earlier")
    if not old or not old.get("variants"):
        return None
    now = {v: next((r for r in e["runs"] if r["seed"] == 0), None) for v, e in record.get("variants", {}).items()}
    parts = []
    for v, e in old["variants"].items():
        text = f"{v} {plain(e.get('test_accuracy'))} (commit {short(e.get('commit'))})"
        if now.get(v) is not None and now[v]["test_accuracy"] is not None:
            text += f", now {plain(now[v]['test_accuracy'])}"
        parts.append(text)
    pinned = record.get("pinned_commit")
    at = f"at the pinned commit {short(pinned)}" if pinned else "at one commit"
    when = f" of {old['date']}" if old.get("date") else ""
    commits = {str(e.get("commit")) for e in old["variants"].values()}
    why = (f"Its runs were at {len(commits)} commits" + (" (one not recorded)" if "None" in commits else "")
           + " and its record kept no histories" if len(commits) > 1 or "None" in commits
           else "Its record kept no histories")
    return (f"The earlier one-seed run{when} (seed 0; {old.get('source') or 'a superseded record'}): "
            + "; ".join(parts) + f". {why}, so seed 0 is rerun {at} with the other seeds; the earlier values "
            "are not part of the tables above.")


# ------------------------------------------------------------------------------------------- tables


def paired_table(paired: List[dict]) -> str:
    rows = []
    for p in paired:
        per_seed = ", ".join(f"{s}: {signed(d)}" for s, d in zip(p["seeds"], p["differences"])) or "–"
        digits = diff_digits(p["se"])
        se = "one seed, no standard error" if p["n"] == 1 else plain(p["se"], digits)
        rows.append([f"{p['a']} − {p['b']}", str(p["n"]), per_seed, signed(p["mean"], digits), se])
    return md_table(["paired difference (test accuracy)", "n", "per seed (seed: difference)", "mean",
                     "standard error"], rows)


def windows_cell(w: Optional[Dict[str, int]]) -> str:
    if not w:
        return "–"
    return " / ".join(str(w.get(k, 0)) for k in ("tol", "nearest", "fallback")) + f" of {w['total']}"


def seed_table(variants: Dict[str, dict]) -> str:
    rows = []
    for v, e in variants.items():
        for r in e["runs"]:
            f = r["final"]
            rows.append([v, str(r["seed"]), str(r["status"]), plain(r["test_accuracy"]), plain(r["test_loss"]),
                         sig(f["lr"]), sig(f["momentum"]), sig(f["weight_decay"]), windows_cell(r["windows"]),
                         "–" if r["wall_s"] is None else f"{r['wall_s'] / 60:.0f}",
                         short(r["provenance"].get("commit")) + (" (dirty)" if r["provenance"].get("dirty") else "")])
    return md_table(["variant", "seed", "status", "test accuracy", "test loss", "final lr", "final momentum",
                     "final weight decay", "glocal windows: tol / nearest / fallback", "wall (min)", "commit"], rows)


def summary_table(variants: Dict[str, dict]) -> str:
    rows = []
    for v, e in variants.items():
        s = e["summary"]
        rows.append([v, seeds_text(e["seeds"]), stat(s["test_accuracy"]), stat(s["test_loss"]),
                     stat(s["final.lr"], sig), stat(s["final.momentum"], sig), stat(s["final.weight_decay"], sig)])
    return md_table(["variant", "seeds", "test accuracy", "test loss", "final lr", "final momentum",
                     "final weight decay"], rows)


def windows_table(variants: Dict[str, dict]) -> Optional[str]:
    kinds: List[str] = []
    for e in variants.values():
        for r in e["runs"]:
            kinds += [k for k in (r["windows"] or {}) if k not in kinds and k != "total"]
    if not kinds:
        return None
    names = {"tol": "within tol of 1", "nearest": "nearest eigenvalue (none within tol)",
             "fallback": "fallback to local"}
    rows = []
    for v, e in variants.items():
        if e["windows"] is None:
            continue
        for r in e["runs"]:
            w = r["windows"] or {}
            rows.append([v, str(r["seed"])] + [str(w.get(k, 0)) for k in kinds] + [str(w.get("total", 0))])
        w = e["windows"]
        rows.append([v, "all"] + [f"**{w.get(k, 0)}**" for k in kinds] + [f"**{w['total']}**"])
    return md_table(["variant", "seed"] + [names.get(k, k) for k in kinds] + ["windows"], rows)


def by_step_table(by_step: dict, max_rows: int = 10) -> Optional[str]:
    steps = by_step.get("step", [])
    if not steps:
        return None
    every = max(1, -(-len(steps) // max_rows))
    idx = sorted({*range(len(steps) - 1, -1, -every)})
    variants = by_step["variants"]
    rows = [[steps_text(steps[i])] + [plain(variants[v]["mean"][i]) for v in variants] for i in idx]
    return md_table(["inner step"] + [f"{v} (mean)" for v in variants], rows)


def settings_text(s: dict) -> str:
    learn = ", ".join(s.get("learn") or []) or "–"
    return (f"{s.get('dataset')}, {s.get('model')}, task {s.get('task')}: T = {steps_text(s.get('steps'))} inner steps, "
            f"τ = {s.get('tau')}, σ = {s.get('sigma')}, m = {s.get('m')}, batch {s.get('batch_size')}, "
            f"validation fraction {s.get('val_fraction')}, lr0 {s.get('lr0')}, momentum0 {s.get('momentum0')}, "
            f"weight decay0 {s.get('weight_decay0')}; learned: {learn}; outer optimizer {s.get('outer_optimizer')}"
            f" (lr {s.get('outer_lr') if s.get('outer_lr') is not None else 'the task default'}); test accuracy "
            f"every {s.get('eval_every')} windows")


def units_table(units: List[dict]) -> str:
    """The campaign's units; a column of the options a unit replaces when some unit runs another setting."""
    other = any(u.get("set") for u in units)
    rows = []
    for u in units:
        wall = "–" if u["wall_s"] is None else f"{u['wall_s'] / 60:.0f}"
        load = "–" if u["load_mean"] is None else f"{u['load_mean']:.1f} (max {plain(u['load_max'], 1)})"
        setting = [" ".join(f"`{k} {v}`" for k, v in (u.get("set") or {}).items()) or "–"] if other else []
        rows.append([u["name"], u["method"], *setting, seeds_text(u["seeds"]), "done" if u["done"] else "left", wall,
                     load])
    return md_table(["unit", "variant", *(["instead"] if other else []), "seeds", "state", "wall (min)",
                     "load (1-min average)"], rows)


def provenance_text(record: dict) -> str:
    commits = record.get("commits", {})
    lines = [f"- `{c}`: {', '.join(runs)}" for c, runs in commits.items()]
    if record.get("one_commit"):
        head = f"All {sum(len(r) for r in commits.values())} runs ran at one commit"
    else:
        head = f"The runs ran at {len(commits)} commits"
    if record.get("pinned_commit"):
        head += (", the campaign's pinned commit" if record.get("at_pinned_commit")
                 else f"; the campaign pins `{record['pinned_commit']}`")
    versions = ", ".join(f"{k} {v if not isinstance(v, list) else ' / '.join(map(str, v))}"
                         for k, v in record.get("versions", {}).items())
    dirty = record.get("dirty") or []
    text = head + ":\n\n" + "\n".join(lines) + "\n\n" + f"Versions: {versions}."
    text += (" Code with uncommitted changes (dirty): " + ", ".join(dirty) + "." if dirty
             else " No run's code had uncommitted changes.")
    return text


def entry_sections(entry: dict, level: str = "##") -> List[str]:
    out = [f"{level} Paired differences", "", paired_table(entry["paired"]) if entry["paired"]
           else "No two variants share a seed yet.\n",
           f"{level} Every run", "", seed_table(entry["variants"]),
           "Final: the hyperparameters at the end of training. Wall: the minutes of the program that trained the "
           "seed (seeds trained in one program share it). Commit: the code the run recorded (metrics.json).", "",
           f"{level} Over seeds", "", "mean ± sample standard deviation (ddof 1) over seeds.", "",
           summary_table(entry["variants"])]
    w = windows_table(entry["variants"])
    if w:
        out += [f"{level} How glocal's hypergradient was made", "",
                "Windows by how the estimator chose the DMD modes (history.csv: `dmd_selection`, `dmd_fallback`): "
                "the eigenvalues within tol of 1, the eigenvalue nearest to 1 when none was within tol, or a "
                "fallback to the local hypergradient.", "", w]
    return out


def markdown(record: dict, figure: Optional[str] = None) -> str:
    """The page (Markdown) from a record; ``figure``: the figure's file name beside the page, if any."""
    s = record["settings"]
    variants = " / ".join(record["variants"]) or " / ".join((record.get("plan") or {}).get("variants", {})) or "–"
    lines = [f"# Fig. 2's setting at T = {steps_text(s.get('steps'))}: {variants} ({seeds_label(record)})", "",
             f"<!-- generated by `python -m glocal_cli.report.paper_scale` from {record.get('records')}; "
             "do not edit by hand -->", "", verdict(record), ""]
    plan = record.get("plan")
    if plan and plan.get("what"):
        lines += [plan["what"] + ".", ""]
    if plan:
        have = {v: e["seeds"] for v, e in record["variants"].items()}
        lines += ["Seeds in so far: " + "; ".join(
            f"{v} {seeds_text(have.get(v, []))} ({len(have.get(v, []))} of {len(seeds)} planned)"
            for v, seeds in plan["variants"].items()) + ".", ""]
    lines += [f"Convention: {record['convention']}.", ""]
    if record.get("note"):
        lines += [record["note"], ""]
    lines += entry_sections(record)
    if figure:
        fig = record.get("figure") or {}
        lines += ["## Figure", "", f"![Fig. 2 at T = {steps_text(s.get('steps'))}]({figure})", "",
                  f"Learning rate, momentum, weight decay and test accuracy against the inner step, from the "
                  f"committed histories (history.csv, one row a window of τ = {s.get('tau')} steps; test accuracy "
                  f"every {s.get('eval_every')} windows). Line: {fig.get('line', 'mean over seeds')}; band: "
                  f"{fig.get('band', '–')}; the legend gives each variant's number of seeds.", ""]
    t = by_step_table(record.get("test_accuracy_by_step") or {})
    if t:
        lines += ["## Test accuracy by step", "", "Mean over seeds at the steps every variant measured.", "", t]
    lines += ["## Settings and command", "", settings_text(s) + ".", ""]
    if plan and plan.get("command"):
        lines += ["Each unit of the campaign ran", "", f"    {plan['command']}", "",
                  "with `--data-dir` and `--out` of its machine (`scripts/campaign.py`):", "",
                  units_table(plan["units"])]
    lines += ["## Provenance", "", f"Device: {record.get('device')}"
              + (f"; date: {record['date']}" if record.get("date") else "") + ".", "", provenance_text(record), ""]
    earlier = earlier_sentence(record)
    if earlier:
        lines += ["## The earlier one-seed run", "", earlier, ""]
    for other in record.get("other_lr0s", []):
        lines += [f"## lr0 {other['settings'].get('lr0')}", ""] + entry_sections(other, "###")
    if record.get("skipped"):
        lines += ["## Not read", ""] + [f"- {x}" for x in record["skipped"]] + [""]
    lines += ["## Rebuild", "", f"    python -m glocal_cli.report.paper_scale --records {record.get('records')}", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- the README


def _split_words(w: Optional[Dict[str, int]]) -> str:
    """``322 within tol of 1, 78 nearest eigenvalue`` (glocal_cli.windows.describe) of a window split."""
    from glocal_cli.windows import describe

    return describe({k: v for k, v in (w or {}).items() if k != "total"})


def _answer(pair: dict) -> str:
    """yes / no from a paired difference and twice its standard error (one seed: no verdict)."""
    if pair["n"] < 2 or pair["se"] is None:
        return "one seed so far, no verdict"
    if pair["mean"] > 2 * pair["se"]:
        return "yes"
    return "no" if pair["mean"] >= -2 * pair["se"] else "no, it does worse"


def _earlier_words(record: dict) -> str:
    """``the earlier one-seed run (seed 0, superseded): glocal 0.8347, local 0.8440, none 0.8038``, or ''."""
    old = record.get("earlier") or {}
    parts = [f"{v} {plain(e.get('test_accuracy'))}" for v, e in (old.get("variants") or {}).items()]
    return f"the earlier one-seed run (seed 0, superseded): {', '.join(parts)}" if parts else ""


def readme_answer(record: dict) -> str:
    """The README's paper-scale cell of "Does it work?": the campaign's answer so far, from the record."""
    s = record.get("settings", {})
    where = (f"CPU campaign (T = {steps_text(s.get('steps'))}, {s.get('val_fraction', 0) * 100:g} % validation; "
             f"{seeds_label(record)})")
    pair = pair_of(record, "glocal", "local")
    if pair is None or not pair["n"]:
        have = ", ".join(f"{v} {stat(e['summary']['test_accuracy'])}" for v, e in record.get("variants", {}).items())
        earlier = _earlier_words(record)
        return (f"not yet: no paired seeds of glocal and local in the {where}" + (f"; {have}" if have else "")
                + (f"; {earlier}" if earlier else ""))
    text = f"{_answer(pair)}: {summary_line(record, 'glocal', 'local')} in the {where}"
    other = pair_of(record, "local", "none")
    if other is not None and other["n"]:
        text += f"; {summary_line(record, 'local', 'none')}"
    for p in record.get("paired", []):  # a fixed optimizer run beside the paper's variants: minus glocal
        if p["b"] == "glocal" and p["a"] not in EVIDENCE_ORDER and p["n"]:
            text += f"; {summary_line(record, p['a'], 'glocal')}"
    glocal = record.get("variants", {}).get("glocal")
    if glocal and glocal.get("windows"):
        text += f"; glocal's {glocal['windows'].get('total', 0)} windows: {_split_words(glocal['windows'])}"
    return text


def readme_sentence(record: dict) -> str:
    """The README's opening sentence on the paper's scale (after the CPU findings), from the record."""
    pair = pair_of(record, "glocal", "local")
    if pair is None or not pair["n"]:
        earlier = _earlier_words(record)
        return ("At the paper's scale (T = 20 000) the CPU campaign has no paired seeds of glocal and local yet "
                f"({seeds_label(record)}; [docs/paper_scale_cpu.md](docs/paper_scale_cpu.md))"
                + (f"; {earlier}." if earlier else "."))
    agrees = "agrees" if _answer(pair) in ("no", "no, it does worse") else "says otherwise"
    if pair["n"] < 2:
        agrees = "has one paired seed"
    return (f"At the paper's scale (T = 20 000) the CPU campaign ({seeds_label(record)}) {agrees}: "
            f"{summary_line(record, 'glocal', 'local')} ([docs/paper_scale_cpu.md](docs/paper_scale_cpu.md)).")
