"""Command ``glocal download``: prepare one dataset as ``<out>/<name>.npz`` + ``<out>/<name>.json``."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from glocal_cli.atomic import check_output_dir
from glocal_cli.data import get_spec, is_prepared, manifest_path, prepare_dataset
from glocal_cli.data.prepare import prepare_or_record


def run(
    *,
    name: str,
    source: str = "tfds",
    out: str | Path = "data/raw",
    verify: bool = True,
    missing_ok: bool = False,
    console: Console | None = None,
) -> Path:
    """Prepare ``name`` from ``source`` ("tfds" or a folder of original files) into ``out``.

    Prints a one-line note when the outputs are already valid, else a summary table.
    Returns the ``.npz`` path. ``missing_ok``: when ``source`` lacks the dataset, write
    "not run" outputs (see :func:`~glocal_cli.data.prepare.prepare_or_record`) instead of failing.
    """
    console = console or Console()
    spec = get_spec(name)
    check_output_dir(out, "--out")
    if is_prepared(spec.name, out):
        console.print(f"[green]{spec.name}[/] already prepared in {out}; nothing to do.")
        return Path(out) / f"{spec.name}.npz"
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def hook(label: str, done: int, total: int) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=total)
            bar.update(tasks[label], completed=done)

        if missing_ok:
            path, reason = prepare_or_record(spec.name, source, out, verify=verify, progress=hook)
        else:
            path, reason = prepare_dataset(spec.name, source, out, verify=verify, progress=hook), None
    if reason is not None:
        console.print(f"{reason} (recorded in {path} and {manifest_path(spec.name, out)})", soft_wrap=True, markup=False)
        return path
    manifest = json.loads(manifest_path(spec.name, out).read_text())
    table = Table(title=f"{spec.name} -> {path}")
    for col in ("split", "examples", "shape", "classes"):
        table.add_column(col)
    for split in ("train", "test"):
        info = manifest["splits"][split]
        table.add_row(split, str(info["count"]), "x".join(map(str, manifest["shape"])), str(manifest["num_classes"]))
    console.print(table)
    checked = "md5 verified" if verify and manifest["files"] else "checksums not verified"
    console.print(f"source: {manifest['source']} ({checked})")
    return path
