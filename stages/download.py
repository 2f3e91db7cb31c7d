"""Pipeline stage ``download``: ``python stages/download.py ARGS`` is ``glocal download ARGS`` (:mod:`glocal_cli.commands.download`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
