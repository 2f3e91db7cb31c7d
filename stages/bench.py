"""Pipeline stage ``bench``: ``python stages/bench.py ARGS`` is ``glocal bench ARGS`` (:mod:`glocal_cli.commands.bench`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
