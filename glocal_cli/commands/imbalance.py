"""Command ``glocal imbalance``: write a long-tailed split (Cui et al. 2019) of a prepared dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from glocal_cli.atomic import check_output_dir
from glocal_cli.data import get_spec, imbalanced_path, prepare_imbalanced
from glocal_cli.data.imbalance import check_factor
from glocal_cli.data.prepare import write_not_run
from glocal_cli.errors import DataNotAvailable


def run(
    *,
    dataset: str,
    factor: float,
    seed: int = 0,
    data_dir: str | Path = "data/raw",
    out: str | Path = "data/imbalanced",
    n_val: int = 1000,
    missing_ok: bool = False,
    console: Console | None = None,
) -> np.ndarray | None:
    """Write ``<out>/<dataset>_lt<factor>_seed<seed>.npz``; print and return per-class counts.

    ``n_val`` balanced validation examples are taken first (1000 in the paper).
    ``missing_ok``: when the dataset is a "not run" marker (download found no files),
    write a marker in place of the split and return None instead of failing.
    """
    console = console or Console()
    spec = get_spec(dataset)
    check_factor(factor)
    check_output_dir(out, "--out")
    try:
        counts = prepare_imbalanced(spec.name, factor, seed, data_dir, out, n_val=n_val)
    except DataNotAvailable as e:
        if not missing_ok:
            raise
        path = imbalanced_path(spec.name, check_factor(factor), seed, out)
        write_not_run(path, e.reason)
        console.print(f"{e.reason} (recorded in {path})", soft_wrap=True, markup=False)
        return None
    table = Table(title=f"{spec.name} long-tailed, factor {factor:g}, seed {seed}")
    table.add_column("class", justify="right")
    table.add_column("train examples", justify="right")
    for c, k in enumerate(counts):
        table.add_row(str(c), str(int(k)))
    table.add_row("total", str(int(counts.sum())), style="bold")
    console.print(table)
    console.print(f"wrote {imbalanced_path(spec.name, factor, seed, out)}")
    return counts
