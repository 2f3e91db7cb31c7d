"""Pipeline stage ``report``: ``python stages/report.py ARGS`` is ``glocal report ARGS`` (:mod:`glocal_cli.commands.report`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
