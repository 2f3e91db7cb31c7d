"""Command ``glocal bench``: the paper's Table 4 (runtime of none / local / glocal / global) on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console

from glocal_cli import bench
from glocal_cli.errors import UserError


def run(quick: bool = False, out: Optional[Path] = None, data_dir: Path = Path("data/raw"),
        steps: Optional[int] = None, console: Optional[Console] = None) -> dict:
    """Run the benchmark, print the table, write JSON to ``out`` (if given); return the results."""
    console = console or Console()
    if not Path(data_dir).exists():
        raise UserError(f"--data-dir {data_dir} does not exist: run `glocal download fashion_mnist` "
                        "or point --data-dir at a folder of the original files")
    settings = bench.bench_settings(quick=quick, steps=steps, data_dir=str(data_dir))
    with console.status("benchmark") as status:
        res = bench.run_bench(settings, progress=lambda msg: status.update(msg))
    console.print(bench.results_table(res))
    for line in bench.summary_lines(res):
        console.print(line)
    if out is not None:
        bench.write_results(res, out)
        console.print(f"wrote {out}")
    return res
