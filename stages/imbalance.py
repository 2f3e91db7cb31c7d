"""Pipeline stage ``imbalance``: ``python stages/imbalance.py ARGS`` is ``glocal imbalance ARGS`` (:mod:`glocal_cli.commands.imbalance`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
