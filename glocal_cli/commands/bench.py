"""Command ``glocal bench``: the paper's Table 4 (runtime of none / local / glocal / global) on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from rich.console import Console

from glocal_cli import bench
from glocal_cli.errors import UserError
from glocal_cli.settings import parse_list


def run(quick: bool = False, out: Optional[Path] = None, data_dir: Path = Path("data/raw"),
        steps: Optional[int] = None, console: Optional[Console] = None, seed_counts: Optional[str] = None,
        train_windows: Optional[int] = None, variants: Optional[List[str]] = None) -> dict:
    """Run the benchmark, print the table, write JSON to ``out`` (if given); return the results.

    ``seed_counts`` ``"1,5"`` (``"0"``: skip), ``train_windows`` and ``variants``: see
    :class:`glocal_cli.bench.BenchSettings`.
    """
    console = console or Console()
    if not Path(data_dir).exists():
        raise UserError(f"--data-dir {data_dir} does not exist: run `glocal download fashion_mnist` "
                        "or point --data-dir at a folder of the original files")
    kw = {}
    if seed_counts is not None:
        counts = tuple(parse_list(seed_counts, "seed-counts", int)) if seed_counts.strip() else ()
        kw["seed_counts"] = () if counts in ((), (0,)) else counts
    if train_windows is not None:
        kw["train_windows"] = train_windows
    if variants:
        kw["variants"] = tuple(variants)
    settings = bench.bench_settings(quick=quick, steps=steps, data_dir=str(data_dir), **kw)
    with console.status("benchmark") as status:
        res = bench.run_bench(settings, progress=lambda msg: status.update(msg))
    console.print(bench.results_table(res))
    for line in bench.summary_lines(res):
        console.print(line)
    if out is not None:
        bench.write_results(res, out)
        console.print(f"wrote {out}")
    return res
