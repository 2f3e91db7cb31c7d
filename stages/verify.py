"""Pipeline stage ``verify``: ``python stages/verify.py ARGS`` is ``glocal verify ARGS`` (:mod:`glocal_cli.commands.verify`)."""

from glocal_cli.cli import run_stage

if __name__ == "__main__":
    run_stage(__file__)
