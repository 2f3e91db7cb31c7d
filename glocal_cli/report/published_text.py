"""Formatting of the published pages' generated blocks: numbers as the pages print them, tables, paragraphs,
and the records a block reads (:mod:`glocal_cli.report.published`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Optional, Sequence

from glocal_cli.report import records
from glocal_cli.windows import KINDS

MINUS = "\u2212"


def num(x: float, digits: int) -> str:
    """``x`` with ``digits`` decimals and a typographic minus; ``–`` when not finite."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:.{digits}f}".replace("-", MINUS)


def signed(x: float, digits: int) -> str:
    """``+0.012`` / ``−0.012``."""
    if x is None or not math.isfinite(x):
        return "–"
    return f"{x:+.{digits}f}".replace("-", MINUS)


def pm(mean: float, err: float, digits: int, sign: bool = False) -> str:
    """``mean ± err`` (``sign``: the mean with its sign, as for a difference)."""
    head = signed(mean, digits) if sign else num(mean, digits)
    return head if err is None or not math.isfinite(err) else f"{head} ± {num(err, digits)}"


def g3(x: float) -> str:
    """Three significant digits (``0.738``, ``1.76``, ``1.8e-07``), as ``glocal verify`` prints."""
    return "nan" if x is None or not math.isfinite(x) else f"{x:.3g}"


def thousands(x: float) -> str:
    """``3 792``: an integer with a space between thousands."""
    return "–" if x is None or not math.isfinite(x) else f"{round(x):,}".replace(",", " ")


def windows(v: dict) -> Dict[str, int]:
    """A variant's windows summed over its seeds by how the estimate was made (empty without a record of it)."""
    split = v.get("dmd_windows") if v else None
    return {k: sum(split[k]) for k in KINDS if sum(split.get(k, [0]))} if split else {}


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: Optional[Sequence[str]] = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def prose(text: str, width: int = 100) -> str:
    """A paragraph refilled to ``width`` columns (breaking at spaces only)."""
    import textwrap

    return textwrap.fill(" ".join(text.split()), width=width, break_long_words=False, break_on_hyphens=False)


def out(cog, text: str) -> None:
    """Write ``text`` as the block's output (one trailing newline)."""
    cog.out(text.rstrip("\n") + "\n")


def load(cog, path: str, kind: Optional[str] = None) -> dict:
    """A record, ``path`` relative to the file cog is processing."""
    return records.load(Path(cog.inFile).parent / path, kind)
