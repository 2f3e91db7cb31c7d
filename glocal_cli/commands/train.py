"""Command ``glocal train``: one run (task × dataset × method × seed × initial lr) with a rich progress bar."""

from __future__ import annotations

import math
from pathlib import Path
from typing import List, Optional, Union

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from glocal_cli import atomic
from glocal_cli.atomic import check_output_dir
from glocal_cli.config import TrainConfig
from glocal_cli.errors import DataNotAvailable, UserError
from glocal_cli.train import Progress as Callbacks
from glocal_cli.train import check_data_dir, check_not_locked, parse_seeds, run_seeds, seed_configs, write_not_run


def _fmt(x) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def run(cfg: TrainConfig, console: Optional[Console] = None, stop_after: Optional[int] = None,
        missing_ok: bool = False, seeds: Optional[str] = None,
        seeds_summary: Optional[Path] = None) -> Union[dict, List[dict]]:
    """Train with ``cfg``; print a summary table; return the metrics (a list of them with ``seeds``).

    ``seeds``: ``"0,1,2"``, the seeds trained together in one program, one run
    folder each (:func:`glocal_cli.train.seed_configs`).
    ``seeds_summary``: a JSON file written once every seed has finished (see
    :func:`write_seeds_summary`); the DVC pipeline declares it as the output of
    a setting's stage (DVC cannot declare one output per seed of a list).
    ``missing_ok``: when the dataset is a "not run" marker (``glocal download
    --missing-ok`` found no files), write ``metrics.json`` with status "not run"
    and an empty ``history.csv`` instead of failing (the DVC pipeline uses this).
    """
    console = console or Console()
    cfgs = seed_configs(cfg, None if seeds is None else parse_seeds(seeds))
    for c in cfgs:
        check_output_dir(c.run_dir(), "--out")
    if seeds_summary is not None:
        if Path(seeds_summary).is_dir():
            raise UserError(f"--seeds-summary {seeds_summary}: is a folder; give a file name, e.g. runs/setting-seeds.json")
        check_output_dir(Path(seeds_summary).parent, "--seeds-summary")
    check_data_dir(cfg)
    cfg.resolved_seed_devices()  # a one-line error when --seed-devices exceeds the machine's devices
    for c in cfgs:
        check_not_locked(c.run_dir())
    h = cfg.hpo
    seed_text = f"seed={cfgs[0].seed}" if len(cfgs) == 1 else f"seeds={','.join(str(c.seed) for c in cfgs)}"
    where = cfgs[0].run_dir() if len(cfgs) == 1 else f"{len(cfgs)} folders ({cfgs[0].run_dir()}, ...)"
    console.print(
        f"[bold]glocal train[/] {cfg.dataset} / {cfg.model} / {cfg.task} / method [cyan]{h.method}[/]"
        f"  T={h.steps} τ={h.tau} σ={h.sigma} m={h.m} {seed_text} lr0={cfg.lr0:g}"
    )
    _folder_line(console, f"-> {where}")
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("steps"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
    ) as bar:
        task_id = bar.add_task(h.method, total=None, info="compiling…")

        def start(total, done):
            bar.update(task_id, total=total, completed=done)

        def update(info):
            lr = info.get("lr")
            text = f"window {info['window']}"
            if lr is not None:
                text += f"  lr {lr:.3g}"
            if not math.isnan(info["val_loss"]):
                text += f"  val {info['val_loss']:.4f}"
            bar.update(task_id, info=text)

        try:
            all_metrics = run_seeds(
                cfgs,
                Callbacks(start=start, advance=lambda n: bar.advance(task_id, n), update=update,
                          note=lambda text: bar.console.print(text, markup=False, highlight=False, soft_wrap=True)),
                stop_after=stop_after,
            )
        except DataNotAvailable as e:
            if not missing_ok:
                raise
            all_metrics = [write_not_run(c, e.reason) for c in cfgs]
    if len(cfgs) > 1 and all(m.get("status") not in ("not run", "stopped") for m in all_metrics):
        _seeds_table(console, cfgs, all_metrics)
    else:
        for c, metrics in zip(cfgs, all_metrics):
            _summary(console, c, metrics)
    if seeds_summary is not None and not any(m.get("status") == "stopped" for m in all_metrics):
        write_seeds_summary(seeds_summary, cfgs, all_metrics)
    return all_metrics[0] if seeds is None else all_metrics


def write_seeds_summary(path: Path, cfgs: List[TrainConfig], all_metrics: List[dict]) -> dict:
    """Write ``path``: the seeds of one setting, each with its run folder, status and test accuracy.

    ``{"seeds": [0, 1, 2], "runs": [{"seed": 0, "run_dir": "...", "status": "complete",
    "test_accuracy": 0.81}, ...]}`` (non-finite numbers as null). The per-seed
    ``metrics.json`` stay the results; this file only records that the group finished.
    """
    summary = {
        "seeds": [c.seed for c in cfgs],
        "runs": [{"seed": c.seed, "run_dir": str(c.run_dir()), "status": m.get("status"),
                  "test_accuracy": m.get("test_accuracy")} for c, m in zip(cfgs, all_metrics)],
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, summary)
    return summary


SUMMARY_KEYS = ("status", "test_accuracy", "test_balanced_accuracy", "test_loss", "val_loss", "wall_s", "compile_s",
                "inner_steps", "dmd_fallbacks")


def _seeds_table(console: Console, cfgs: List[TrainConfig], all_metrics: List[dict]) -> None:
    """Several seeds' results as one table, a column per seed (and each failure's reason below)."""
    table = Table(title=f"{len(cfgs)} seeds in one program")
    table.add_column("metric")
    for c in cfgs:
        table.add_column(f"seed {c.seed}", justify="right")
    for key in SUMMARY_KEYS:
        table.add_row(key, *(_fmt(m[key]) for m in all_metrics))
    names = list(dict.fromkeys(k for m in all_metrics for k in m["hyperparams"]))
    for name in names:
        table.add_row(name, *(_fmt(m["hyperparams"].get(name, "")) for m in all_metrics))
    console.print(table)
    for c in cfgs:
        _folder_line(console, f"seed {c.seed}: {c.run_dir()}")
    for c, m in zip(cfgs, all_metrics):
        if m["status"] != "complete":
            console.print(f"[yellow]seed {c.seed} {m['status']}[/]: {m['failure']} (recorded in {c.run_dir() / 'metrics.json'})",
                          soft_wrap=True)


def _folder_line(console: Console, text: str) -> None:
    """A line naming a run folder, never wrapped (a narrow terminal or a pipe must not break a path)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _summary(console: Console, cfg: TrainConfig, metrics: dict) -> None:
    """One seed's result: a table, or the line saying it did not run / stopped / failed."""
    if metrics.get("status") == "not run":
        console.print(f"{metrics['failure']} (recorded in {cfg.run_dir() / 'metrics.json'})", markup=False, soft_wrap=True)
        return
    if metrics.get("status") == "stopped":
        console.print(f"stopped after outer step {metrics['outer_step']}; run again to resume")
        return
    table = Table(title="result")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS:
        table.add_row(key, _fmt(metrics[key]))
    for name, value in metrics["hyperparams"].items():
        table.add_row(name, _fmt(value))
    console.print(table)
    _folder_line(console, f"run folder: {cfg.run_dir()}")
    if metrics["status"] != "complete":
        console.print(f"[yellow]run {metrics['status']}[/]: {metrics['failure']} (recorded in metrics.json)", soft_wrap=True)
