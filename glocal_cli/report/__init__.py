"""``glocal report``: figures and Markdown tables from a folder of run directories.

Public API::

    collect_runs(runs_dir) -> (runs, notes)      read every run directory (collect.py)
    build_report(runs_dir, out_dir) -> Report    figures, tables, summary.json, README.md (build.py)

The paper's numbers that the tables print beside ours are in :mod:`glocal_cli.report.paper`.
"""

from glocal_cli.report.build import Report, build_report
from glocal_cli.report.collect import Group, Run, collect_runs, group_runs

__all__ = ["Group", "Report", "Run", "build_report", "collect_runs", "group_runs"]
