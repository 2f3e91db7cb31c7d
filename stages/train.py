"""Pipeline stage ``train``: ``python stages/train.py ARGS`` is ``glocal train ARGS`` (:mod:`glocal_cli.commands.train`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
