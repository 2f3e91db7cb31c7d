"""The ``glocal`` commands, one module per pipeline stage.

Each ``run`` takes validated inputs, calls the library (which returns results),
prints with rich and writes the stage's files. ``glocal_cli.cli`` and the
entry points in the repository's ``stages/`` folder call these same functions.
"""
