"""Command ``glocal report``: figures, Markdown tables and ``summary.json`` from every run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.table import Table

from glocal_cli.atomic import check_output_dir
from glocal_cli.report import Report, build_report


def run(*, runs: str | Path = "data/runs", out: str | Path = "results", console: Optional[Console] = None) -> Report:
    """Build the report of ``runs`` into ``out``; print what was written and what was skipped."""
    console = console or Console()
    check_output_dir(out, "--out")
    with console.status(f"reading runs in {runs} and drawing figures…"):
        report = build_report(runs, out)
    table = Table(title=f"glocal report: {report.runs} run(s) -> {report.out_dir}")
    table.add_column("output")
    table.add_column("path")
    for p in report.figures:
        table.add_row("figure", str(p))
    for name, p in report.tables.items():
        table.add_row("table", str(p))
    table.add_row("metrics", str(Path(out) / "summary.json"))
    table.add_row("index", str(Path(out) / "README.md"))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note[/]: {note}")
    return report
